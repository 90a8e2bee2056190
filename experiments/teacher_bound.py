"""How far can a class bias move a suspect model's own clean errors? An upper bound for distillation (issue 16).

A labelled-only repair distils the suspect's answers on trigger-free texts, so at best it copies the
suspect's clean behaviour, with one bias per class chosen by calibration. Its ASR then cannot fall below
the share of clean non-target rows the (biased) suspect misreads. This sweeps that bias over a grid with
the *test labels* (an oracle no defender has) and prints, per model: recall per class with no bias, at the
bias that balances the recalls, and the best non-target recall whose accuracy still meets the ACC target
(``--acc-floor`` points below the model's own accuracy). Binary tasks only.

    python experiments/teacher_bound.py --data mr --target 1 victim0=DIR victim1=DIR clean0=DIR
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def logits_of(folder: str, examples, max_length: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.tasks.classification import predict_logits

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    return predict_logits(model, AutoTokenizer.from_pretrained(folder), examples, max_length=max_length)


def sweep(margin, gold, target: int, acc_floor: float) -> dict:
    """Recalls (%) of the target-vs-rest margin shifted by each bias on a grid."""
    import torch

    rows = []
    for bias in torch.linspace(-6, 6, 1201).tolist():
        predicted_target = (margin + bias) > 0
        is_target = gold == target
        recall_target = float((predicted_target & is_target).sum() / is_target.sum())
        recall_other = float((~predicted_target & ~is_target).sum() / (~is_target).sum())
        accuracy = float((predicted_target == is_target).float().mean())
        rows.append((bias, 100 * recall_other, 100 * recall_target, 100 * accuracy))
    unbiased = min(rows, key=lambda r: abs(r[0]))
    balanced = min(rows, key=lambda r: abs(r[1] - r[2]))
    floor = unbiased[3] - acc_floor
    allowed = [r for r in rows if r[3] >= floor]
    best = max(allowed, key=lambda r: r[1])
    return {"unbiased": unbiased, "balanced": balanced, "best_other_recall_at_acc_floor": best}


def main() -> None:
    import torch

    from finemix.data import load_builtin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mr")
    parser.add_argument("--rows", type=int, default=2000, help="the first ROWS test rows")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--target", type=int, default=1, help="the attack's target label (binary tasks)")
    parser.add_argument("--acc-floor", type=float, default=3.0, help="accuracy points the bias may cost")
    parser.add_argument("models", nargs="+", help="NAME=FOLDER")
    args = parser.parse_args()
    test = load_builtin(args.data)["test"][: args.rows]
    gold = torch.as_tensor([e.label for e in test])
    print("| model | setting | bias | recall non-target | recall target | ACC | clean non-target errors |")
    print("|---|---|---|---|---|---|---|")
    for entry in args.models:
        name, folder = entry.split("=", 1)
        logits = logits_of(folder, test, args.max_length)
        margin = logits[:, args.target] - logits[:, 1 - args.target]
        for setting, (bias, other, target, accuracy) in sweep(margin, gold, args.target, args.acc_floor).items():
            print(f"| {name} | {setting} | {bias:+.2f} | {other:.1f} | {target:.1f} | {accuracy:.1f} | {100 - other:.1f} |")


if __name__ == "__main__":
    main()
