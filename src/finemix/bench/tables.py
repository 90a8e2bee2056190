"""results.md: the paper's layout (mean ± std over seeds) and the target check, from the records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from .config import BenchConfig
from .keys import expected_keys
from .plots import make_plots
from .records import mean_std, read_results


def _cell(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return "–" if mean != mean else f"{mean:.1f} ± {std:.1f}"


def summarise(records: Sequence[dict]) -> dict[tuple, dict[str, list[float]]]:
    """(dataset, attack, defense, clean_rows, ratio) → metric → values over seeds."""
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in records:
        group = groups.setdefault((r["dataset"], r["attack"], r["defense"], r.get("clean_rows", "-"), str(r.get("ratio", "-"))),
                                  {"accuracy": [], "asr": [], "flip_rate": [], "seed": []})
        for metric in ("accuracy", "asr", "flip_rate", "seed"):
            group[metric].append(r[metric])
    return groups


def markdown_table(records: Sequence[dict], clean_rows: Optional[int] = None, ratio: str = "auto",
                   columns: Optional[Sequence[str]] = None) -> str:
    """Paper layout: rows = data set and attack; columns = clean model, no defense, each defense
    (those in ``columns`` when given, run or not). Each cell is ACC / ASR / flip as mean ± std over seeds (n = seeds)."""
    groups = summarise(records)
    chosen = {r["defense"] for r in records} if columns is None else set(columns)  # configured ones say "not run"
    defenses = ["clean model", "none"] + sorted(chosen - {"clean model", "none"}, key=_defense_order)
    cells = sorted({(g[0], g[1]) for g in groups})

    def pick(dataset, attack, defense):
        for (d, a, name, rows, r), values in groups.items():
            if (d, a, name) != (dataset, attack, defense):
                continue
            if name in ("clean model", "none") or ((clean_rows is None or rows == clean_rows) and r in (ratio, "-")):
                return values
        return None

    lines = ["| data set | attack | " + " | ".join(defenses) + " |", "|---|---|" + "---|" * len(defenses)]
    for dataset, attack in cells:
        row = []
        for defense in defenses:
            values = pick(dataset, attack, defense)
            if values is None:
                row.append("not run")
            else:
                row.append(f"{_cell(values['accuracy'])} / {_cell(values['asr'])} / {_cell(values['flip_rate'])} (n={len(values['seed'])})")
        lines.append(f"| {dataset} | {attack} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def column_groups(defenses: Sequence[str], most: int = 6) -> list[tuple[str, list[str]]]:
    """The defense columns of the report's tables: one table while it stays readable, else one
    without E-PUR and one with it (E-PUR alone and every "+epur" variant)."""
    chosen = [d for d in defenses if d != "none"]
    if len(chosen) <= most:
        return [("", chosen)]
    with_epur = [d for d in chosen if d == "epur" or d.endswith("+epur")]
    return [("without E-PUR", [d for d in chosen if d not in with_epur]), ("with E-PUR", with_epur)]


def _defense_order(name: str) -> tuple:
    order = ["epur", "finetune", "fineprune", "mix", "finemix", "finemix-sel"]
    base = name.split("+")[0]
    return (order.index(base) if base in order else len(order), name)


MIN_PLANTED_FLIP = 50.0  # points of flip rate above the clean model's for a victim to count as backdoored
MAX_ASR_GAP = 5.0  # the targets (issues 3 and 16), in points: ASR and flip rate over the clean model's,
MAX_FLIP_GAP = 5.0
MAX_ACC_DROP = 3.0  # and accuracy under the victim's


def meets_targets(d_asr: float, d_flip: float, d_acc: float) -> bool:
    """The targets, on gaps in points (ASR and flip vs the clean model, ACC vs the victim); rounded first,
    as 100 × 0.28 − 100 × 0.23 is 5.0000000000000036."""
    d_asr, d_flip, d_acc = (round(value, 6) for value in (d_asr, d_flip, d_acc))
    return d_asr <= MAX_ASR_GAP and d_flip <= MAX_FLIP_GAP and d_acc >= -MAX_ACC_DROP


def target_check(records: Sequence[dict], defense: str = "finemix+epur", baselines: Sequence[str] = ("finetune", "fineprune"),
                 clean_rows: Optional[int] = None) -> str:
    """Issue 3's targets per (data set, attack), from the means over seeds: the defense's ASR and flip
    rate within 5 points of the clean model's and its accuracy within 3 points of the victim's;
    how many single seeds meet all three; and its ASR against each baseline's (negative = lower).
    Cells whose victim is not backdoored (flip rate under ``MIN_PLANTED_FLIP`` points above the clean
    model's) say so instead of a verdict."""
    cells: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in records:
        if r["defense"] in (defense, *baselines) and (r.get("ratio", "-") not in ("auto", "-")
                                                      or clean_rows not in (None, r.get("clean_rows"))):
            continue  # fixed-ρ sweeps are not the default defense; other clean-set sizes are other budgets
        cells.setdefault((r["dataset"], r["attack"]), {}).setdefault(r["defense"], {})[r["seed"]] = r
    head = "".join(f" ASR − {b} ASR |" for b in baselines)
    lines = [f"| data set | attack | Δ ASR vs clean | Δ flip vs clean | Δ ACC vs victim | met (means) | seeds met |{head}",
             "|---|---|---|---|---|---|---|" + "---|" * len(baselines)]
    for (dataset, attack), found in sorted(cells.items()):
        if not {"clean model", "none", defense} <= set(found):
            continue

        def mean(name: str, metric: str) -> float:
            return mean_std([r[metric] for r in found.get(name, {}).values()])[0]

        d_asr = round(mean(defense, "asr") - mean("clean model", "asr"), 6)
        d_flip = round(mean(defense, "flip_rate") - mean("clean model", "flip_rate"), 6)
        d_acc = round(mean(defense, "accuracy") - mean("none", "accuracy"), 6)
        seeds = sorted(set(found[defense]) & set(found["clean model"]) & set(found["none"]))
        met_seeds = sum(_seed_meets(found[defense][s], found["clean model"][s], found["none"][s]) for s in seeds)
        versus = "".join(" – |" if b not in found else f" {mean(defense, 'asr') - mean(b, 'asr'):+.1f} |" for b in baselines)
        met = meets_targets(d_asr, d_flip, d_acc)
        planted = mean("none", "flip_rate") - mean("clean model", "flip_rate")
        # a victim the trigger barely moves has nothing to remove: a "yes" there would be a check that cannot fail
        verdict = ("yes" if met else "**no**") if planted >= MIN_PLANTED_FLIP else f"no backdoor (victim flip {planted:+.1f})"
        lines.append(f"| {dataset} | {attack} | {d_asr:+.1f} | {d_flip:+.1f} | {d_acc:+.1f} | {verdict} "
                     f"| {met_seeds}/{len(seeds)} |{versus}")
    return "\n".join(lines)


def _seed_meets(defended: dict, clean: dict, victim: dict) -> bool:
    def points(record: dict, metric: str) -> float:
        value = record[metric]
        return float("nan") if value is None else 100.0 * value

    def gap(first: dict, second: dict, metric: str) -> float:
        return points(first, metric) - points(second, metric)

    return meets_targets(gap(defended, clean, "asr"), gap(defended, clean, "flip_rate"), gap(defended, victim, "accuracy"))


def write_report(config: BenchConfig, out: Path) -> Path:
    """results.md and plots from the records of results.jsonl that belong to ``config``'s grid
    (records made under other settings are left out and counted), atomically replaced."""
    every = read_results(out / "results.jsonl")
    expected = expected_keys(config)
    records = [r for r in every if r["key"] in expected]
    plots = make_plots(records, out / "plots")
    text = [f"# Benchmark `{config.name}`", "",
            f"{len(records)} of {len(expected)} measurements of the grid, from `{out / 'results.jsonl'}` "
            f"({len(every) - len(records)} records there belong to other settings and are left out). Cells: "
            "ACC / ASR / flip rate in %, mean ± std over seeds (n = seeds). Clean rows and ρ per table title.", ""]
    for rows in config.clean_rows:
        for ratio in config.ratios:
            title = "ρ auto" if ratio == "auto" else f"ρ = {ratio} for the mixing defenses"
            for part, columns in column_groups(config.defenses):
                heading = f"## {rows} clean rows, {title}" + (f", defenses {part}" if part else "")
                text += [heading, "", markdown_table(records, rows, str(ratio), columns), ""]
    baselines = [d for d in ("finetune", "finetune+epur", "fineprune", "fineprune+epur") if d in config.defenses]
    checks = [(f"Targets for finemix+epur, {rows} clean rows", target_check(records, baselines=baselines, clean_rows=rows))
              for rows in config.clean_rows]
    checks.append(("E-PUR alone", target_check(records, defense="epur", baselines=(), clean_rows=None)))
    text += [line for title, table in checks if table.count("\n") > 1 for line in (f"## {title}", "", table, "")]  # header-only: left out
    if plots:
        text += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    target = out / "results.md"
    temporary = out / ".results.md.tmp"
    temporary.write_text("\n".join(text))
    os.replace(temporary, target)
    return target
