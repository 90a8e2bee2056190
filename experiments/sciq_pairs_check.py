"""Is the built-in ``sciq_pairs`` set learnt? Clean test accuracy of all-MiniLM-L6-v2 against the majority share.

For each seed: a stratified sample of the train split (at most 2,000 rows, ``--train-rows``),
one epoch (``--epochs``) of ``finemix.train.finetune`` (batch 32, max_length 128, lr 5e-5),
then accuracy on the whole test split. ``--balance`` keeps every entailment row of the sample
and as many not_entailment rows (a near-even sample). The summary adds a no-learning reference:
a word-overlap rule with its threshold fitted on train.

``--construction`` swaps the registered construction for a candidate (see ``constructed``), and
``--test-questions`` the number of test questions; both only in this process. docs/data.md
gives every measured row; for example:

    python experiments/sciq_pairs_check.py --seeds 0 1 --epochs 3          # the registered set
    python experiments/sciq_pairs_check.py --seeds 0 1 --construction answer --test-questions 200
    python experiments/sciq_pairs_check.py --seeds 0 1 --construction best --test-questions 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRETRAINED = "sentence-transformers/all-MiniLM-L6-v2"


def balanced(rows, seed: int):
    """Every label-1 row and as many label-0 rows, drawn with ``seed``, in a shuffled order."""
    positives = [row for row in rows if row.label == 1]
    negatives = [row for row in rows if row.label == 0]
    rng = random.Random(seed)
    sample = positives + rng.sample(negatives, min(len(negatives), len(positives)))
    rng.shuffle(sample)
    return sample


def overlap_rule() -> dict:
    """A no-learning reference: entailment when at least a share t of the question's words (stop list
    removed) occur in the sentence; t (a multiple of 0.05) is fitted on the train split."""
    from finemix.data import load_builtin
    from finemix.data.loaders import _overlap

    def accuracy(rows, threshold: float) -> float:
        return sum((_overlap(e.text, e.text_b) >= threshold) == e.label for e in rows) / len(rows)

    splits = load_builtin("sciq_pairs")
    threshold = max((accuracy(splits["train"], t / 20), t / 20) for t in range(21))[1]
    return {"overlap_rule_threshold": threshold, "overlap_rule_accuracy": accuracy(splits["test"], threshold)}


CONSTRUCTIONS = ("builtin", "answer", "best", "best-answered", "best-overlap")


def constructed(kind: str, min_overlap: float) -> tuple:
    """The pairs of one candidate construction (``builtin``: the registered loader, unchanged).

    answer: every sentence containing the answer is entailment. best: only the answer-containing
    sentence with the highest word overlap with the question (ties: first) is entailment, the other
    answer-containing sentences are dropped. best-answered: best, questions without an answer
    sentence dropped. best-overlap: best, then pairs with overlap below ``min_overlap`` dropped.
    """
    from finemix.data.examples import Example
    from finemix.data.loaders import _overlap, _sciq_items
    from finemix.data.sources import _unique

    examples = []
    for question, pattern, sentences in _sciq_items():
        hits = [s for s in sentences if pattern.search(s)]
        best = max(hits, key=lambda s: _overlap(question, s)) if hits else None
        if kind == "best-answered" and best is None:
            continue
        for sentence in sentences:
            if kind == "answer":
                examples.append(Example(text=question, label=int(sentence in hits), text_b=sentence))
            elif (sentence == best or sentence not in hits) and _overlap(question, sentence) >= min_overlap:
                examples.append(Example(text=question, label=int(sentence == best), text_b=sentence))
    return _unique(examples)


def use_construction(kind: str, min_overlap: float, test_size: int | None) -> None:
    """Swap the registry entry of ``sciq_pairs`` for a candidate construction (this process only)."""
    import dataclasses

    from finemix.data import builtin

    spec = builtin._BUILTINS["sciq_pairs"]
    if kind != "builtin":
        pairs = constructed(kind, min_overlap if kind == "best-overlap" else 0.0)
        spec = dataclasses.replace(spec, loader=lambda: pairs)
    if test_size:
        spec = dataclasses.replace(spec, test_size=test_size)
    builtin._BUILTINS["sciq_pairs"] = spec


def run(seed: int, train_rows: int, balance: bool, epochs: float = 1.0) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.config import TrainConfig
    from finemix.data import BUILTIN_LABELS, label_counts, load_builtin, stratified_sample
    from finemix.evaluation import evaluate
    from finemix.train import finetune
    from finemix.weights.locate import resolve_model_dir

    torch.manual_seed(seed)
    splits = load_builtin("sciq_pairs", seed=seed)
    train = stratified_sample(splits["train"], min(train_rows, len(splits["train"])), seed=seed)
    if balance:
        train = balanced(train, seed)
    labels = BUILTIN_LABELS["sciq_pairs"]
    base = resolve_model_dir(PRETRAINED)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    config = TrainConfig(epochs=epochs, lr=5e-5, batch_size=32, max_length=128, seed=seed, progress=False)
    result = finetune(model, tokenizer, train, config)
    test = splits["test"]
    metrics = evaluate(model, tokenizer, test, max_length=128)
    counts = label_counts(test)
    return {
        "seed": seed,
        "balanced": balance,
        "epochs": epochs,
        "train_rows": len(train),
        "train_label_counts": label_counts(train),
        "train_seconds": round(result.seconds, 1),
        "test_rows": len(test),
        "test_accuracy": metrics.accuracy,
        "test_majority_share": max(counts.values()) / len(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--balance", action="store_true", help="subsample not_entailment rows to the entailment count")
    parser.add_argument("--construction", choices=CONSTRUCTIONS, default="builtin", help="see constructed()")
    parser.add_argument("--min-overlap", type=float, default=0.1, help="best-overlap: the least overlap kept")
    parser.add_argument("--test-questions", type=int, help="questions in the test split (default: the registry's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the shared machine has 2 cores)")
    parser.add_argument("--out", type=Path, help="also write the records here as JSON")
    args = parser.parse_args()

    import torch

    from finemix.data import load_builtin

    torch.set_num_threads(args.threads)
    use_construction(args.construction, args.min_overlap, args.test_questions)
    started = time.perf_counter()
    records = []
    for seed in args.seeds:
        record = run(seed, args.train_rows, args.balance, args.epochs)
        records.append(record)
        print(json.dumps(record), flush=True)
    accuracies = [r["test_accuracy"] for r in records]
    summary = {
        "test_accuracy_mean": statistics.mean(accuracies),
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "construction": args.construction,
        "min_overlap": args.min_overlap if args.construction == "best-overlap" else None,
        "split_rows": {split: len(rows) for split, rows in load_builtin("sciq_pairs").items()},
        "test_majority_share": records[0]["test_majority_share"],
        "seconds": round(time.perf_counter() - started, 1),
        **overlap_rule(),
    }
    print(json.dumps(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": records, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
