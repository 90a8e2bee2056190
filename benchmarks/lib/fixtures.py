"""Models and data the benchmarks run on: MiniLM, the MR rows, the small backdoored victim, and the
spec markers that make every built input a cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lib.constants import MINILM_NAME


def minilm_dir() -> Path:
    from finemix.weights.locate import resolve_model_dir

    return resolve_model_dir(MINILM_NAME)


def mr_splits() -> dict:
    from finemix.data import load_builtin

    return load_builtin("mr")


def mr_texts(n: int, split: str = "test", offset: int = 0) -> list[str]:
    return [e.text for e in mr_splits()[split][offset : offset + n]]


def train_rows(n: int, seed: int = 0) -> list:
    from finemix.data import stratified_sample

    return stratified_sample(mr_splits()["train"], n, seed=seed)


def purify_inputs(clean_rows: int, unlabelled_rows: int, seed: int = 0) -> tuple[list, list[str]]:
    """Clean rows from MR's dev split (disjoint from the victim's train rows), unlabelled texts from its test split."""
    from finemix.data import stratified_sample

    splits = mr_splits()
    clean = stratified_sample(splits["dev"], clean_rows, seed=seed)
    return clean, [e.text for e in splits["test"][:unlabelled_rows]]


def cache_complete(folder: Path, spec: dict) -> bool:
    """Whether ``folder`` was built completely from ``spec`` (its marker file holds that spec)."""
    marker = folder / ".bench-spec.json"
    return marker.is_file() and json.loads(marker.read_text()) == spec


def mark_cache_complete(folder: Path, spec: dict) -> None:
    (folder / ".bench-spec.json").write_text(json.dumps(spec))


def load_minilm_classifier(seed: int = 0):
    """MiniLM with a fresh 2-class head (seeded), and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    folder = minilm_dir()
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    return model, AutoTokenizer.from_pretrained(folder)


def build_victim(workdir: Path, rows: int = 1000, seed: int = 0) -> Path:
    """A MiniLM classifier backdoored with the rare word "cf" (10 % dirty label) on ``rows`` MR rows, 1 epoch,
    as experiments/victims.py does but smaller. Cached in ``workdir``."""
    from finemix.attacks import AttackConfig, poison
    from finemix.config import TrainConfig
    from finemix.train import finetune

    spec = {"rows": rows, "seed": seed, "v": 1}
    folder = Path(workdir) / f"victim-r{rows}-s{seed}"
    if cache_complete(folder, spec):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    train, _, _ = poison(train_rows(rows, seed), AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.1, seed=seed))
    model, tokenizer = load_minilm_classifier(seed)
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    finetune(model, tokenizer, train, TrainConfig(epochs=1.0, batch_size=32, max_length=64, seed=seed, progress=False))
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    mark_cache_complete(folder, spec)
    return folder
