"""Tokenisation of examples into model features, and batching by padding."""

from __future__ import annotations

from typing import TYPE_CHECKING, AbstractSet, Sequence

from .examples import Example

if TYPE_CHECKING:
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase


def _encode(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int) -> list[dict[str, list[int]]]:
    texts = [e.text for e in examples]
    pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": e.label} for i, e in enumerate(examples)]


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int
) -> list[dict[str, list[int]]]:
    """One unpadded feature dict per example (padding is the collator's job), plus ``labels``."""
    singles = [i for i, e in enumerate(examples) if e.text_b is None]
    pairs = [i for i, e in enumerate(examples) if e.text_b is not None]
    features: list[dict[str, list[int]]] = [{} for _ in examples]
    # One tokenizer call per kind: a batch cannot mix single texts and pairs.
    for indices in (singles, pairs):
        if indices:
            for i, feature in zip(indices, _encode(tokenizer, [examples[i] for i in indices], max_length)):
                features[i] = feature
    return features


def drop_token_ids(feature: dict[str, list[int]], token_ids: AbstractSet[int]) -> dict[str, list[int]]:
    """``feature`` without the positions whose input id is in ``token_ids`` (every per-token list
    shortened alike; other values, such as ``labels``, kept)."""
    ids = feature["input_ids"]
    keep = [i for i, token in enumerate(ids) if token not in token_ids]
    if len(keep) == len(ids):
        return feature
    return {key: [value[i] for i in keep] if isinstance(value, list) and len(value) == len(ids) else value
            for key, value in feature.items()}


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its longest sequence."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
