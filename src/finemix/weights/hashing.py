"""SHA-256 of files and model folders, for the report."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_blob_sha256(folder: Path, path: Path) -> str | None:
    """The SHA-256 the Hub shows for a large file of a Hub cache snapshot, without reading it.

    In the cache, ``snapshots/<revision>/<file>`` links to ``blobs/<etag>``, and a large (LFS or Xet)
    file's etag is its SHA-256 (64 hex; a small file's is a git SHA-1, 40 hex, and is read instead).
    huggingface_hub names the blob from the Hub's answer and does not re-hash what it wrote, so this is
    the Hub's digest of the file, not of the local bytes (docs/performance.md).
    """
    root = Path(folder).resolve()
    if root.parent.name != "snapshots" or not os.path.islink(path):
        return None
    link = Path(os.readlink(path))
    if link.parent.name != "blobs" or not _SHA256_HEX.fullmatch(link.name):
        return None
    return link.name if (root.parent.parent / "blobs" / link.name).is_file() else None


def folder_sha256(folder: Path, named: list[str] | None = None) -> dict[str, str]:
    """SHA-256 of every weight and config file of a model folder (for the report), keyed by
    the path inside the folder: its own files and every shard an index names, also in a
    subfolder. Files that lead outside the folder are left out (the reader refuses them).
    A Hub cache's large files take the digest their blob is named by (``hub_blob_sha256``);
    their names are appended to ``named`` when given."""
    digests = {}
    for name, path in _model_files(folder).items():
        digests[name] = hub_blob_sha256(folder, path)
        if digests[name] is None:
            digests[name] = file_sha256(path)
        elif named is not None:
            named.append(name)
    return digests


def _model_files(folder: Path) -> dict[str, Path]:
    """The files ``folder_sha256`` covers, by their path inside the folder, sorted."""
    from ..errors import FinemixError
    from .reader import inside_folder, leads_inside, shard_names

    files = {p.name: p for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix in (".safetensors", ".bin", ".json") and leads_inside(folder, p)}
    for index in [p for name, p in files.items() if name.endswith(".index.json")]:
        try:
            shards = {Path(name).as_posix(): inside_folder(folder, name) for name in shard_names(index)}
        except FinemixError:
            continue  # an index the reader did not use; a bad one it uses is refused there
        for name, path in shards.items():
            if path.is_file():
                files.setdefault(name, path)
    return dict(sorted(files.items()))
