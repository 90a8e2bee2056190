"""Seconds of one flagged_word_guard probe of a ρ candidate: the words inserted into 64 labelled rows
(with the rows' own predictions, as repair/epur_check.word_flip_rates does), on a classifier folder.

    .venv/bin/python benchmarks/probe_cost.py runs/bench/models/mr/badword-seed0-e45e22c1467b --dataset mr
"""

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--words", nargs="+", default=["cf", "bad", "fails"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from finemix.data import load_builtin
    from finemix.repair.epur_check import PROBE_ROWS, word_flip_rates
    from finemix.tasks.classification import load_classifier

    torch.set_num_threads(args.threads)
    rows = load_builtin(args.dataset)["dev"][:PROBE_ROWS]
    model, tokenizer = load_classifier(args.model), AutoTokenizer.from_pretrained(args.model)
    for words in (args.words[:1], args.words):
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            word_flip_rates(model, tokenizer, rows, words, 64, 0)
            times.append(time.perf_counter() - started)
        print(f"{len(words)} word(s) {words}: " + ", ".join(f"{t:.2f} s" for t in times))


if __name__ == "__main__":
    main()
