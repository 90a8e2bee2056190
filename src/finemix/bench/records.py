"""results.jsonl: one measurement a line, appended as it finishes."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Sequence


def read_results(path: Path) -> list[dict]:
    """Records of a results file; a torn last line (a kill mid-append), undecodable bytes and lines
    that are not a record (a JSON object with a string ``key``) are ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            records.append(record)
    return records


def append_result(path: Path, record: dict) -> None:
    """One line, flushed and fsynced: a kill loses at most the measurement in flight."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation in points (%) of the defined values (null rates left out)."""
    values = [100.0 * v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
