"""The report written beside every output: provenance hashes, settings, timings, versions.

``finemix_report.json`` is the machine-readable record; ``model_card.py`` turns it into the
``README.md`` model card the Hub shows.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .weights.hashing import folder_sha256

if TYPE_CHECKING:
    from .data import Example
    from .weights.pair import CheckpointPair

REPORT_FILE = "finemix_report.json"


class Timer:
    """Wall time per named stage: ``with timer("mix"): ...``; ``timer.values`` in seconds."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def __call__(self, stage: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.values[stage] = round(time.perf_counter() - self.start, 3)

        return _Stage()


def label_counts(examples: Sequence["Example"]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for example in examples:
        counts[str(example.label)] = counts.get(str(example.label), 0) + 1
    return dict(sorted(counts.items()))


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("finemix", "torch", "transformers", "safetensors", "accelerate", "tokenizers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hash_inputs_in_background(pair: "CheckpointPair", names: tuple = (None, None)):
    """Start hashing both input folders in a thread (hashlib releases the GIL), so the
    report's SHA-256s cost little wall time next to the mix; ``.result()`` gives them.
    ``names``: the two models as the user named them (a Hub name stays a Hub name)."""
    from concurrent.futures import ThreadPoolExecutor

    def entry(folder, name) -> dict:
        named: list[str] = []
        digests = folder_sha256(folder, named)
        return {"name": str(name if name is not None else folder), "path": str(folder), "sha256": digests,
                "sha256_from_hub_blob_names": named}

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finemix-hash")
    future = executor.submit(lambda: {
        "backdoored": entry(pair.finetuned_dir, names[0]),
        "pretrained": entry(pair.pretrained_dir, names[1]),
    })
    executor.shutdown(wait=False)
    return future


def base_report(command: str, inputs, settings: dict) -> dict:
    """The fields every report starts with; ``inputs`` is ``hash_inputs_in_background``'s future."""
    return {"command": command, "inputs": inputs.result(), "settings": settings, "versions": library_versions()}


def write_report(folder: Path, report: dict) -> None:
    """The report file, then the model card built from it."""
    from .model_card import write_model_card

    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    write_model_card(folder, report)
