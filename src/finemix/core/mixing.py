"""The Fine-mixing formula, as pure functions on tensors, in Δ form.

    θ_Mix = θ_Pre + m ⊙ Δ,    Δ = θ_B − θ_Pre

θ_B are the (possibly backdoored) fine-tuned weights, θ_Pre the public pre-trained
ones and m a 0/1 mask that keeps a fraction ρ of the fine-tuning update Δ; for a full
checkpoint this is m ⊙ θ_B + (1 − m) ⊙ θ_Pre. Stated on Δ so that any weight source
fits (a full checkpoint, or an adapter whose Δ = s·B·A); for a full checkpoint the kept
entries are *selected* from θ_B (``apply_mask``), never re-added, so they stay exactly θ_B's.

Choices of ours (the paper's full text was not available; see docs/paper-choices.md):
* no rescaling of kept entries (unlike DARE's 1/ρ); ρ = 1 gives θ_B, ρ = 0 gives θ_Pre;
* "random": each element kept independently with probability ρ (to 1/65536); the generator is
  seeded from (seed, tensor name, chunk) so a mask never depends on tensor order or threads
  (``MASK_GENERATOR`` names the version; reports record it);
* "sel": keep the ⌊ρ·n⌉ elements with the largest |θ_B − θ_Pre| (they carry most
  of the task), per tensor or over the whole model ("global").
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from . import topk
from .bitselect import SELECT_BLOCK, integer_view_type, select, select_by_bits

if TYPE_CHECKING:
    import torch


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed derived from (run seed, tensor name) alone."""
    digest = hashlib.sha256(f"finemix:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


MASK_CHUNK = 1 << 22  # elements per generator: part of the mask's definition (never tied to threads or memory)
MASK_GENERATOR = "v2: SFC64 per 4,194,304-element chunk seeded from (seed, tensor name, chunk), 16-bit draws"
# v1 (until issue 19): one SFC64 stream per tensor, float32 draws compared with ρ. v2 draws 4 elements per
# 64-bit output, 3-4× cheaper, and its chunks are independent, so any chunk can be drawn on any thread.


def _threshold16(ratio: float) -> int:
    """Keep an element when its 16-bit draw is below this: P = t / 65536, ρ rounded to a multiple of
    1/65536 (at least 1/65536 and at most 65535/65536: 0 < ρ < 1 never keeps all or nothing)."""
    return min(65535, max(1, round(ratio * 65536)))


def _chunk_keep(seed: int, name: str, index: int, count: int, threshold: int) -> "torch.Tensor":
    """The keep bits of elements [index·MASK_CHUNK, index·MASK_CHUNK + count) of tensor ``name``."""
    import numpy as np
    import torch

    generator = np.random.SFC64(tensor_seed(seed, f"{name}#{index}"))
    raw = generator.random_raw((count + 3) // 4).astype("<u8", copy=False)  # no copy on little-endian machines
    draws = raw.view("<u2")[:count]  # each 64-bit draw's four 16-bit lanes, low first, on any machine
    return torch.from_numpy(draws < threshold)


def random_keep_mask(shape: "torch.Size | tuple[int, ...]", ratio: float, seed: int, name: str,
                     chunk: int = MASK_CHUNK) -> "torch.Tensor":
    """Bernoulli(ρ) keep-mask for tensor ``name``; reproducible from (seed, name) alone (``MASK_GENERATOR``).

    ρ = 0 keeps nothing and ρ = 1 everything, with no draws; other ρ are drawn at 1/65536 resolution.
    ``chunk`` is the generator's chunk (tests shrink it to cross boundaries; the product never changes it).
    """
    import math

    import torch

    shape = tuple(shape)
    if ratio <= 0.0 or ratio >= 1.0:
        return torch.full(shape, ratio >= 1.0, dtype=torch.bool)
    n, threshold = math.prod(shape), _threshold16(ratio)
    parts = [_chunk_keep(seed, name, i, min(chunk, n - start), threshold) for i, start in enumerate(range(0, n, chunk))]
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)).view(shape)


def random_mix(finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float, seed: int, name: str,
               chunk: int = MASK_CHUNK) -> tuple["torch.Tensor", int]:
    """(θ_Mix, entries kept) under ``random_keep_mask``'s mask, drawn and applied one chunk at a time.

    The mask is bit-identical to ``random_keep_mask``'s (``chunk`` is the generator's chunk, part of
    the mask's definition), but no whole-tensor mask is ever held, and each chunk is mixed while it
    is in cache. ρ = 1 and ρ = 0 draw nothing and return θ_B itself, or θ_Pre in θ_B's dtype (no copy
    when the dtypes agree).
    """
    import torch

    if finetuned.shape != pretrained.shape:
        raise ValueError(f"{name}: shapes differ {tuple(finetuned.shape)} vs {tuple(pretrained.shape)}")
    if ratio >= 1.0:
        return finetuned, finetuned.numel()
    if ratio <= 0.0:
        return pretrained.to(finetuned.dtype), 0
    mixed = torch.empty(finetuned.shape, dtype=finetuned.dtype)
    out, kept_from, rest = mixed.view(-1), finetuned.reshape(-1), pretrained.reshape(-1)
    threshold, kept = _threshold16(ratio), 0
    for index, start in enumerate(range(0, out.numel(), chunk)):
        stop = min(out.numel(), start + chunk)
        keep = _chunk_keep(seed, name, index, stop - start, threshold)
        select(keep, kept_from[start:stop], rest[start:stop].to(finetuned.dtype), out[start:stop])
        kept += int(keep.count_nonzero())
    return mixed, kept


