"""Texts a defender can make from its labelled rows alone, for the suspect model to label.

Distilling the suspect's predictions needs inputs with no trigger; clean in-domain text is
best, but most defenders hold only their labelled rows. Crude rewrites of those rows stay
in-domain and trigger-free (they are made of clean words only): word dropout, a random
contiguous crop, and a splice of the start of one row with the end of another. For
sentence pairs the second segment is rewritten and spliced, the first kept. The suspect model
labels the returned rows; each carries the label of the row it came from (of a splice: the row that
gave it more words), which the product does not use (research variants may: experiments/variants.py).
Also here: one word inserted at a random boundary (``with_word``), with which purify tests E-PUR's
flagged words as triggers (repair/epur_check.py) and the evaluator inserts a known trigger.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from .examples import Example

DROPOUT = 0.2  # share of words dropped
MIN_CROP = 0.5  # a crop keeps at least half of the words


def augment_rows(rows: Sequence[Example], count: int, seed: int, max_words: int = 512) -> list[Example]:
    """Up to ``count`` distinct rewrites of ``rows`` (none equal to a row itself); deterministic for ``seed``.

    Each rewrite starts from at most ``max_words`` words of its row: the model reads only the first
    ``max_length`` tokens anyway, and 2,000 rewrites of a 400 kB row would fill the memory."""
    rng = random.Random(seed)
    originals = {(e.text, e.text_b) for e in rows}
    made: dict[tuple, Example] = {}
    attempts = 0
    while rows and len(made) < count and attempts < 20 * count:
        attempts += 1
        row = rows[rng.randrange(len(rows))]
        operation = rng.randrange(3)
        if operation == 0:
            text = _dropout(segment_words(row, max_words), rng)
        elif operation == 1:
            text = _crop(segment_words(row, max_words), rng)
        else:
            other = rows[rng.randrange(len(rows))]
            text, first_words = _splice(segment_words(row, max_words), segment_words(other, max_words), rng)
            row = row if 2 * first_words >= len(text.split()) else other
        new = Example(row.text, row.label, text) if row.text_b is not None else Example(text, row.label)
        key = (new.text, new.text_b)
        if text.strip() and key not in originals:
            made.setdefault(key, new)
    return list(made.values())


def insert_words(text: str, inserted: Sequence[str], rng: random.Random) -> str:
    """``inserted`` words, together, at a uniformly random word boundary of ``text`` (0..len(words))."""
    words = text.split()
    position = rng.randint(0, len(words))
    return " ".join(words[:position] + list(inserted) + words[position:])


def with_word(rows: Sequence[Example], word: str, seed: int, segment: str = "text") -> list[Example]:
    """Copies of ``rows`` with ``word`` inserted once into ``segment`` ("text" or "text_b"); seeded."""
    rng = random.Random(seed)
    return [dataclasses.replace(row, **{segment: insert_words(getattr(row, segment), [word], rng)}) for row in rows]


def segment_words(row: Example, max_words: "int | None" = None) -> list[str]:
    """The words of the segment a rewrite edits (the second of a pair), at most ``max_words``."""
    return (row.text_b if row.text_b is not None else row.text).split()[:max_words]


def _dropout(words: list[str], rng: random.Random) -> str:
    kept = [w for w in words if rng.random() >= DROPOUT]
    return " ".join(kept or words[:1])


def _crop(words: list[str], rng: random.Random) -> str:
    length = max(1, round(len(words) * rng.uniform(MIN_CROP, 1.0)))
    start = rng.randrange(len(words) - length + 1) if words else 0
    return " ".join(words[start:start + length])


def _splice(first: list[str], second: list[str], rng: random.Random) -> tuple[str, int]:
    """(the splice, how many of its words came from ``first``)."""
    cut_a = rng.randrange(1, len(first) + 1) if first else 0
    cut_b = rng.randrange(len(second)) if second else 0
    return " ".join(first[:cut_a] + second[cut_b:]), cut_a
