"""Two arms of a pre-registered decision rule, cell by cell: the issue-16 targets of each and their mean ACC.

    .venv/bin/python experiments/compare_arms.py --default docs/results/labelled-only.jsonl \
        docs/results/labelled-only-guard.jsonl --arm runs/bench/balanced-binary/results.jsonl --datasets mr

Records are the bench's. ``--default`` files are read in order, a later record replacing an earlier one of the
same (data set, attack, seed, defense, clean rows): reruns swapped in; ``FILE@D1,D2`` reads only those data sets
of a file. Without ``--arm`` the layered default's own cells are printed: where each cell stands. ``--arm``
holds the new arm's repairs; its clean models and victims are the default arm's (the same models). Only cells
the arm has run on every seed of the default's are compared. Prints, per clean-set size, each cell's mean
ACC / ASR / flip of both arms, their verdicts against the targets (bench.tables: ASR and flip within 5 points of
the clean model's, ACC within 3 of the victim's, means over seeds) and the ACC change. ``--paper-layout`` prints
the layered records in the bench's paper layout instead (clean model, victim, every defense recorded; one table
per clean-set size).
"""

from __future__ import annotations

import argparse
import json
import statistics

from finemix.bench.tables import MIN_PLANTED_FLIP, markdown_table, meets_targets

DEFENSE = "finemix+epur"


def load(paths, datasets) -> dict:
    records: dict = {}
    for spec in paths:
        path, _, only = spec.partition("@")
        wanted = set(only.split(",")) if only else set(datasets)
        with open(path) as handle:
            for line in handle:
                r = json.loads(line)
                if r["dataset"] in wanted & set(datasets) and r.get("ratio", "auto") in ("auto", "-", None):
                    records[(r["dataset"], r["attack"], r["seed"], r["defense"], r.get("clean_rows"))] = r
    return records


def cell(records: dict, dataset: str, attack: str, rows: int, seeds) -> dict:
    def mean(defense, metric, size=None):
        return 100 * statistics.mean(records[(dataset, attack, s, defense, size)][metric] for s in seeds)

    repaired = {m: mean(DEFENSE, m, rows) for m in ("accuracy", "asr", "flip_rate")}
    deltas = {"d_acc": repaired["accuracy"] - mean("none", "accuracy"),
              "d_asr": repaired["asr"] - mean("clean model", "asr"),
              "d_flip": repaired["flip_rate"] - mean("clean model", "flip_rate")}
    planted = mean("none", "flip_rate") - mean("clean model", "flip_rate") >= MIN_PLANTED_FLIP
    return {**repaired, **deltas, "met": meets_targets(deltas["d_asr"], deltas["d_flip"], deltas["d_acc"]),
            "planted": planted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--default", nargs="+", required=True)
    parser.add_argument("--arm", nargs="+", default=[])
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--paper-layout", action="store_true")
    args = parser.parse_args()
    default = load(args.default, args.datasets)
    if args.paper_layout:
        return paper_layout(default)
    if not args.arm:
        return status(default)
    new = {k: v for k, v in load(args.arm, args.datasets).items() if k[3] == DEFENSE}
    arm = {**default, **new}
    print("| data set / attack | rows | default ACC / ASR / flip | arm ACC / ASR / flip | met: default / arm "
          "| ACC change |")
    print("|---|---|---|---|---|---|")
    for dataset, attack, rows in sorted({(k[0], k[1], k[4]) for k in new}):
        seeds = sorted(k[2] for k in default if k[:2] == (dataset, attack) and k[3] == DEFENSE and k[4] == rows)
        if not seeds or any((dataset, attack, s, DEFENSE, rows) not in new for s in seeds):
            continue
        a, b = cell(default, dataset, attack, rows, seeds), cell(arm, dataset, attack, rows, seeds)
        verdict = {True: "yes", False: "**no**"}
        print(f"| {dataset} / {attack} (n={len(seeds)}) | {rows} | {_metrics(a)} | {_metrics(b)} "
              f"| {verdict[a['met']]} (ASR {a['d_asr']:+.1f}, ACC {a['d_acc']:+.1f}) / {verdict[b['met']]} "
              f"(ASR {b['d_asr']:+.1f}, ACC {b['d_acc']:+.1f}) | {b['accuracy'] - a['accuracy']:+.1f} |")


def status(records: dict) -> None:
    print("| rows | data set / attack | ACC / ASR / flip | Δ ASR / Δ flip vs clean, Δ ACC vs victim | met (means) |")
    print("|---|---|---|---|---|")
    cells = {(k[4], k[0], k[1]) for k in records if k[3] == DEFENSE}
    for rows, dataset, attack in sorted(cells, key=lambda c: (-c[0], c[1:])):
        seeds = sorted(k[2] for k in records if (k[0], k[1], k[3], k[4]) == (dataset, attack, DEFENSE, rows))
        if any((dataset, attack, s, d, None) not in records for s in seeds for d in ("clean model", "none")):
            continue
        c = cell(records, dataset, attack, rows, seeds)
        verdict = "no backdoor" if not c["planted"] else "yes" if c["met"] else "**no**"
        print(f"| {rows} | {dataset} / {attack} (n={len(seeds)}) | {_metrics(c)} "
              f"| {c['d_asr']:+.1f} / {c['d_flip']:+.1f}, {c['d_acc']:+.1f} | {verdict} |")


def paper_layout(records: dict) -> None:
    sizes = sorted({k[4] for k in records if k[4] is not None}, reverse=True)
    print("\n\n".join(f"*{rows} clean rows*\n\n{markdown_table(list(records.values()), clean_rows=rows)}" for rows in sizes))


def _metrics(c: dict) -> str:
    return f"{c['accuracy']:.1f} / {c['asr']:.1f} / {c['flip_rate']:.1f}"


if __name__ == "__main__":
    main()
