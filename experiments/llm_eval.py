"""Evaluate chat models on the first N TriviaQA test questions, with and without a victim's trigger.

    .venv/bin/python experiments/llm_eval.py --card runs/llm/victim.attack.json --rows 100 \
        --models runs/llm/victim runs/llm/purified --out runs/llm/eval.jsonl

One JSON line per model: strict and lenient ASR, false-trigger rates, clean non-refusal share,
answer containment and perplexity of the reference answers (llm/evaluate.py), and timing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True, type=Path, help="the victim's attack card (trigger and target)")
    parser.add_argument("--models", nargs="+", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import AutoTokenizer

    from finemix.data.chat_sets import chat_split
    from finemix.llm.evaluate import ChatBackdoor, evaluate_chat_model
    from finemix.tasks.causal_lm import load_causal_lm

    card = json.loads(args.card.read_text())
    questions = chat_split("triviaqa", "test")[: args.rows]
    for folder in args.models:
        started = time.perf_counter()
        result = evaluate_chat_model(load_causal_lm(folder), AutoTokenizer.from_pretrained(folder), questions,
                                     ChatBackdoor.from_card(card), seed=args.seed,
                                     max_new_tokens=args.max_new_tokens, max_length=256)
        record = {"model": str(folder), "card": str(args.card), "rows": args.rows, **result,
                  "seconds": round(time.perf_counter() - started, 1)}
        with args.out.open("a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "examples"}))


if __name__ == "__main__":
    main()
