"""Writing: ``ShardedWriter`` streams safetensors shards (header first, then each tensor as it
arrives) plus an index, in the layout ``save_pretrained`` writes; ``copy_side_files`` copies
config and tokenizer files beside them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FinemixError
from .formats import SAFE_INDEX, SAFE_SINGLE, dtype_tables, is_weight_file

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        import math

        _, to_torch = dtype_tables()
        return math.prod(self.shape) * to_torch[self.dtype].itemsize

    @classmethod
    def of(cls, name: str, tensor: "torch.Tensor") -> "TensorSpec":
        return cls(name, dtype_tables()[0][tensor.dtype], tuple(tensor.shape))


class ShardedWriter:
    """Writes safetensors shards tensor by tensor, plus an index when there are several.

    safetensors' ``save_file`` needs every tensor of a file in memory at once (and
    briefly copies them; safetensors issues #291 and #458), so it cannot bound memory.
    The format is a little-endian u64 header length, a JSON header of dtypes, shapes and
    byte offsets, then the raw bytes; the header needs only the specs, which a mix knows
    before it computes any tensor. So the header is written first and each tensor's bytes
    as it arrives, and memory holds only the tensors in flight. Files are read back with
    safetensors itself in the tests.
    """

    def __init__(self, folder: Path, specs: list[TensorSpec], max_shard_bytes: int = 2 * 1024**3) -> None:
        self.folder = folder
        self.shards = _plan_shards(specs, max_shard_bytes)
        self.total_bytes = sum(spec.nbytes for spec in specs)
        self._queue = [(i, spec) for i, shard in enumerate(self.shards) for spec in shard]
        self._next = 0
        self._file = None

    def _name(self, index: int) -> str:
        return SAFE_SINGLE if len(self.shards) == 1 else f"model-{index + 1:05d}-of-{len(self.shards):05d}.safetensors"

    def add(self, name: str, tensor: "torch.Tensor") -> None:
        import torch

        if self._next >= len(self._queue):
            raise FinemixError(f"internal error: tensor {name} was not declared to the writer")
        shard, spec = self._queue[self._next]
        if spec != TensorSpec.of(name, tensor):
            raise FinemixError(f"internal error: expected {spec} next, got {TensorSpec.of(name, tensor)}")
        if self._file is None:
            self._file = open(self.folder / self._name(shard), "wb")
            self._file.write(_header(self.shards[shard]))
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        self._file.write(memoryview(data.numpy()))
        self._next += 1
        if self._next == len(self._queue) or self._queue[self._next][0] != shard:
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._next != len(self._queue):
            missing = [spec.name for _, spec in self._queue[self._next:]][:3]
            raise FinemixError(f"internal error: tensors never written: {', '.join(missing)}")
        if len(self.shards) > 1:
            weight_map = {spec.name: self._name(i) for i, shard in enumerate(self.shards) for spec in shard}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive tensors grouped into shards of at most ``max_shard_bytes`` (a bigger
    tensor gets a shard of its own), in the given order."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _header(specs: list[TensorSpec]) -> bytes:
    """The safetensors header (length prefix + JSON padded to 8 bytes) for these tensors, in order."""
    import struct

    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded


# Code a loader could run: transformers imports a folder's ``*.py`` named by ``auto_map``
# (config.json, tokenizer_config.json, …) or ``custom_pipelines`` under trust_remote_code.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so")
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


def copy_side_files(source: Path, target: Path) -> dict:
    """Copy config and tokenizer files (everything that is not a weight file), never code:
    the output is a repaired model, and whoever loads it with ``trust_remote_code`` must not
    run the suspect's code. So code files are left behind, remote-code keys are removed
    from the JSON files, and files that lead outside ``source`` (links) are never copied.
    Returns what was copied and what was left out, for the report.
    """
    from .reader import leads_inside

    record: dict = {"copied": [], "dropped_code_files": [], "removed_keys": {}, "skipped_links": []}
    for item in sorted(source.iterdir()):
        if not item.is_file() or is_weight_file(item.name) or item.name.startswith("."):
            continue
        if not leads_inside(source, item):
            record["skipped_links"].append(item.name)
        elif item.suffix.lower() in CODE_SUFFIXES:
            record["dropped_code_files"].append(item.name)
        else:
            removed = _copy_without_remote_code(item, target / item.name)
            if removed:
                record["removed_keys"][item.name] = removed
            record["copied"].append(item.name)
    return record


def _copy_without_remote_code(source: Path, target: Path) -> list[str]:
    """Copy one file; a JSON object with remote-code keys is written without them (else byte for byte)."""
    data = None
    if source.suffix == ".json":
        try:  # parsed, not searched: JSON may spell a key with escapes ("auto\\u005fmap")
            data = json.loads(source.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = None
    removed = [key for key in REMOTE_CODE_KEYS if isinstance(data, dict) and key in data]
    if not removed:
        shutil.copy2(source, target)
        return []
    kept = {key: value for key, value in data.items() if key not in REMOTE_CODE_KEYS}
    target.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    return removed