def kept_count(numel: int, ratio: float) -> int:
    """Number of elements ``sel`` keeps out of ``numel``."""
    return min(numel, max(0, int(round(ratio * numel))))


def sel_keep_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float) -> "torch.Tensor":
    """Keep exactly the ⌊ρ·n⌉ entries with the largest |θ_B − θ_Pre| (ties: lowest index): everything above
    the k-th largest, found by a radix select (linear, unlike a sort; core/topk.py), and of the entries
    equal to it the first ones up to exactly k, the order a stable descending sort gives."""
    import torch

    n, k = finetuned.numel(), kept_count(finetuned.numel(), ratio)
    if k in (0, n):
        return torch.full(tuple(finetuned.shape), k == n, dtype=torch.bool)
    keep = torch.empty(n, dtype=torch.bool)
    for part, mask in topk.top_k_change_masks(finetuned, pretrained, k, SELECT_BLOCK):
        torch.ne(mask, 0, out=keep[part])
    return keep.view(finetuned.shape)


def sel_mix(finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float) -> tuple["torch.Tensor", int]:
    """(θ_Mix, entries kept) under ``sel_keep_mask``'s mask, each block selected as its mask is made (no
    whole-tensor mask); ρ = 1 and ρ = 0 return θ_B itself, or θ_Pre in θ_B's dtype."""
    import torch

    n, k = finetuned.numel(), kept_count(finetuned.numel(), ratio)
    if k == n:
        return finetuned, n
    if k == 0:
        return pretrained.to(finetuned.dtype), 0
    itype = integer_view_type(finetuned)
    if itype is None:  # wider than 8 bytes: through a bool mask
        keep = sel_keep_mask(finetuned, pretrained, ratio)
        return apply_mask(finetuned, pretrained, keep), k
    mixed = torch.empty(finetuned.shape, dtype=finetuned.dtype)
    out, kept_from = mixed.view(-1).view(itype), finetuned.reshape(-1).view(itype)
    rest = pretrained.to(finetuned.dtype).reshape(-1).view(itype)
    for part, mask in topk.top_k_change_masks(finetuned, pretrained, k, SELECT_BLOCK):
        select_by_bits(mask.to(itype), kept_from[part], rest[part], out[part])
    return mixed, k


def global_threshold(abs_changes: "torch.Tensor", ratio: float) -> float:
    """Smallest |Δ| kept when ``sel`` keeps a fraction ρ of all elements of the model.

    ``abs_changes`` is the flattened |θ_B − θ_Pre| of every mixed tensor.
    Returns +inf when nothing is kept.
    """
    k = kept_count(abs_changes.numel(), ratio)
    if k == 0:
        return float("inf")
    return float(topk.kth_largest(abs_changes.float().flatten(), k))


def threshold_keep_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", threshold: float) -> "torch.Tensor":
    """Global ``sel``: keep entries whose |θ_B − θ_Pre| reaches the model-wide threshold."""
    return (finetuned.float() - pretrained.float()).abs() >= threshold


def apply_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", keep: "torch.Tensor") -> "torch.Tensor":
    """θ_Mix = m ⊙ θ_B + (1 − m) ⊙ θ_Pre, in θ_B's dtype.

    Always a new tensor: writing into ``pretrained`` was measured 35 % slower on a
    0.94 GB mix (the tensor safetensors returns is backed by the file mapping).
    """
    import torch

    mixed = torch.empty(finetuned.shape, dtype=finetuned.dtype)
    select(keep.reshape(-1), finetuned.reshape(-1), pretrained.to(finetuned.dtype).reshape(-1), mixed.view(-1))
    return mixed


def apply_mask_to_delta(pretrained: "torch.Tensor", delta: "torch.Tensor", keep: "torch.Tensor") -> "torch.Tensor":
    """θ_Pre + m ⊙ Δ for a source that holds Δ itself (an adapter), in θ_Pre's dtype."""
    import torch

    return pretrained + torch.where(keep, delta.to(pretrained.dtype), torch.zeros((), dtype=pretrained.dtype))


def keep_mask(
    finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float, mode: str, seed: int, name: str,
    threshold: "float | None" = None,
) -> "torch.Tensor":
    """The keep-mask m for one tensor: ``random``, per-tensor ``sel``, or global ``sel`` when the
    model-wide ``threshold`` (``global_threshold``) is given."""
    if finetuned.shape != pretrained.shape:
        raise ValueError(f"{name}: shapes differ {tuple(finetuned.shape)} vs {tuple(pretrained.shape)}")
    if threshold is not None:
        return threshold_keep_mask(finetuned, pretrained, threshold)
    if mode == "random":
        return random_keep_mask(finetuned.shape, ratio, seed, name)
    if mode == "sel":
        return sel_keep_mask(finetuned, pretrained, ratio)
    raise ValueError(f"unknown mix mode {mode!r}")


def mix_tensor(
    finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float, mode: str, seed: int, name: str,
    threshold: "float | None" = None,
) -> tuple["torch.Tensor", int]:
    """(θ_Mix, number of entries kept) for one tensor: the function the production mix calls.

    ``random`` is drawn and applied in chunks (``random_mix``), per-tensor ``sel`` selected block by block
    as its mask is made (``sel_mix``); neither needs a mask at ρ = 0 or 1. Global ``sel`` goes through
    ``keep_mask`` and ``apply_mask``.
    """
    if mode == "random" and threshold is None:
        return random_mix(finetuned, pretrained, ratio, seed, name)
    if mode == "sel" and threshold is None:
        return sel_mix(finetuned, pretrained, ratio)
    keep = keep_mask(finetuned, pretrained, ratio, mode, seed, name, threshold)
    return apply_mask(finetuned, pretrained, keep), int(keep.count_nonzero())
