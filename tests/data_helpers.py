"""Helpers shared by the tests of the built-in data sets."""

from __future__ import annotations

import contextlib
import hashlib


def fingerprint(examples) -> str:
    """A short hash of rows (label, text, text_b) in order: pins a split's exact content."""
    rows = "".join(f"{e.label}\t{e.text}\t{e.text_b}\n" for e in examples)
    return hashlib.sha256(rows.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def cleared_caches(*cached):
    """Run with the ``lru_cache`` of each loader in ``cached`` empty, and leave them empty."""
    for function in cached:
        function.cache_clear()
    try:
        yield
    finally:
        for function in cached:
            function.cache_clear()
