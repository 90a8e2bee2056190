"""SHA-256 of files and model folders, for the report."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of every weight and config file of a model folder (for the report), keyed by
    the path inside the folder: its own files and every shard an index names, also in a
    subfolder. Files that lead outside the folder are left out (the reader refuses them)."""
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
    return {name: file_sha256(path) for name, path in sorted(files.items())}
