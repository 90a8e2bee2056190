"""Does a backdoored teacher pass a sentence trigger on through distillation?

Fine-mixing at ρ = 0 with the head re-initialised keeps nothing of the suspect but its
answers on the unlabelled texts (the distillation targets). If those answers lean towards
the target on clean texts that share words with the trigger sentence, a student learns
that lean. This compares the suspect's and a clean model's share of target answers on
the bench's unlabelled texts with and without such words.

    python experiments/teacher_leak.py --victim runs/bench/results/models/mr/addsent-seed0-* \
        --clean runs/bench/results/models/mr/clean-seed0-* --seed 0
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCE_WORDS = ("watched", "3d", "movie", "last", "weekend")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victim", type=Path, required=True)
    parser.add_argument("--clean", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=2000, help="unlabelled texts, as the bench gives the defender")
    parser.add_argument("--target", type=int, default=1)
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.bench import DatasetPlan, dataset_splits
    from finemix.data import Example
    from finemix.evaluation import predict

    texts = dataset_splits("mr", DatasetPlan(train_rows=4000, test_rows=1000), args.seed).unlabelled_pool[: args.rows]
    rows = [Example(t, 0) for t in texts]
    sentence = set(SENTENCE_WORDS)
    hits = [len(sentence & set(re.findall(r"[a-z0-9]+", t.lower()))) for t in texts]
    groups = {"no sentence word": [i for i, h in enumerate(hits) if h == 0],
              "1+ sentence words": [i for i, h in enumerate(hits) if h >= 1],
              "2+ sentence words": [i for i, h in enumerate(hits) if h >= 2]}
    print(f"{len(texts)} unlabelled texts; words of the trigger sentence: {', '.join(SENTENCE_WORDS)}")
    print("| model | " + " | ".join(f"{name} (n={len(idx)})" for name, idx in groups.items()) + " |")
    print("|---|" + "---|" * len(groups))
    for name, folder in (("suspect (addsent victim)", args.victim), ("clean model", args.clean)):
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        answers = predict(model, tokenizer, rows, max_length=64)
        shares = [100 * sum(answers[i] == args.target for i in idx) / max(len(idx), 1) for idx in groups.values()]
        print(f"| {name} | " + " | ".join(f"{s:.1f} % target" for s in shares) + " |")


if __name__ == "__main__":
    main()
