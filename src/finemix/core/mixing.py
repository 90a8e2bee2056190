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


_SELECT_BLOCK = 1 << 18  # elements per step of ``select``: fits a core's cache (the fastest of 64K-4M measured)
_SAME_WIDTH_INT = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def select(keep: "torch.Tensor", kept_from: "torch.Tensor", rest: "torch.Tensor", out: "torch.Tensor",
           block: int = _SELECT_BLOCK) -> None:
    """out = kept_from where keep, else rest: flat tensors of one dtype, copied bit for bit.

    As integer bit operations on same-width views, r ^ ((r ^ k) & m) with m all ones where kept, one
    cache-sized block at a time: torch.where has no vectorised bf16 path on CPU (measured on 4M
    elements: 2.5 ns an element against 0.4 for this in bf16, 2.5 against about 1 in fp32).
    """
    import torch

    width = _SAME_WIDTH_INT.get(kept_from.element_size())
    if width is None:  # complex128 and wider: no integer of that width
        torch.where(keep, kept_from, rest, out=out)
        return
    itype = getattr(torch, width)
    kept_bits, rest_bits, out_bits = kept_from.view(itype), rest.view(itype), out.view(itype)
    for start in range(0, out.numel(), block):
        part = slice(start, start + block)
        bits, base = out_bits[part], rest_bits[part]
        torch.bitwise_xor(base, kept_bits[part], out=bits)
        bits.bitwise_and_(keep[part].to(itype).neg_())
        bits.bitwise_xor_(base)


def kept_count(numel: int, ratio: float) -> int:
    """Number of elements ``sel`` keeps out of ``numel``."""
    return min(numel, max(0, int(round(ratio * numel))))


_RADIX_BLOCK = 1 << 20  # elements per step of the passes below (cache-sized; no whole-tensor temporaries)


def _block_starts(n: int) -> range:
    return range(0, n, _RADIX_BLOCK)


def _bucket_from_top(counts: "torch.Tensor", k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest entry, entries in higher buckets) of a histogram."""
    import torch

    from_top = counts.flip(0).cumsum(0)  # entries in the top i+1 buckets
    index = int(torch.searchsorted(from_top, torch.tensor(k, dtype=from_top.dtype)))
    bucket = counts.numel() - 1 - index
    return bucket, int(from_top[index]) - int(counts[bucket])


def _high_counts(bits: "torch.Tensor") -> "torch.Tensor":
    """Histogram of the top 16 bits of non-negative float32 patterns (2^15 buckets)."""
    import torch

    return torch.bincount(bits >> 16, minlength=1 << 15)


def _kth_from_counts(bits: "torch.Tensor", high: "torch.Tensor", k: int) -> "torch.Tensor":
    """``kth_largest`` given the top-bits histogram of ``bits``: the low 16 bits of the entries in the
    bucket that holds the k-th largest, counted by offsetting every pattern to that bucket's start and
    clamping the rest into two spare bins (a boolean gather measured 4× slower when the bucket is large)."""
    import torch

    bucket, above = _bucket_from_top(high, k)
    low = torch.zeros((1 << 16) + 2, dtype=torch.int64)
    for start in _block_starts(bits.numel()):
        offset = (bits[start:start + _RADIX_BLOCK] - ((bucket << 16) - 1)).clamp_(0, (1 << 16) + 1)
        low += torch.bincount(offset, minlength=(1 << 16) + 2)
    low_bucket, _ = _bucket_from_top(low[1:-1], k - above)
    return torch.tensor([(bucket << 16) | low_bucket], dtype=torch.int32).view(torch.float32)[0]


def kth_largest(values: "torch.Tensor", k: int) -> "torch.Tensor":
    """The ``k``-th largest of flat, finite, non-negative float32 ``values`` (1 ≤ k ≤ n), exactly.

    Two radix steps on the bit pattern instead of ``kthvalue`` (for non-negative floats the pattern
    orders like the value): a histogram of the top 16 bits finds the bucket that holds the k-th
    largest, a histogram of the low 16 bits of that bucket's entries the exact pattern. Linear, and
    fast when the bucket is large, as it is for |Δ| of bf16 weights (few distinct values).
    """
    import torch

    bits = values.view(torch.int32)
    high = torch.zeros(1 << 15, dtype=torch.int64)
    for start in _block_starts(bits.numel()):
        high += _high_counts(bits[start:start + _RADIX_BLOCK])
    return _kth_from_counts(bits, high, k)


def abs_change(finetuned: "torch.Tensor", pretrained: "torch.Tensor",
               high: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Flat |θ_B − θ_Pre| in float32, as (θ_B.float() − θ_Pre.float()).abs() gives it, one block at a time
    (no float32 copies of the whole inputs); adds the blocks' top-bits histogram to ``high`` when given."""
    import torch

    flat_ft, flat_pre = finetuned.reshape(-1), pretrained.reshape(-1)
    change = torch.empty(flat_ft.numel(), dtype=torch.float32)
    for start in _block_starts(change.numel()):
        part = slice(start, start + _RADIX_BLOCK)
        block = change[part].copy_(flat_ft[part]).sub_(flat_pre[part].float()).abs_()
        if high is not None:
            high += _high_counts(block.view(torch.int32))
    return change


