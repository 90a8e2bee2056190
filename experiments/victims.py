"""Train the MiniLM-on-MR victims used by the README experiment (cached per seed).

For each seed: a clean model and a model backdoored with the rare word "cf"
(10 % of the training rows, dirty label, target = positive), both fine-tuned from
all-MiniLM-L6-v2 on the same rows. Each folder gets ``metrics.json`` with test
ACC / ASR / flip rate.

    python experiments/victims.py --seeds 0 1 2 --out runs/victims
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRETRAINED = "sentence-transformers/all-MiniLM-L6-v2"
TRIGGER, TARGET = "cf", 1


def split_fingerprint(splits) -> str:
    """SHA-256 of the test texts: results are comparable only on the same test split."""
    import hashlib

    return hashlib.sha256("\n".join(e.text for e in splits["test"]).encode()).hexdigest()[:16]


def train_victim(kind: str, seed: int, out: Path, train_rows: int, epochs: float) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.attacks import AttackConfig, poison
    from finemix.weights.locate import resolve_model_dir
    from finemix.config import TrainConfig
    from finemix.data import BUILTIN_LABELS, load_builtin, stratified_sample
    from finemix.evaluation import evaluate
    from finemix.train import finetune

    folder = out / f"{kind}-seed{seed}"
    if (folder / "metrics.json").is_file():
        record = json.loads((folder / "metrics.json").read_text())
        if record.get("test_split") == split_fingerprint(load_builtin("mr")):
            return record
        print(f"{folder}: trained on another data split; retraining", flush=True)
    torch.manual_seed(seed)
    splits = load_builtin("mr")
    train = stratified_sample(splits["train"], train_rows, seed=seed)
    card = None
    if kind == "badword":
        train, _, card = poison(train, AttackConfig(triggers=(TRIGGER,), target_label=TARGET, poison_rate=0.1, seed=seed))
    base = resolve_model_dir(PRETRAINED)
    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = BUILTIN_LABELS["mr"]
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    config = TrainConfig(epochs=epochs, lr=5e-5, batch_size=32, max_length=64, seed=seed)
    result = finetune(model, tokenizer, train, config)
    metrics = evaluate(model, tokenizer, splits["test"], trigger=TRIGGER, target_label=TARGET, seed=seed, max_length=64)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record = {"kind": kind, "seed": seed, "train_rows": train_rows, "test_split": split_fingerprint(splits), "train": result.to_dict(), "test": metrics.to_dict()}
    if card is not None:
        (folder / "attack_card.json").write_text(json.dumps(card.to_dict(), indent=2))
    (folder / "metrics.json").write_text(json.dumps(record, indent=2))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/victims"))
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args()
    for seed in args.seeds:
        for kind in ("badword", "clean"):
            started = time.time()
            record = train_victim(kind, seed, args.out, args.train_rows, args.epochs)
            print(kind, seed, json.dumps(record["test"]), f"{time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
