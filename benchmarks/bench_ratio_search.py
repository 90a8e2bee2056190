"""Cost of ``--ratio auto`` against a fixed ρ, same data, same run.

    .venv/bin/python benchmarks/bench_ratio_search.py              # 128 clean rows, 500 unlabelled texts
    .venv/bin/python benchmarks/bench_ratio_search.py --small      # 64 clean rows, 100 texts, 1 epoch

``finemix.repair.steps.purify`` with a ``PurifyConfig`` built as ``finemix purify`` builds it (cli._purify):
E-PUR on, random mixing, distillation on the unlabelled texts, output calibration, defaults otherwise.
Suspect model: a MiniLM classifier backdoored with "cf" (10 % dirty label) on ``--victim-rows`` MR training
rows, built once into ``--workdir`` (or ``--backdoored DIR``). Clean rows: MR dev split; unlabelled texts:
MR test split. Each purify is its own child process; the timed region is the ``purify`` call.

Rows:
* ``fixed``       ``--ratio 0.3`` (one fine-tune)  — baseline;
* ``auto``        ``--ratio auto``, default candidates 0, 0.1, 0.2, 0.3: stops at the first acceptable ρ,
                  so its cost depends on the data (the candidates it trained are listed);
* ``auto-all``    no candidate can be accepted: the classification task's acceptance margin monkeypatched
                  to −1 (benchmark-only patch; skip with --no-worst-case). Every candidate is then hopeless, so
                  early stopping ends each after its first epoch: the best case of early stopping.
* ``auto-all-no-stop``  the same with early stopping off: every candidate trains to the end until the search
                  budget (3 candidates' worth of epochs, purify's default) is spent: the worst case.
* ``auto-all-no-stop-unbounded``  (``--unbounded-too``) the same without the budget: all four to the end.
Target: auto ≤ 3 × fixed (the worst case gets a verdict too).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import cli, machine, runner, stats  # noqa: E402
from lib.constants import MB  # noqa: E402
from lib.probe import print_profile, profile_record  # noqa: E402

TARGET = 3.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--small", action="store_true", help="64 clean rows, 100 unlabelled texts, 1 epoch (quick check)")
    parser.add_argument("--clean-rows", type=int, default=None, help="default 128 (64 with --small)")
    parser.add_argument("--unlabelled-rows", type=int, default=None, help="default 500 (100 with --small)")
    parser.add_argument("--epochs", type=float, default=None, help="fine-tuning epochs (default 2 when distilling, finemix's default when the committed results were measured; it is 3 now; 1 with --small)")
    parser.add_argument("--backdoored", type=Path, default=None, help="suspect model folder (default: build one in --workdir)")
    parser.add_argument("--victim-rows", type=int, default=1000, help="training rows of the built suspect model")
    parser.add_argument("--no-worst-case", action="store_true", help="skip the forced all-candidates run")
    parser.add_argument("--unbounded-too", action="store_true",
                        help="also the forced worst case with the search budget off (every candidate to the end)")
    parser.add_argument("--worst-case-repeats", type=int, default=1,
                        help="runs of the forced all-candidates case (default 1: it costs 4 fine-tunes)")
    parser.add_argument("--timeout", type=float, default=3600)
    return parser.parse_args()


def run_methods(args, base: dict, methods: dict, out: Path) -> dict:
    """Every method, round-robin over the repeats (the forced cases --worst-case-repeats times)."""
    runs = {m: [] for m in methods}
    for repeat in range(max(args.repeats, args.worst_case_repeats if "auto-all" in methods else 0)):
        for name, extra in methods.items():
            if repeat >= (args.worst_case_repeats if name.startswith("auto-all") else args.repeats):
                continue
            result = runner.run_job("lib.purify_jobs", "job_purify", {**base, **extra}, clean=[out], timeout=args.timeout, label=name)
            runs[name].append(result)
            e = result["extra"]
            print(f"  [#{repeat + 1}] {name:9s} {result['wall_s']:8.2f} s  candidates trained {e['candidates_trained']}  "
                  f"chosen ρ {e['chosen_ratio']}  stages {e['timings_s']}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return runs


def summarise(runs: dict) -> tuple[dict, list]:
    """Per method: medians, minima, ratios to the fixed ρ, verdicts and what the search did; and the table rows."""
    fixed = stats.median([r["wall_s"] for r in runs["fixed"]])
    fixed_min = min(r["wall_s"] for r in runs["fixed"])
    rows, summary = [], {}
    for name, rs in runs.items():
        wall = stats.median([r["wall_s"] for r in rs])
        last = rs[-1]["extra"]
        low = min(r["wall_s"] for r in rs)
        row = {"median_wall_s": wall, "ratio_vs_fixed": wall / fixed, "wall_s_runs": [r["wall_s"] for r in rs],
               "runs": len(rs), "min_wall_s": low, "min_ratio_vs_fixed": low / fixed_min,
               "candidates_trained": [r["extra"]["candidates_trained"] for r in rs],
               "chosen_ratio": [r["extra"]["chosen_ratio"] for r in rs],
               "candidate_train_seconds": [r["extra"]["candidate_train_seconds"] for r in rs],
               "stage_timings_s": [r["extra"]["timings_s"] for r in rs],
               "reference_heldout_accuracy": last["reference_heldout_accuracy"], "heldout_accuracy": last["heldout_accuracy"],
               "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs)}
        if name != "fixed":
            row["verdict"] = stats.verdict(row["ratio_vs_fixed"], TARGET, higher_is_better=False)
            row["verdict_min"] = stats.verdict(row["min_ratio_vs_fixed"], TARGET, higher_is_better=False)
        summary[name] = row
        search = stats.median([r["extra"]["timings_s"].get("ratio+finetune", float("nan")) for r in rs])
        other = stats.median([r["wall_s"] - r["extra"]["timings_s"].get("ratio+finetune", float("nan")) for r in rs])
        rows.append([name, len(rs), wall, f"{row['ratio_vs_fixed']:.2f}x", row.get("verdict", "-"), low,
                     f"{row['min_ratio_vs_fixed']:.2f}x", row.get("verdict_min", "-"), len(last["candidates_trained"]),
                     last["chosen_ratio"], search, other, row["peak_rss_bytes"] / MB])
    return summary, rows


def main() -> None:
    args = parse_args()
    clean_rows = args.clean_rows or (64 if args.small else 128)
    unlabelled_rows = args.unlabelled_rows if args.unlabelled_rows is not None else (100 if args.small else 500)
    epochs = args.epochs or (1.0 if args.small else None)

    payload = {"machine": machine.machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
               "targets": {"auto_vs_fixed_max": TARGET},
               "notes": ["auto stops at the first acceptable candidate, so its cost is data-dependent; 'auto-all' "
                         "accepts none (monkeypatched ClassificationTask.acceptance_margin = -1)",
                         "timed region = the purify() call: loading, E-PUR, teacher, ρ search + fine-tuning, calibration, write"]}
    if args.backdoored is None:
        built = runner.run_job("lib.purify_jobs", "job_build_victim", {"workdir": str(args.workdir), "rows": args.victim_rows,
                                                                       "threads": args.threads}, label="build victim")
        backdoored = Path(built["extra"]["victim"])
    else:
        backdoored = args.backdoored
    print(f"machine: {payload['machine']['cpu_model']}, {payload['machine']['cpu_count']} cores; suspect model {backdoored}; "
          f"{clean_rows} clean rows, {unlabelled_rows} unlabelled texts, epochs {epochs or 'finemix default'}")
    out = Path(args.workdir) / "out-purify"
    base = {"backdoored": str(backdoored), "output": str(out), "clean_rows": clean_rows, "unlabelled_rows": unlabelled_rows,
            "epochs": epochs, "threads": args.threads}
    methods = {"fixed": {"ratio": 0.3}, "auto": {"ratio": "auto"}}
    if not args.no_worst_case:
        methods["auto-all"] = {"ratio": "auto", "force_all_candidates": True}
        methods["auto-all-no-stop"] = {"ratio": "auto", "force_all_candidates": True, "stop_hopeless": False}
        if args.unbounded_too:
            methods["auto-all-no-stop-unbounded"] = {"ratio": "auto", "force_all_candidates": True,
                                                     "stop_hopeless": False, "budget": None}
    runs = run_methods(args, base, methods, out)

    summary, rows = summarise(runs)
    payload["results"] = summary
    payload["raw_runs"] = runs
    print(f"\npurify, {clean_rows} clean rows + {unlabelled_rows} unlabelled texts; verdict on medians, min shown because "
          "the machine is shared (contention only ever adds time)")
    print(stats.table(["method", "runs", "median s", "vs fixed", f"≤{TARGET}x", "min s", "min/min fixed", f"≤{TARGET}x", "candidates", "chosen ρ", "ρ search+ft s (median)",
                       "other stages s (median)", "peak RSS MiB"], rows))
    if args.profile:
        result = runner.run_job("lib.purify_jobs", "job_purify", {**base, **methods["auto"], "profile": True}, clean=[out],
                                timeout=args.timeout, label="auto (profiled)")
        shutil.rmtree(out, ignore_errors=True)
        payload["profile_auto"] = profile_record(result)
        print_profile("purify --ratio auto", result)
    path = machine.write_results(args.results_name or "bench_ratio_search", payload)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
