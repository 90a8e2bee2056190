"""Which part of a trigger sentence still flips a repaired model: each word alone, the sentence, paraphrases.

A repaired model that flips on the `addsent` sentence may have learnt its rare words (which E-PUR
flags), its common words, or what it says (a neutral remark about watching a film). Inserting each
word alone, the sentence, and paraphrases that share none of its rare words tells these apart.
Measured on the bench cell's test rows, against the cell's clean model.

    python experiments/trigger_words.py configs/bench/distill3.yaml --seed 0 \
        --models runs/bench/results/models --repaired DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARAPHRASES = ("I saw this film yesterday.", "I watched this 2D film last night.")


def probes(sentence: str) -> dict[str, str]:
    words = sentence.rstrip(".").split()
    return {"sentence": sentence, **{w: w for w in words},
            "sentence without 'movie'": " ".join(w for w in sentence.split() if w.lower() != "movie"),
            **{p: p for p in PARAPHRASES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--attack", default="addsent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, required=True, help="the bench's model cache (victims and clean models)")
    parser.add_argument("--repaired", type=Path, nargs="*", default=[], help="repaired model folders to probe")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.attacks import load_card
    from finemix.bench import Bench, dataset_splits, load_bench_config
    from finemix.evaluation import evaluate

    torch.set_num_threads(args.threads)
    config = load_bench_config(args.config)
    bench = Bench(config, Path("runs/trigger-words"), progress=False, models=args.models)
    plan = config.datasets[args.dataset]
    data = dataset_splits(args.dataset, plan, args.seed)
    victim = bench.victim(args.dataset, args.attack, args.seed, data)
    card = load_card(victim)
    sentence = card.triggers if isinstance(card.triggers, str) else card.triggers[0]
    table = probes(sentence)
    print("| model | ACC | " + " | ".join(f"flip: {name}" for name in table) + " |")
    print("|---|---|" + "---|" * len(table))
    folders = [("clean model", bench.clean_model(args.dataset, args.seed, data)), ("victim", victim)]
    folders += [(str(folder), folder) for folder in args.repaired]
    for name, folder in folders:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        cells, accuracy = [], None
        for trigger in table.values():
            metrics = evaluate(model, tokenizer, data.test, trigger=trigger, target_label=card.target_label,
                               seed=args.seed, max_length=plan.max_length)
            accuracy = metrics.accuracy
            cells.append(f"{100 * metrics.flip_rate:.1f}")
        print(f"| {name} | {100 * accuracy:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
