"""A PEFT LoRA adapter as a weight source: per base weight, θ_Pre and the adapter's Δ = s·B·A.

``open_adapter`` reads ``adapter_config.json`` and the adapter's tensors (small: the factors only)
and checks them against the base model's checkpoint before anything is written: every target
module must be a weight of the base with matching shapes, and the variants whose Δ is not s·B·A
(DoRA, LoRA biases, fan-in-fan-out layouts, per-module rank or alpha patterns, trainable tokens)
are refused in one line rather than mixed wrongly. Full tensors the adapter saves
(``modules_to_save``, e.g. an embedding or a head) are kept as θ_B of that base weight.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..core.lora import lora_delta, lora_scale
from ..errors import FinemixError
from .reader import TensorReader

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
_REFUSED_OPTIONS = {  # adapter_config key -> why its Δ is not s·B·A of plain LoRA factors
    "use_dora": "DoRA rescales the merged weight's columns",
    "fan_in_fan_out": "its factors are stored transposed (fan_in_fan_out)",
    "lora_bias": "it trains a bias besides B·A",
    "alpha_pattern": "per-module alpha patterns are not read yet",
    "rank_pattern": "per-module rank patterns are not read yet",
    "trainable_token_indices": "trainable tokens are not read yet",
}


def is_adapter(folder: str | Path) -> bool:
    """True for a PEFT adapter folder; adapter weights without their config are refused in one line."""
    folder = Path(folder)
    if (folder / ADAPTER_CONFIG).is_file():
        return True
    if any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise FinemixError(f"{folder}: holds adapter weights but no {ADAPTER_CONFIG} (its rank, alpha and base): "
                           "cannot mix it")
    return False


def adapter_base(folder: str | Path) -> Path:
    """The base model folder an adapter's config names (``base_model_name_or_path``, resolved offline)."""
    from .locate import resolve_model_dir

    named = _read_config(Path(folder)).get("base_model_name_or_path")
    if not named:
        raise FinemixError(f"{folder}: the adapter does not name its base model (base_model_name_or_path)")
    return resolve_model_dir(named)


@dataclasses.dataclass(frozen=True)
class LoraModule:
    """One adapted linear weight: its name in the base checkpoint and its factors' keys in the adapter file."""

    base_name: str
    a_key: str
    b_key: str
    rank: int


@dataclasses.dataclass
class Adapter:
    folder: Path
    config: dict
    tensors: dict  # adapter file key -> tensor (the factors and any saved full tensors)
    modules: dict[str, LoraModule]  # base weight name -> module
    saved: dict[str, str]  # base weight name -> adapter key of a full tensor the adapter saves (modules_to_save)
    scale: float

    def delta(self, base_name: str) -> "torch.Tensor":
        """Δ = s·B·A of one adapted base weight (float32), built when asked."""
        module = self.modules[base_name]
        return lora_delta(self.tensors[module.a_key], self.tensors[module.b_key], self.scale)

    def finetuned(self, base_name: str, base: "torch.Tensor") -> Optional["torch.Tensor"]:
        """θ_B of one base weight in the base's dtype, or None where the adapter leaves it as it is."""
        if base_name in self.modules:
            return (base.float() + self.delta(base_name)).to(base.dtype)
        if base_name in self.saved:
            return self.tensors[self.saved[base_name]].to(base.dtype)
        return None


def saved_full_tensors(folder: str | Path) -> list[str]:
    """The base weights an adapter saves whole (``modules_to_save``), read without its base."""
    folder = Path(folder)
    _read_config(folder)
    return sorted(_parse_keys(folder, _read_tensors(folder))[1])


