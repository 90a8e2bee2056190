"""Exact top-k of |θ_B − θ_Pre| in linear time, for ``sel``: a radix select on float32 bit patterns.

For non-negative floats the bit pattern orders like the value, so a histogram of the top 16 bits finds
the bucket that holds the k-th largest, and a histogram of the low 16 bits of that bucket's entries
the exact value: two passes, whatever the data (|Δ| of bf16 weights has few distinct values, so one
bucket can hold most entries: a kthvalue on it was 4× slower). Every pass runs one block at a time,
with no whole-tensor temporaries beyond |Δ| itself, and into scratch buffers made once per tensor: a fresh
block-sized temporary per step cost as much as the histogram it fed (``bits >> 16`` then ``bincount``:
1.67 against 0.89 ns an element, one thread, 2 MB pages on; benchmarks/profile_sel_passes.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

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


def _no_counts() -> "torch.Tensor":
    """An empty top-bits histogram (2^15 buckets: the non-negative float32 patterns' top 16 bits)."""
    import torch

    return torch.zeros(1 << 15, dtype=torch.int64)


def _scratch(dtype: "torch.dtype") -> "torch.Tensor":
    """A block-sized buffer for one pass's intermediate values, reused block after block."""
    import torch

    return torch.empty(_RADIX_BLOCK, dtype=dtype)


def _high_counts(bits: "torch.Tensor", scratch: "torch.Tensor") -> "torch.Tensor":
    """Histogram of the top 16 bits of non-negative float32 patterns (2^15 buckets); ``scratch`` (int32, at
    least ``bits``' length) holds the shifted patterns."""
    import torch

    return torch.bincount(torch.bitwise_right_shift(bits, 16, out=scratch[:bits.numel()]), minlength=1 << 15)


def kth_bits(bits: "torch.Tensor", high: "torch.Tensor", k: int) -> tuple[int, int]:
    """(bit pattern of the k-th largest of ``bits``, entries strictly above it), given ``high``, the
    top-bits histogram of ``bits``: the second pass counts the low 16 bits of the entries in the k-th's
    bucket by offsetting every pattern to that bucket's start and clamping the rest into two spare bins
    (a boolean gather measured 4× slower when the bucket is large)."""
    import torch

    bucket, above = _bucket_from_top(high, k)
    low = torch.zeros((1 << 16) + 2, dtype=torch.int64)
    scratch = _scratch(torch.int32)
    for start in _block_starts(bits.numel()):
        block = bits[start:start + _RADIX_BLOCK]
        offset = torch.sub(block, (bucket << 16) - 1, out=scratch[:block.numel()]).clamp_(0, (1 << 16) + 1)
        low += torch.bincount(offset, minlength=(1 << 16) + 2)
    inside = low[1:-1]
    low_bucket, higher_inside = _bucket_from_top(inside, k - above)
    return (bucket << 16) | low_bucket, above + higher_inside


def kth_largest(values: "torch.Tensor", k: int) -> "torch.Tensor":
    """The ``k``-th largest of flat, finite, non-negative float32 ``values`` (1 ≤ k ≤ n), exactly."""
    import torch

    bits = values.view(torch.int32)
    high, scratch = _no_counts(), _scratch(torch.int32)
    for start in _block_starts(bits.numel()):
        high += _high_counts(bits[start:start + _RADIX_BLOCK], scratch)
    pattern, _ = kth_bits(bits, high, k)
    return torch.tensor([pattern], dtype=torch.int32).view(torch.float32)[0]


def abs_change(finetuned: "torch.Tensor", pretrained: "torch.Tensor",
               high: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Flat |θ_B − θ_Pre| in float32, as (θ_B.float() − θ_Pre.float()).abs() gives it, one block at a time
    (no float32 copies of the whole inputs); adds the blocks' top-bits histogram to ``high`` when given."""
    import torch

    flat_ft, flat_pre = finetuned.reshape(-1), pretrained.reshape(-1)
    change = torch.empty(flat_ft.numel(), dtype=torch.float32)
    as_float = None if flat_pre.dtype == torch.float32 else _scratch(torch.float32)  # θ_Pre's block in float32
    shifted = _scratch(torch.int32) if high is not None else None
    for start in _block_starts(change.numel()):
        part = slice(start, start + _RADIX_BLOCK)
        block = change[part].copy_(flat_ft[part])
        block.sub_(flat_pre[part] if as_float is None else as_float[:block.numel()].copy_(flat_pre[part])).abs_()
        if high is not None:
            high += _high_counts(block.view(torch.int32), shifted)
    return change


def top_k_masks(bits: "torch.Tensor", threshold: int, ties_kept: int, block: int) -> Iterator[tuple[slice, "torch.Tensor"]]:
    """(block, int32 mask: -1 kept, 0 not) over flat non-negative float32 patterns ``bits``, block by block:
    every entry above ``threshold`` and, of those equal to it, the first ``ties_kept`` (lowest index, the
    order a stable descending sort gives). Ties are counted only until the last kept one is found. A mask
    lives in one reused buffer: use it before asking for the next."""
    import torch

    remaining, scratch = ties_kept, torch.empty(min(block, bits.numel()), dtype=torch.int32)

    def at_least(values: "torch.Tensor", bound: int) -> "torch.Tensor":  # -1 where values ≥ bound
        # (bound - 1 - values) >> 31 without temporaries: patterns are < 2^31, so no overflow
        return torch.sub(values, bound - 1, out=scratch[:values.numel()]).neg_().bitwise_right_shift_(31)

    for start in range(0, bits.numel(), block):
        part = slice(start, start + block)
        values = bits[part]
        if remaining == 0:
            yield part, at_least(values, threshold + 1)  # above
            continue
        ties = int((values == threshold).count_nonzero())
        if ties <= remaining:
            remaining -= ties
            yield part, at_least(values, threshold)  # at or above
            continue
        cut = int(torch.nonzero(values == threshold).flatten()[remaining - 1]) + 1
        mask = (threshold - values) >> 31
        mask[:cut] = (threshold - 1 - values[:cut]) >> 31
        remaining = 0
        yield part, mask


def top_k_change_masks(finetuned: "torch.Tensor", pretrained: "torch.Tensor", k: int,
                       block: int) -> Iterator[tuple[slice, "torch.Tensor"]]:
    """``top_k_masks`` of the k entries with the largest |θ_B − θ_Pre| (1 ≤ k < n): |Δ| in float32 with its
    histogram in one pass, the k-th largest by the second radix pass, then the masks."""
    import torch

    high = _no_counts()
    bits = abs_change(finetuned, pretrained, high).view(torch.int32)
    threshold, greater = kth_bits(bits, high, k)
    return top_k_masks(bits, threshold, k - greater, block)
