"""Reading: ``TensorReader`` opens ``model.safetensors``, a sharded ``*.safetensors.index.json``
or (only through ``torch.load(weights_only=True)``) ``pytorch_model.bin``, and hands out
single tensors, so mixing holds at most one output model plus tensors in flight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import FinemixError
from .formats import BIN_INDEX, BIN_SINGLE, SAFE_INDEX, SAFE_SINGLE, WEIGHT_FILES, dtype_tables

if TYPE_CHECKING:
    import torch


class TensorReader:
    """Lazy access to the tensors of a model folder, one at a time."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._where: dict[str, Path] = {}
        self._specs: dict[str, tuple[str, tuple[int, ...]]] = {}  # name -> (dtype code, shape)
        self._bin: dict[Path, Mapping[str, "torch.Tensor"]] = {}
        self.files = self._index()

    def _index(self) -> list[Path]:
        folder = self.folder
        for name in WEIGHT_FILES:
            if (folder / name).is_file():
                inside_folder(folder, name)
        if (folder / SAFE_INDEX).is_file():
            return self._index_from_map(folder / SAFE_INDEX)
        if (folder / SAFE_SINGLE).is_file():
            return self._index_safetensors([folder / SAFE_SINGLE])
        if (folder / BIN_INDEX).is_file():
            return self._index_from_map(folder / BIN_INDEX)
        if (folder / BIN_SINGLE).is_file():
            return self._index_bin([folder / BIN_SINGLE])
        raise FinemixError(f"{folder}: no model weights (expected {SAFE_SINGLE}, {SAFE_INDEX} or {BIN_SINGLE})")

    def _index_from_map(self, index: Path) -> list[Path]:
        files = sorted({inside_folder(self.folder, name) for name in shard_names(index)})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FinemixError(f"{index}: names shard file(s) that do not exist: {', '.join(missing)}")
        if index.name == SAFE_INDEX:
            self._index_safetensors(files)
        else:
            self._index_bin(files)
        return files

    def _index_safetensors(self, files: list[Path]) -> list[Path]:
        from safetensors import safe_open

        for file in files:
            try:
                with safe_open(str(file), framework="pt") as handle:
                    for key in handle.keys():
                        piece = handle.get_slice(key)
                        self._specs[key] = (piece.get_dtype(), tuple(piece.get_shape()))
                        self._where[key] = file
            except Exception as error:  # the safetensors error types vary by version
                raise FinemixError(f"{file}: unreadable safetensors file ({_first_line(error)})") from None
        return files

    def _index_bin(self, files: list[Path]) -> list[Path]:
        import pickle

        import torch

        for file in files:
            try:
                # weights_only refuses arbitrary pickled objects: loading never runs code.
                state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
                raise FinemixError(f"{file}: refused or unreadable PyTorch checkpoint ({_first_line(error)})") from None
            if not isinstance(state, Mapping):
                raise FinemixError(f"{file}: not a state dict")
            self._bin[file] = state
            for key, tensor in state.items():
                self._specs[key] = (dtype_tables()[0].get(tensor.dtype, str(tensor.dtype)), tuple(tensor.shape))
                self._where[key] = file
        return files

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return self._specs[name][1]

    def dtype(self, name: str) -> str:
        """The safetensors dtype code ("F32", "BF16", …)."""
        return self._specs[name][0]

    def get(self, name: str) -> "torch.Tensor":
        """One tensor, copied out of the file; NaN/Inf weights are refused (they would
        propagate into a plausible-looking but broken output).

        Each read maps the file anew and unmaps it after the copy: a handle kept open
        would keep every page it touched resident, and peak memory would grow to the
        size of both checkpoints.
        """
        import torch
        from safetensors import safe_open

        file = self._where[name]
        if file in self._bin:
            tensor = self._bin[file][name].clone()
        else:
            try:
                with safe_open(str(file), framework="pt") as handle:
                    tensor = handle.get_tensor(name)
            except Exception as error:
                raise FinemixError(f"{file}: tensor {name} unreadable ({_first_line(error)})") from None
        if torch.is_floating_point(tensor) and not all_finite(tensor):
            raise FinemixError(f"{file}: tensor {name} contains NaN or Inf values")
        return tensor

    def close(self) -> None:
        self._bin.clear()


