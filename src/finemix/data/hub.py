"""Hugging Face data sets (network): loaded with ``datasets`` and split like the built-ins."""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Optional

from ..errors import FinemixError
from .examples import Example
from .splits import _PARTITION_SEED, _partition

# name → (dataset path, config, text column, second text column or None, labelled evaluation split)
HUB_DATASETS: dict[str, tuple[str, Optional[str], str, Optional[str], str]] = {
    "hf:sst2": ("glue", "sst2", "sentence", None, "validation"),
    "hf:qqp": ("glue", "qqp", "question1", "question2", "validation"),
    "hf:qnli": ("glue", "qnli", "question", "sentence", "validation"),
    "hf:imdb": ("imdb", None, "text", None, "test"),
    "hf:ag_news": ("ag_news", None, "text", None, "test"),
}
HUB_DEV_ROWS = 1000


def load_hub(name: str, seed: int = 0) -> tuple[dict[str, list[Example]], dict[int, str]]:
    """(splits, id → label name) of a Hugging Face data set; needs ``pip install 'finemix[hub]'`` and a
    network. GLUE's test labels are hidden, so its validation split is the test split; dev is
    ``HUB_DEV_ROWS`` stratified rows carved out of train (seed 1234, like the built-ins)."""
    if name not in HUB_DATASETS:
        raise FinemixError(f"unknown hub data set {name!r}; known: {', '.join(HUB_DATASETS)}")
    try:
        import datasets
    except ImportError:
        raise FinemixError(f"{name} needs the datasets library: pip install 'finemix[hub]'") from None
    path, config, text, text_b, test_split = HUB_DATASETS[name]
    loaded = datasets.load_dataset(path, config)
    return hub_splits(loaded["train"], loaded[test_split], text, text_b, seed)


def hub_splits(train_rows, test_rows, text: str, text_b: Optional[str], seed: int = 0):
    """Examples from two ``datasets.Dataset``-like tables (columns by name, ``features['label'].names``)."""
    names = list(train_rows.features["label"].names)

    def examples(table) -> list[Example]:
        pairs = zip(table[text], table[text_b] if text_b else [None] * len(table), table["label"])
        return [Example(a, int(label), b) for a, b, label in pairs if int(label) >= 0]

    train = examples(train_rows)
    dev_fraction = Fraction(min(HUB_DEV_ROWS, len(train) // 5), len(train))
    rest, dev = _partition(train, [1 - dev_fraction, dev_fraction], random.Random(_PARTITION_SEED))
    random.Random(seed).shuffle(rest)
    return {"train": rest, "dev": dev, "test": examples(test_rows)}, dict(enumerate(names))
