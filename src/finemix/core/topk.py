"""Exact top-k of |θ_B − θ_Pre| in linear time, for ``sel``: a radix select on float32 bit patterns.

For non-negative floats the bit pattern orders like the value, so a histogram of the top 16 bits finds
the bucket that holds the k-th largest, and a histogram of the low 16 bits of that bucket's entries
the exact value: two passes, whatever the data (|Δ| of bf16 weights has few distinct values, so one
bucket can hold most entries: a kthvalue on it was 4× slower). Every pass runs one block at a time,
with no whole-tensor temporaries beyond |Δ| itself.
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


def _high_counts(bits: "torch.Tensor") -> "torch.Tensor":
    """Histogram of the top 16 bits of non-negative float32 patterns (2^15 buckets)."""
    import torch

    return torch.bincount(bits >> 16, minlength=1 << 15)


def kth_bits(bits: "torch.Tensor", high: "torch.Tensor", k: int) -> tuple[int, int]:
    """(bit pattern of the k-th largest of ``bits``, entries strictly above it), given ``high``, the
    top-bits histogram of ``bits``: the second pass counts the low 16 bits of the entries in the k-th's
    bucket by offsetting every pattern to that bucket's start and clamping the rest into two spare bins
    (a boolean gather measured 4× slower when the bucket is large)."""
    import torch

    bucket, above = _bucket_from_top(high, k)
    low = torch.zeros((1 << 16) + 2, dtype=torch.int64)
    for start in _block_starts(bits.numel()):
        offset = (bits[start:start + _RADIX_BLOCK] - ((bucket << 16) - 1)).clamp_(0, (1 << 16) + 1)
        low += torch.bincount(offset, minlength=(1 << 16) + 2)
    inside = low[1:-1]
    low_bucket, higher_inside = _bucket_from_top(inside, k - above)
    return (bucket << 16) | low_bucket, above + higher_inside


def kth_largest(values: "torch.Tensor", k: int) -> "torch.Tensor":
    """The ``k``-th largest of flat, finite, non-negative float32 ``values`` (1 ≤ k ≤ n), exactly."""
    import torch

    bits = values.view(torch.int32)
    high = _no_counts()
    for start in _block_starts(bits.numel()):
        high += _high_counts(bits[start:start + _RADIX_BLOCK])
    pattern, _ = kth_bits(bits, high, k)
    return torch.tensor([pattern], dtype=torch.int32).view(torch.float32)[0]


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


def top_k_masks(bits: "torch.Tensor", threshold: int, ties_kept: int, block: int) -> Iterator[tuple[slice, "torch.Tensor"]]:
    """(block, int32 mask: -1 kept, 0 not) over flat non-negative float32 patterns ``bits``, block by block:
    every entry above ``threshold`` and, of those equal to it, the first ``ties_kept`` (lowest index, the
    order a stable descending sort gives). Ties are counted only until the last kept one is found."""
    import torch

    remaining = ties_kept
    for start in range(0, bits.numel(), block):
        part = slice(start, start + block)
        values = bits[part]
        if remaining == 0:
            yield part, (threshold - values) >> 31  # -1 where above: patterns are < 2^31, so no overflow
            continue
        ties = int((values == threshold).count_nonzero())
        if ties <= remaining:
            remaining -= ties
            yield part, (threshold - 1 - values) >> 31  # at or above
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
