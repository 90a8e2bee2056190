"""Per-class accuracy of classifiers on a built-in data set's test rows, no trigger inserted.

ASR counts the non-target rows a triggered input sends to the target label, so a model that already
misreads clean non-target rows scores that share as ASR with no backdoor at all. This separates the
two: recall per class and the share predicted as each label, on clean test rows.

    python experiments/per_class.py --data mr --rows 2000 clean=DIR victim=DIR repaired=DIR
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def predictions(folder: str, texts: list[str], max_length: int) -> list[int]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(texts), 128):
            batch = tokenizer(texts[start:start + 128], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            labels += model(**batch).logits.argmax(-1).tolist()
    return labels


def main() -> None:
    from finemix.data import load_builtin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mr")
    parser.add_argument("--rows", type=int, default=2000, help="the first ROWS test rows")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("models", nargs="+", help="NAME=FOLDER")
    args = parser.parse_args()
    test = load_builtin(args.data)["test"][: args.rows]
    gold = [example.label for example in test]
    classes = sorted(set(gold))
    print("| model | " + " | ".join(f"recall {c}" for c in classes) + " | " +
          " | ".join(f"predicted {c}" for c in classes) + " | ACC |")
    print("|---" * (2 * len(classes) + 2) + "|")
    for entry in args.models:
        name, folder = entry.split("=", 1)
        predicted = predictions(folder, [example.text for example in test], args.max_length)
        recall = [sum(p == g == c for p, g in zip(predicted, gold)) / max(1, gold.count(c)) for c in classes]
        shares = [predicted.count(c) / len(predicted) for c in classes]
        accuracy = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
        print(f"| {name} | " + " | ".join(f"{100 * r:.1f}" for r in recall) + " | " +
              " | ".join(f"{100 * s:.1f}" for s in shares) + f" | {100 * accuracy:.1f} |")


if __name__ == "__main__":
    main()
