"""Labelled examples: the ``Example`` record, label mapping and the file loaders built on it.

Every problem a user can cause (missing column, empty text, unknown label)
raises ``FinemixError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..errors import FinemixError
from .files import _DELIMITERS, _JSON_SUFFIXES, PathLike, _decode, _read_records, _short

_INT_LABEL = re.compile(r"[+-]?[0-9]{1,18}")  # longer would overflow any sane id (and int() limits)


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # class id
    text_b: Optional[str] = None  # second segment for sentence pairs


def _known_labels(label2id: Optional[Mapping[str, int]], num_labels: Optional[int]) -> str:
    if label2id:
        return ", ".join(f"{name}={i}" for name, i in sorted(label2id.items(), key=lambda kv: kv[1]))
    if num_labels is not None:
        return f"integer ids 0..{num_labels - 1}"
    return "integer ids only (no label names given)"


def label_by_name(name: str, label2id: Optional[Mapping[str, int]]) -> Optional[int]:
    """The id of a label name, or None: exact match first, then case-insensitive; names on both
    sides compared without surrounding spaces (a config's " positive " is a file's "positive")."""
    value = name.strip()
    exact = {key.strip(): i for key, i in (label2id or {}).items()}
    if value in exact:
        return exact[value]
    return {key.casefold(): i for key, i in exact.items()}.get(value.casefold())


def label_id(raw: str, label2id: Optional[Mapping[str, int]], num_labels: Optional[int], where: str) -> int:
    """A label as written (an ASCII integer id or a name from ``label2id``) as a checked class id."""
    value = raw.strip()
    known = _known_labels(label2id, num_labels)
    label = int(value) if _INT_LABEL.fullmatch(value) else label_by_name(value, label2id)
    if label is None:
        raise FinemixError(f"{where}: unknown label {_short(value)}; known labels: {known}")
    if label < 0 or (num_labels is not None and label >= num_labels):
        bound = f"[0, {num_labels})" if num_labels is not None else ">= 0"
        raise FinemixError(f"{where}: label id {label} is outside {bound}; known labels: {known}")
    return label


def _example(row: dict[str, str], pair: bool, label2id, num_labels, where: str) -> Example:
    text = (row.get("text") or "").strip()
    if not text:
        raise FinemixError(f"{where}: empty text")
    text_b = None
    if pair:
        text_b = (row.get("text_b") or "").strip()
        if not text_b:
            raise FinemixError(f"{where}: empty text_b (a file with a text_b column needs it on every row)")
    if not (row.get("label") or "").strip():
        raise FinemixError(f"{where}: empty label")
    return Example(text=text, label=label_id(row["label"], label2id, num_labels, where), text_b=text_b)


def load_examples(
    path: PathLike,
    label2id: Optional[Mapping[str, int]] = None,
    num_labels: Optional[int] = None,
) -> list[Example]:
    """Labelled examples from a file with columns ``text``, ``label`` and optionally ``text_b``.

    A label is an integer id ("0", "1") or a name looked up in ``label2id``
    (exact match first, then case-insensitive). Texts are stripped.
    """
    columns, records = _read_records(path)
    missing = [name for name in ("text", "label") if name not in columns]
    if missing:
        found = ", ".join(map(_short, columns)) or "none"
        raise FinemixError(f"{path}: missing column(s) {', '.join(missing)}; found: {found}")
    pair = "text_b" in columns
    return [_example(row, pair, label2id, num_labels, f"{path}: line {line}") for line, row in records]


def read_texts(path: PathLike) -> list[str]:
    """Unlabelled texts for token-frequency counts: .txt lines, or the text/text_b columns of a table."""
    path = Path(path)
    if path.suffix.lower() not in (".txt", *_DELIMITERS, *_JSON_SUFFIXES):
        raise FinemixError(f"{path}: unknown file type {path.suffix or '(none)'}; use .txt, .csv, .tsv or .jsonl")
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for line in _decode(path).split("\n") if line.strip()]
        if not texts:
            raise FinemixError(f"{path}: no rows")
        return texts
    columns, records = _read_records(path)
    if "text" not in columns:
        found = ", ".join(map(_short, columns)) or "none"
        raise FinemixError(f"{path}: missing column text; found: {found}")
    fields = [name for name in ("text", "text_b") if name in columns]
    return [row[name].strip() for _, row in records for name in fields if (row.get(name) or "").strip()]


def label_counts(examples: Sequence[Example]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for example in examples:
        counts[example.label] = counts.get(example.label, 0) + 1
    return dict(sorted(counts.items()))