def open_adapter(folder: str | Path, base: TensorReader) -> Adapter:
    """The adapter in ``folder`` checked against the ``base`` checkpoint; one-line errors, nothing written."""
    folder = Path(folder)
    config = _read_config(folder)
    tensors = _read_tensors(folder)
    modules, saved = _parse_keys(folder, tensors)
    _check_against_base(folder, tensors, modules, saved, base)
    ranks = {m.rank for m in modules.values()}
    if ranks and ranks != {int(config.get("r", -1))}:
        raise FinemixError(f"{folder}: the factors have rank {sorted(ranks)} but adapter_config.json says r = {config.get('r')}")
    scale = lora_scale(int(config.get("r", 1)), float(config.get("lora_alpha", config.get("r", 1))),
                       bool(config.get("use_rslora")))
    return Adapter(folder, config, tensors, modules, saved, scale)


def _read_config(folder: Path) -> dict:
    if not is_adapter(folder):
        raise FinemixError(f"{folder}: not a PEFT adapter (no {ADAPTER_CONFIG})")
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FinemixError(f"{folder / ADAPTER_CONFIG}: unreadable ({type(error).__name__})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise FinemixError(f"{folder}: a {kind or 'non-LoRA'} adapter; only LoRA adapters can be mixed")
    for key, why in _REFUSED_OPTIONS.items():
        if config.get(key):
            raise FinemixError(f"{folder}: {key} is set, and {why}: not supported")
    return config


def _read_tensors(folder: Path) -> dict:
    file = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
    if file is None:
        raise FinemixError(f"{folder}: no adapter weights (expected {ADAPTER_WEIGHTS[0]})")
    if file.suffix == ".bin":
        raise FinemixError(f"{file}: pickled adapter weights are not read (they can run code); convert to safetensors")
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as error:  # the safetensors error types vary by version
        raise FinemixError(f"{file}: unreadable safetensors file ({' '.join(str(error).split())[:120]})") from None


def _parse_keys(folder: Path, tensors: dict) -> tuple[dict[str, LoraModule], dict[str, str]]:
    factors: dict[str, dict[str, str]] = {}
    saved: dict[str, str] = {}
    for key in tensors:
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for part in ("lora_A", "lora_B"):
            if name.endswith(f".{part}.weight"):
                factors.setdefault(name[: -len(f".{part}.weight")] + ".weight", {})[part] = key
                break
        else:
            if ".lora_" in name or "lora_embedding" in name:
                raise FinemixError(f"{folder}: adapter tensor {key} is not a plain LoRA factor: not supported")
            saved[name] = key
    modules = {}
    for base_name, pair in factors.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise FinemixError(f"{folder}: module {base_name[:-7]} has only {next(iter(pair))}; both factors are needed")
        a, b = tensors[pair["lora_A"]], tensors[pair["lora_B"]]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise FinemixError(f"{folder}: module {base_name[:-7]}: factor shapes {tuple(a.shape)} and {tuple(b.shape)} "
                               "do not multiply")
        modules[base_name] = LoraModule(base_name, pair["lora_A"], pair["lora_B"], int(a.shape[0]))
    if not modules and not saved:
        raise FinemixError(f"{folder}: the adapter holds no tensors")
    return modules, saved


def _check_against_base(folder: Path, tensors: dict, modules: dict[str, LoraModule], saved: dict[str, str],
                        base: TensorReader) -> None:
    for base_name, module in modules.items():
        if base_name not in base:
            raise FinemixError(f"{folder}: target module {base_name[:-7]} is not in the base model {base.folder}: "
                               "is --pretrained the adapter's base?")
        out, inn = tensors[module.b_key].shape[0], tensors[module.a_key].shape[1]
        if tuple(base.shape(base_name)) != (out, inn):
            raise FinemixError(f"{folder}: module {base_name[:-7]} maps {inn} → {out} but the base's weight is "
                               f"{tuple(base.shape(base_name))}: is --pretrained the adapter's base?")
    for base_name, key in saved.items():
        if base_name not in base:
            raise FinemixError(f"{folder}: saved tensor {base_name} is not in the base model {base.folder}")
        if tuple(tensors[key].shape) != tuple(base.shape(base_name)):
            raise FinemixError(f"{folder}: saved tensor {base_name} is {tuple(tensors[key].shape)} but the base's is "
                               f"{tuple(base.shape(base_name))} (a resized vocabulary?): not supported")
