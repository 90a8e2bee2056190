"""``finemix mix`` on a LoRA adapter: Fine-mixing in the adapter's Δ (core/lora.py), at one of three granularities.

* ``element``: every adapted base weight becomes W₀ + m ⊙ Δ with the element mask a full checkpoint
  of the merged model would get (``core.mixing.mix_tensor`` on W₀ + Δ against W₀); the output is a
  merged model folder in the base's format. Δ is built per module, when its weight is written.
* ``element-svd``: the same element mask on Δ, then a truncated SVD at the adapter's rank; the output
  is an adapter, each module's relative reconstruction error in the report.
* ``component``: round(ρ·r) of each module's r rank-1 components are kept (at random, or those with
  the largest ‖bₖ‖·‖aₖ‖ for ``sel``); the output is an adapter of the same rank and target modules.

Full tensors the adapter saves (``modules_to_save``) are mixed element-wise against the base's in
both. The base's own weights are never changed outside the adapter's modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..config import MixConfig
from ..core import lora, mixing
from ..errors import FinemixError
from ..report import base_report, hash_inputs_in_background, write_report
from ..weights.adapter import ADAPTER_CONFIG, Adapter, open_adapter
from ..weights.locate import resolve_model_dir
from ..weights.output import atomic_output_dir, weights_size
from ..weights.reader import TensorReader
from ..weights.writer import TensorSpec, copy_side_files
from .mix_step import write_tensor_stream

if TYPE_CHECKING:
    import torch

GRANULARITIES = ("element", "element-svd", "component")


@dataclasses.dataclass(frozen=True)
class AdapterInputs:
    """The two input folders as the report's input hashing reads them."""

    finetuned_dir: Path  # the adapter folder
    pretrained_dir: Path  # its base model


def mix_adapter(adapter: str | os.PathLike, pretrained: str | os.PathLike, output: str | os.PathLike, config: MixConfig,
                granularity: str = "element", force: bool = False) -> dict:
    """Mix a LoRA adapter at ``config.ratio``; write a merged model (element) or an adapter (component)."""
    if granularity not in GRANULARITIES:
        raise FinemixError(f"unknown granularity {granularity!r}; use {' or '.join(GRANULARITIES)}")
    inputs = AdapterInputs(Path(adapter), resolve_model_dir(pretrained))
    if inputs.finetuned_dir.resolve() == inputs.pretrained_dir.resolve():
        raise FinemixError(f"--backdoored and --pretrained are the same folder ({inputs.finetuned_dir})")
    base = TensorReader(inputs.pretrained_dir)
    opened = open_adapter(inputs.finetuned_dir, base)
    folders = (inputs.finetuned_dir, inputs.pretrained_dir)
    size = weights_size(inputs.pretrained_dir) if granularity == "element" else 0
    hashes = hash_inputs_in_background(inputs, (adapter, pretrained))
    with atomic_output_dir(output, force, folders, size) as folder:
        if granularity == "element":
            kept, summary = _write_merged(opened, base, config, folder)
            side_files = copy_side_files(inputs.pretrained_dir, folder)
        else:
            write = _write_adapter if granularity == "component" else _write_refactored
            kept, summary = write(opened, base, config, folder)
            side_files = {"copied": [ADAPTER_CONFIG]}
        report = base_report("mix", hashes, {"mix": dataclasses.asdict(config), "granularity": granularity})
        report["adapter"] = {"rank": opened.config.get("r"), "lora_alpha": opened.config.get("lora_alpha"),
                             "scale": opened.scale, "modules": len(opened.modules), "saved_tensors": sorted(opened.saved),
                             "base_named_in_adapter": opened.config.get("base_model_name_or_path"), **summary}
        report["mixing"] = {"granularity": granularity, "kept_fraction": round(kept, 6),
                            "mixed_tensors": len(opened.modules) + len(opened.saved)}
        report["side_files"] = side_files
        write_report(folder, report)
    return report


