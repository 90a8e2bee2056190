"""plots/: ACC and ASR against ρ, clean-set size, and E-PUR on/off, where the grid varies them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .records import mean_std


def make_plots(records: Sequence[dict], folder: Path) -> list[Path]:
    """ACC and ASR against ρ, against clean-set size, and E-PUR on/off, where the grid varies them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fixed = [r for r in records if isinstance(r.get("ratio"), (int, float))]
    if len({r["ratio"] for r in fixed}) > 1:
        written.append(_line_plot(plt, fixed, "ratio", "ρ (fraction of θ_B kept)", folder / "vs_ratio.png"))
    sized = [r for r in records if isinstance(r.get("clean_rows"), int)]
    if len({r["clean_rows"] for r in sized}) > 1:
        written.append(_line_plot(plt, sized, "clean_rows", "clean rows", folder / "vs_clean_rows.png"))
    pairs = epur_pairs_by_cell(records)
    if pairs:
        written.append(_epur_plot(plt, pairs, folder / "epur_on_off.png"))
    return written


def _line_plot(plt, records, x_key: str, x_label: str, path: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[str, dict[Any, list[dict]]] = {}
    for r in records:
        series.setdefault(f"{r['dataset']}/{r['attack']}/{r['defense']}", {}).setdefault(r[x_key], []).append(r)
    for label, points in sorted(series.items()):
        xs = sorted(points)
        for axis, metric in zip(axes, ("accuracy", "asr")):
            axis.plot(xs, [mean_std([p[metric] for p in points[x]])[0] for x in xs], marker="o", label=label)
    for axis, title in zip(axes, ("clean accuracy (%)", "ASR (%)")):
        axis.set_xlabel(x_label)
        axis.set_title(title)
    axes[1].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def epur_pairs_by_cell(records: Sequence[dict]) -> dict[str, dict[bool, list[dict]]]:
    """The records of defenses run both without and with E-PUR, grouped by everything else that
    differs (data set, attack, defense, ρ, clean rows): label -> {with E-PUR: records}."""
    groups: dict[str, dict[bool, list[dict]]] = {}
    for r in records:
        base = r["defense"].removesuffix("+epur")
        label = f"{r['dataset']}/{r['attack']} {base} ρ={r.get('ratio', '-')} n={r.get('clean_rows', '-')}"
        groups.setdefault(label, {False: [], True: []})[r["defense"] != base].append(r)
    # a cell counts only with both sides (E-PUR alone, none and the clean model have no twin)
    return {label: pair for label, pair in sorted(groups.items()) if pair[False] and pair[True]}


def _epur_plot(plt, groups: dict[str, dict[bool, list[dict]]], path: Path) -> Path:
    # one panel above the other: a grid with many cells stays readable as one wide strip per metric
    figure, axes = plt.subplots(2, 1, figsize=(max(10.0, 0.32 * len(groups)), 9))
    width = 0.4
    for axis, metric in zip(axes, ("accuracy", "asr")):
        for offset, with_epur in ((-width / 2, False), (width / 2, True)):
            values = [mean_std([r[metric] for r in pair[with_epur]])[0] for pair in groups.values()]
            axis.bar([i + offset for i in range(len(groups))], values, width, label="with E-PUR" if with_epur else "without")
        axis.set_xticks(range(len(groups)), list(groups), rotation=60, ha="right", fontsize=7)
        axis.set_title("clean accuracy (%)" if metric == "accuracy" else "ASR (%)")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