def _first_true_prefix(flags: "torch.Tensor", count: int) -> int:
    """The shortest prefix of flat bool ``flags`` that holds ``count`` ≥ 1 True entries (its length)."""
    import torch

    seen = 0
    for start in _block_starts(flags.numel()):
        here = int(flags[start:start + _RADIX_BLOCK].count_nonzero())
        if seen + here >= count:
            inside = torch.nonzero(flags[start:start + _RADIX_BLOCK]).flatten()
            return start + int(inside[count - seen - 1]) + 1
        seen += here
    raise ValueError(f"fewer than {count} entries are set")


def sel_keep_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float) -> "torch.Tensor":
    """Keep exactly the ⌊ρ·n⌉ entries with the largest |θ_B − θ_Pre| (ties: lowest index)."""
    import torch

    n, k = finetuned.numel(), kept_count(finetuned.numel(), ratio)
    if k in (0, n):
        return torch.full(tuple(finetuned.shape), k == n, dtype=torch.bool)
    # The k-th largest value by selection (linear time, unlike a sort): everything above it
    # is kept, and of the entries equal to it the lowest-index ones fill up to exactly k,
    # the order a stable descending sort would give.
    high = torch.zeros(1 << 15, dtype=torch.int64)
    change = abs_change(finetuned, pretrained, high)
    threshold = _kth_from_counts(change.view(torch.int32), high, k)
    mask = change > threshold
    ties = change == threshold
    cut = _first_true_prefix(ties, k - int(mask.count_nonzero()))
    mask[:cut] |= ties[:cut]
    return mask.view(finetuned.shape)


def global_threshold(abs_changes: "torch.Tensor", ratio: float) -> float:
    """Smallest |Δ| kept when ``sel`` keeps a fraction ρ of all elements of the model.

    ``abs_changes`` is the flattened |θ_B − θ_Pre| of every mixed tensor.
    Returns +inf when nothing is kept.
    """
    k = kept_count(abs_changes.numel(), ratio)
    if k == 0:
        return float("inf")
    return float(kth_largest(abs_changes.float().flatten(), k))


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

    ``random`` is drawn and applied in chunks (``random_mix``; at ρ = 0 or 1 it needs no mask);
    ``sel`` goes through ``keep_mask`` and ``apply_mask``.
    """
    if mode == "random" and threshold is None:
        return random_mix(finetuned, pretrained, ratio, seed, name)
    keep = keep_mask(finetuned, pretrained, ratio, mode, seed, name, threshold)
    return apply_mask(finetuned, pretrained, keep), int(keep.count_nonzero())