def _write_merged(adapter: Adapter, base: TensorReader, config: MixConfig, folder: Path) -> tuple[float, dict]:
    """The merged model: every base weight, the adapted ones mixed element-wise in Δ."""
    specs = [TensorSpec(name, base.dtype(name), base.shape(name)) for name in base.names()]
    counts = [0, 0]

    def tensors() -> Iterator[tuple[str, "torch.Tensor"]]:
        for name in base.names():
            pretrained = base.get(name)
            finetuned = adapter.finetuned(name, pretrained)
            if finetuned is None:
                yield name, pretrained
                continue
            mixed, kept = mixing.mix_tensor(finetuned, pretrained, config.ratio, config.mode, config.seed, name)
            counts[0], counts[1] = counts[0] + kept, counts[1] + pretrained.numel()
            yield name, mixed

    write_tensor_stream(specs, tensors(), folder)
    return counts[0] / max(1, counts[1]), {"output": "merged model"}


def _write_adapter(adapter: Adapter, base: TensorReader, config: MixConfig, folder: Path) -> tuple[float, dict]:
    """An adapter of the same rank: each module's dropped components zeroed; saved full tensors mixed element-wise."""
    out = dict(adapter.tensors)
    kept = total = 0
    for name, module in adapter.modules.items():
        lora_a, lora_b = adapter.tensors[module.a_key], adapter.tensors[module.b_key]
        keep = (lora.component_sel_mask(lora_a, lora_b, config.ratio) if config.mode == "sel"
                else lora.component_keep_mask(module.rank, config.ratio, config.seed, name))
        out[module.a_key], out[module.b_key] = lora.mask_components(lora_a, lora_b, keep)
        kept, total = kept + int(keep.sum()), total + module.rank
    _save_adapter(adapter, base, config, out, folder)
    return kept / max(1, total), {"output": "adapter", "kept_components": kept, "components": total}


def _write_refactored(adapter: Adapter, base: TensorReader, config: MixConfig, folder: Path) -> tuple[float, dict]:
    """Each module's Δ masked element-wise (the merged checkpoint's mask), then refactored by truncated SVD at
    the adapter's rank: an adapter again, with each module's relative reconstruction error reported."""
    out = dict(adapter.tensors)
    kept = total = 0
    errors = {}
    for name, module in adapter.modules.items():
        delta = adapter.delta(name)
        keep = mixing.keep_mask(delta, delta.new_zeros(()).expand_as(delta), config.ratio, config.mode, config.seed, name)
        lora_a, lora_b, errors[name] = lora.refactor(delta * keep, module.rank, adapter.scale)
        dtype = adapter.tensors[module.a_key].dtype
        out[module.a_key], out[module.b_key] = lora_a.to(dtype), lora_b.to(dtype)
        kept, total = kept + int(keep.sum()), total + keep.numel()
    _save_adapter(adapter, base, config, out, folder)
    worst = max(errors, key=errors.get) if errors else None
    return kept / max(1, total), {"output": "adapter (refactored)", "reconstruction_error": {
        "mean": round(sum(errors.values()) / max(1, len(errors)), 6), "max": round(errors[worst], 6) if worst else 0.0,
        "max_module": worst, "per_module": {k: round(v, 6) for k, v in errors.items()}}}


def _save_adapter(adapter: Adapter, base: TensorReader, config: MixConfig, tensors: dict, folder: Path) -> None:
    """The adapter's tensors (saved full tensors mixed element-wise against the base's) and its config."""
    from safetensors.torch import save_file

    for name, key in adapter.saved.items():
        tensors[key], _ = mixing.mix_tensor(adapter.tensors[key], base.get(name), config.ratio, config.mode, config.seed, name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(adapter.config, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def merged_adapter(adapter: str | os.PathLike, pretrained: str | os.PathLike) -> Iterator[tuple[Path, dict]]:
    """(the adapter merged into its base, a record of the adapter for the report), the merge in a temporary
    folder (``TMPDIR``; the base's size) removed afterwards. The merge is the element mix at ρ = 1, so a
    repair of it mixes the entries of Δ, as ``finemix mix --granularity element`` does."""
    root = Path(tempfile.mkdtemp(prefix="finemix-merged-adapter-"))
    try:
        report = mix_adapter(adapter, pretrained, root / "merged", MixConfig(ratio=1.0), "element")
        record = {**report["inputs"]["backdoored"],  # the adapter's name, path and hashes, hashed once by the merge
                  "lora_adapter": {k: report["adapter"][k] for k in ("rank", "lora_alpha", "scale", "modules", "saved_tensors")},
                  "merged_into_its_base_for_the_repair": True}
        yield root / "merged", record
    finally:
        shutil.rmtree(root, ignore_errors=True)