_EXPONENT_BITS = {"torch.bfloat16": 0x7F80, "torch.float16": 0x7C00}  # all ones: Inf or NaN
_FINITE_BLOCK = 1 << 18  # 16-bit elements checked per step


def all_finite(tensor: "torch.Tensor") -> bool:
    """No NaN or Inf in ``tensor``.

    16-bit floats: a value is Inf or NaN exactly when its exponent bits are all ones, so one
    integer pass over the bit patterns settles it (numpy's, vectorised; a float32 sum of bf16
    converts every element and was measured 4× slower). Other floats: a NaN or Inf makes
    the sum non-finite, so one float32 sum settles the common case; only a non-finite sum,
    which finite values could also give by overflowing, is confirmed element-wise.
    """
    import numpy as np
    import torch

    exponent = _EXPONENT_BITS.get(str(tensor.dtype))
    if exponent is not None:
        if tensor.numel() == 0:
            return True
        bits = tensor.contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)
        scratch = np.empty(min(bits.size, _FINITE_BLOCK), dtype=np.uint16)  # cache-sized: 2.4× faster than whole
        for start in range(0, bits.size, _FINITE_BLOCK):
            part = bits[start:start + _FINITE_BLOCK]
            if int(np.bitwise_and(part, exponent, out=scratch[:part.size]).max()) >= exponent:
                return False
        return True
    if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(tensor).all())


def shard_names(index: Path) -> list[str]:
    """The shard file names a ``*.index.json`` lists (each also checked by ``inside_folder``)."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise FinemixError(f"{index}: not a valid shard index (needs a 'weight_map')") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v.strip() and "\0" not in v
                                                   for v in weight_map.values()):
        raise FinemixError(f"{index}: not a valid shard index ('weight_map' must map tensor names to file names)")
    return sorted(set(weight_map.values()))


def inside_folder(folder: Path, name: str | os.PathLike) -> Path:
    """``folder / name``, refused when it leads outside ``folder``.

    A shard index naming ``../elsewhere/x.safetensors`` or an absolute path, or a file
    that is a link to one outside, would bring in weights (or, copied beside the output,
    any file's contents) that the user never gave and the report never hashes.
    """
    path = Path(folder) / name
    if not _within(Path(os.path.normpath(os.path.abspath(path))), Path(os.path.abspath(folder))):
        raise FinemixError(f"{folder}: {name} points outside the model folder (refused)")
    if not leads_inside(folder, path):
        raise FinemixError(f"{folder}: {name} leads to {path.resolve()}, outside the model folder (a link; refused: "
                           "copy the file into the folder instead)")
    return path


def leads_inside(folder: Path, path: Path) -> bool:
    """Whether ``path``, links followed, is a file inside ``folder`` or, when ``folder`` is a
    Hugging Face Hub cache snapshot, one of that cache's blobs.

    The Hub cache keeps each file once: ``<repo>/snapshots/<revision>/<file>`` is a link to
    ``<repo>/blobs/<etag>``, which recent huggingface_hub may link again into the cache-wide
    store ``<cache>/blobs/<2 hex>/<64 hex>`` (marked by ``.huggingface-shared-blobs``).
    Exactly those targets are allowed; any other link out of the folder is not.
    """
    root, target = Path(folder).resolve(), Path(path).resolve()
    if _within(target, root):
        return True
    repo = root.parent.parent
    if root.parent.name != "snapshots" or not (repo / "blobs").is_dir():
        return False
    if target.parent == (repo / "blobs").resolve():
        return True
    shared = repo.parent / "blobs"
    return (target.parent.parent == shared.resolve() and (shared / ".huggingface-shared-blobs").is_file()
            and len(target.parent.name) == 2 and len(target.name) == 64)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__

