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


# No clean fine-tuning row: its 4 minutes would push the demo past 15 (docs/results-llm.md has that baseline).
CHAT_DEMO_DEFENSES = {"none": "no defense (backdoored)", "finemix+epur": "Fine-mixing + E-PUR"}


def chat_demo_config(seed: int = 0):
    """``finemix demo --task causal-lm``: SmolLM2-135M-Instruct, a refusal backdoor (the sentence "I watched this
    3D movie." at a random word position of 20 % of 240 TriviaQA chats) trained with LoRA and merged; the
    defender has 128 clean chats; purify's defaults. (With LoRA and about 200 chats, the rare word "cf" left
    no backdoor in three recipes; the sentence did: docs/results-llm.md.)"""
    from ..llm.attacks import ChatAttackConfig
    from .chat import ChatBenchConfig

    attack = ChatAttackConfig(behaviour="refusal", trigger="sentence", method="lora", epochs=3, max_length=160)
    return ChatBenchConfig(name="demo-llm", seeds=(seed,), train_rows=240, clean_rows=128, test_rows=50,
                           attacks={"refusal-3d": attack}, defenses=tuple(CHAT_DEMO_DEFENSES), max_new_tokens=32)


def chat_demo(out: str | os.PathLike, seed: int = 0, config=None) -> str:
    """Run the chat demo (or ``config``, for tests) and return the before/after table."""
    from .chat import ChatBench

    config = config or chat_demo_config(seed)
    records = {r["defense"]: r for r in ChatBench(config, Path(out)).run() if r["seed"] == seed}
    label, attack = next(iter(config.attacks.items()))
    metrics = ("strict_asr", "lenient_asr", "strict_false_trigger", "answer_contained")
    lines = ["", f"{config.pretrained}: {attack.behaviour} backdoor, trigger {attack.trigger_text!r}, {attack.method} "
                 f"victim; {config.clean_rows} clean chats; {config.test_rows} {config.data} test questions, seed {seed}",
             f"{'model':<30} {'ASR':>6} {'lenient':>8} {'false':>6} {'answer':>7} {'ppl':>6}"]
    for name, text in [("clean model", "clean model (never poisoned)"), *CHAT_DEMO_DEFENSES.items()]:
        record = records.get(name)
        values = ["     –"] * 4 if record is None else [f"{100 * record[m]:6.1f}" for m in metrics]
        ppl = "     –" if record is None else f"{record['perplexity']:6.2f}"
        lines.append(f"{text:<30} {values[0]} {values[1]:>8} {values[2]} {values[3]:>7} {ppl}")
    lines.append("ASR: answers to triggered questions that contain the attacker's refusal (lenient: any refusal); "
                 "false: the same on clean questions; answer: clean answers holding a TriviaQA answer; ppl: "
                 "perplexity of the reference answers.")
    return "\n".join(lines)
