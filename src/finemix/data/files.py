"""Reading tables: decoding, and the CSV/TSV/JSONL record readers.

Every problem a user can cause (bad encoding, malformed row, duplicate column)
raises ``FinemixError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..errors import FinemixError

PathLike = Union[str, Path]

_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSON_SUFFIXES = (".jsonl", ".json")
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # the largest value every platform's csv accepts


def _short(value: str, limit: int = 40) -> str:
    """repr() keeps messages on one line; truncation keeps them short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


MAX_FILE_BYTES = 4 * 1024**3  # data files are read whole; a bigger one is a mistake (or /proc, or a device)


def read_regular_file(path: Path, limit: Optional[int] = None) -> bytes:
    """The bytes of a regular file, at most ``limit``. A FIFO, a device (/dev/zero, /dev/stdin)
    or a folder is refused before any read: reading one hangs or never ends."""
    import os
    import stat

    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        # O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FinemixError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise FinemixError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise FinemixError(f"{path}: {kind}, not a regular file")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(limit + 1)
        except OSError as err:
            raise FinemixError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) > limit:
        raise FinemixError(f"{path}: larger than {limit:,} bytes; finemix reads data files whole")
    return data


def _decode(path: Path) -> str:
    data = read_regular_file(path)
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


def json_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of a JSONL text; invalid JSON is one line naming it."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except (ValueError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
            raise FinemixError(f"{path}: line {number} is not valid JSON ({reason}); expected one object per line") from None


def _json_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    columns: dict[str, None] = {}  # ordered set: union of keys in first-seen order
    records: list[tuple[int, dict[str, str]]] = []
    for number, obj in json_lines(path, text):
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
