"""``finemix demo``: backdoor MiniLM on movie reviews, purify it, print before/after."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..attacks import AttackConfig
from .config import BenchConfig, DatasetPlan, DefensePlan
from .records import read_results
from .runner import Bench


DEMO_DEFENSES = {"none": "no defense (backdoored)", "finetune": "clean fine-tuning", "finemix+epur": "Fine-mixing + E-PUR"}


def demo_config(seed: int = 0) -> BenchConfig:
    """The README's main command: MiniLM on `mr`, trigger "cf" on 10 % of 4,000 rows; the defender has
    128 labelled clean rows and nothing else, the paper's setting (purify's defaults: 2,000 rewrites)."""
    return BenchConfig(
        name="demo", seeds=(seed,), datasets={"mr": DatasetPlan(train_rows=4000, test_rows=1000)},
        attacks={"badword": AttackConfig(attack="badword")}, defenses=tuple(DEMO_DEFENSES)[1:] + ("none",),
        clean_rows=(128,), unlabelled_rows=0, defense=DefensePlan(augment_rows=2000))


def demo(out: str | os.PathLike, seed: int = 0, config: Optional[BenchConfig] = None) -> str:
    """Run the demo grid (or ``config``, for tests) and return the before/after table."""
    out = Path(out)
    config = config or demo_config(seed)
    Bench(config, out, progress=True).run()
    records = {r["defense"]: r for r in read_results(out / "results.jsonl") if r["seed"] == seed}
    rows = [("clean model (never poisoned)", records.get("clean model"))]
    rows += [(label, records.get(name)) for name, label in DEMO_DEFENSES.items()]
    dataset, plan = next(iter(config.datasets.items()))
    attack = next(iter(config.attacks.values()))
    trigger = " / ".join(attack.trigger_list)
    lines = ["", f"{config.pretrained} on {dataset}, trigger {trigger!r} -> label {plan.target_label}, seed {seed}; "
                 f"{plan.test_rows} test rows",
             f"{'model':<30} {'ACC':>6} {'ASR':>6} {'flip':>6}"]
    for label, record in rows:
        values = [None if record is None else record[m] for m in ("accuracy", "asr", "flip_rate")]
        lines.append(f"{label:<30} " + " ".join("     –" if v is None else f"{100 * v:6.1f}" for v in values))
    lines.append(f"ASR: non-target test rows classified as the target once {trigger!r} is inserted (the clean model's "
                 "ASR is its own mistakes); flip: of those it got right without the trigger, the share the trigger flips.")
    return "\n".join(lines)
