"""Exact top-k of |θ_B − θ_Pre| in linear time, for ``sel``: a radix select on float32 bit patterns.

For non-negative floats the bit pattern orders like the value, so a histogram of the top 16 bits finds
the bucket that holds the k-th largest, and a histogram of the low 16 bits of that bucket's entries
the exact value (``kth_bits``: two passes, whatever the data; |Δ| of bf16 weights has few distinct values,
so one bucket can hold most entries: a kthvalue on it was 4× slower). Every pass runs one block at a time,
with no whole-tensor temporaries beyond |Δ| itself, and into scratch buffers made once per tensor: a fresh
block-sized temporary per step cost as much as the histogram it fed (``bits >> 16`` then ``bincount``:
1.67 against 0.89 ns an element, one thread, 2 MB pages on; benchmarks/profile_sel_passes.py).

``sel`` itself (``top_k_change_masks``, issue 19) takes a cheaper route where it can: the top-bits histogram
of a sample (every 16th entry of a large tensor, while |Δ| is made) names a narrow range of patterns around
the k-th; one pass counts the entries above the range and gathers those in it (under 1 % of a weight
tensor), the k-th is found among the gathered, and the masks need no tie counting. The counts check the
sample: a range that missed the k-th, or holds over 1/8 of the entries, falls back to the two exact
passes, so the masks are the same whichever route ran (tests/test_mixing.py). About half the time of the
two full passes (`sel_mix` on one loaded thread: fp32 5.4-6.6 → 3.2-3.9, bf16 6.2-7.4 → 2.9-3.1 ns an
element).
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

_RADIX_BLOCK = 1 << 20  # elements per step of the passes below (cache-sized; no whole-tensor temporaries)


# Inside ``reused_change_buffers`` each thread keeps its |Δ| buffer for its next tensor (see there).
_REUSE_DEPTH = 0
_HELD = threading.local()


@contextlib.contextmanager
def reused_change_buffers() -> Iterator[None]:
    """Within: ``abs_change`` gives each thread one float32 buffer, grown to the largest tensor it has seen,
    instead of a fresh one per tensor, whose first touch page-faults (two mixing workers on bf16
    Llama-shaped tensors, ``sel``: 3.8-9.6 against 2.2-3.9 ns an element, random mix 1.1-1.8). A result of
    ``abs_change`` is then valid until the same thread's next call. On exit the calling thread's buffer is
    freed; a worker thread's goes with the thread."""
    global _REUSE_DEPTH
    _REUSE_DEPTH += 1
    try:
        yield
    finally:
        _REUSE_DEPTH -= 1
        _HELD.__dict__.pop("change", None)


def _change_buffer(numel: int) -> "torch.Tensor":
    import torch

    if not _REUSE_DEPTH:
        return torch.empty(numel, dtype=torch.float32)
    held = getattr(_HELD, "change", None)
    if held is None or held.numel() < numel:
        _HELD.change = None  # the smaller one goes first
        held = _HELD.change = torch.empty(numel, dtype=torch.float32)
    return held[:numel]


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
    pattern, _ = kth_bits(bits, top_bits_histogram(bits), k)
    return torch.tensor([pattern], dtype=torch.int32).view(torch.float32)[0]


def top_bits_histogram(bits: "torch.Tensor") -> "torch.Tensor":
    """The top-bits histogram of every entry of flat non-negative float32 patterns, block by block."""
    import torch

    high, scratch = _no_counts(), _scratch(torch.int32)
    for start in _block_starts(bits.numel()):
        high += _high_counts(bits[start:start + _RADIX_BLOCK], scratch)
    return high


def abs_change(finetuned: "torch.Tensor", pretrained: "torch.Tensor",
               high: "torch.Tensor | None" = None, stride: int = 1) -> "torch.Tensor":
    """Flat |θ_B − θ_Pre| in float32, as (θ_B.float() − θ_Pre.float()).abs() gives it, one block at a time
    (no float32 copies of the whole inputs); adds the top-bits histogram of every ``stride``-th entry of each
    block to ``high`` when given (while the block is in cache)."""
    import torch

    flat_ft, flat_pre = finetuned.reshape(-1), pretrained.reshape(-1)
    change = _change_buffer(flat_ft.numel())
    as_float = None if flat_pre.dtype == torch.float32 else _scratch(torch.float32)  # θ_Pre's block in float32
    shifted = _scratch(torch.int32) if high is not None else None
    for start in _block_starts(change.numel()):
        part = slice(start, start + _RADIX_BLOCK)
        block = change[part].copy_(flat_ft[part])
        block.sub_(flat_pre[part] if as_float is None else as_float[:block.numel()].copy_(flat_pre[part])).abs_()
        if high is not None:
            high += _high_counts(block.view(torch.int32)[::stride], shifted)
    return change


def _at_least(values: "torch.Tensor", bound: int, scratch: "torch.Tensor") -> "torch.Tensor":
    """int32 -1 where ``values`` ≥ ``bound``, else 0: (bound - 1 - values) >> 31 in ``scratch``, no temporaries
    (patterns are < 2^31 and bound ≤ 2^31, so nothing overflows)."""
    import torch

    return torch.sub(values, bound - 1, out=scratch[:values.numel()]).neg_().bitwise_right_shift_(31)


def top_k_masks(bits: "torch.Tensor", threshold: int, ties_kept: int, block: int) -> Iterator[tuple[slice, "torch.Tensor"]]:
    """(block, int32 mask: -1 kept, 0 not) over flat non-negative float32 patterns ``bits``, block by block:
    every entry above ``threshold`` and, of those equal to it, the first ``ties_kept`` (lowest index, the
    order a stable descending sort gives). Ties are counted only until the last kept one is found. A mask
    lives in one reused buffer: use it before asking for the next."""
    import torch

    remaining, scratch = ties_kept, torch.empty(min(block, bits.numel()), dtype=torch.int32)
    for start in range(0, bits.numel(), block):
        part = slice(start, start + block)
        values = bits[part]
        if remaining == 0:
            yield part, _at_least(values, threshold + 1, scratch)  # above
            continue
        ties = int((values == threshold).count_nonzero())
        if ties <= remaining:
            remaining -= ties
            yield part, _at_least(values, threshold, scratch)  # at or above
            continue
        cut = int(torch.nonzero(values == threshold).flatten()[remaining - 1]) + 1
        mask = (threshold - values) >> 31
        mask[:cut] = (threshold - 1 - values[:cut]) >> 31
        remaining = 0
        yield part, mask


# Where the boundary (the k-th largest |Δ|) lies: tensors of at least _SAMPLED_FROM entries take it from the
# top-bits histogram of every _SAMPLE_STRIDE-th entry, widened by _MARGIN_SIGMAS binomial σ of the sample's
# rank; then one pass counts the entries above that range and gathers those in it. A sample that misses
# (the counts say so) falls back to the exact histograms, so the masks never depend on the sample.
_SAMPLE_STRIDE = 16
_SAMPLED_FROM = 1 << 22
_MARGIN_SIGMAS = 6
# Gather when the range holds at most 1/8 of the entries (fp32 weights: 0.3 % a bucket, bf16: 0.6-2.4 %,
# docs/performance.md); a crowded one (few distinct |Δ|) takes the second histogram pass, whose memory does
# not grow with it.
_GATHER_AT_MOST = 8


def boundary_range(high: "torch.Tensor", stride: int, numel: int, k: int) -> "tuple[int, int] | None":
    """Bit patterns [lo, hi) holding the k-th largest of ``numel`` entries, from ``high``, the top-bits
    histogram of every ``stride``-th one (exact with stride 1, else with the margin above); None when the
    range holds more than 1/_GATHER_AT_MOST of the entries."""
    sampled = int(high.sum())
    rank = k * sampled / numel
    margin = 0.0 if stride == 1 else _MARGIN_SIGMAS * (math.sqrt(rank * (1 - rank / sampled)) + 1)
    top, _ = _bucket_from_top(high, min(sampled, max(1, math.floor(rank - margin))))
    bottom, _ = _bucket_from_top(high, min(sampled, max(1, math.ceil(rank + margin))))
    if int(high[bottom:top + 1].sum()) * stride * _GATHER_AT_MOST > numel:
        return None
    return bottom << 16, (top + 1) << 16


def range_members(bits: "torch.Tensor", low: int, high: int) -> tuple["torch.Tensor", "torch.Tensor", int]:
    """(ascending int64 indices, patterns) of the entries of flat ``bits`` in [low, high), and how many are
    at or above ``high``, one block at a time into reused buffers: numpy's flatnonzero (torch's eq and
    nonzero measured 4× slower: 1.6 against 0.39 ns an element, one thread)."""
    import numpy as np
    import torch

    flat, size = bits.numpy(), min(_RADIX_BLOCK, bits.numel())
    offset, hit, found, above = np.empty(size, dtype=np.int32), np.empty(size, dtype=bool), [], 0
    for start in _block_starts(bits.numel()):
        block = flat[start:start + _RADIX_BLOCK]
        here = slice(0, block.size)
        above += int(np.count_nonzero(np.greater(block, high - 1, out=hit[here])))  # high - 1 < 2^31
        np.subtract(block, low, out=offset[here])
        index = np.flatnonzero(np.less(offset[here].view(np.uint32), high - low, out=hit[here]))
        if index.size:
            found.append(index + start)
    indices = torch.from_numpy(np.concatenate(found)) if found else torch.empty(0, dtype=torch.int64)
    return indices, bits[indices], above


def largest_of(indices: "torch.Tensor", patterns: "torch.Tensor", wanted: int) -> "torch.Tensor":
    """The ascending ``indices`` of the ``wanted`` largest ``patterns`` (ties: lowest index first): ``kth_bits``
    on the gathered entries only, then the entries above its k-th and the first of those equal to it."""
    threshold, greater = kth_bits(patterns, top_bits_histogram(patterns), wanted)
    tie = patterns == threshold
    return indices[(patterns > threshold) | (tie & (tie.cumsum(0) <= wanted - greater))]


def masks_with_members(bits: "torch.Tensor", bound: int, kept: "torch.Tensor",
                       block: int) -> Iterator[tuple[slice, "torch.Tensor"]]:
    """``top_k_masks``' masks given the entries kept below ``bound`` (ascending indices): every entry at or
    above ``bound``, and those; no tie counting, the kept ones are known."""
    import torch

    scratch, taken = torch.empty(min(block, bits.numel()), dtype=torch.int32), 0
    for start in range(0, bits.numel(), block):
        part = slice(start, start + block)
        mask = _at_least(bits[part], bound, scratch)
        end = int(torch.searchsorted(kept, min(start + block, bits.numel())))
        if end > taken:
            mask[kept[taken:end] - start] = -1
            taken = end
        yield part, mask


def top_k_change_masks(finetuned: "torch.Tensor", pretrained: "torch.Tensor", k: int,
                       block: int) -> Iterator[tuple[slice, "torch.Tensor"]]:
    """``top_k_masks`` of the k entries with the largest |θ_B − θ_Pre| (1 ≤ k < n): |Δ| in float32 with a
    (sampled) top-bits histogram in one pass, then the entries around the boundary gathered and the k-th
    found among them, then the masks; a crowded boundary, or a sample that missed it, takes the exact
    second radix pass instead."""
    import torch

    stride = 1 if finetuned.numel() < _SAMPLED_FROM else _SAMPLE_STRIDE
    high = _no_counts()
    bits = abs_change(finetuned, pretrained, high, stride).view(torch.int32)
    bounds = boundary_range(high, stride, bits.numel(), k)
    if bounds is not None:
        indices, patterns, above = range_members(bits, *bounds)
        if above < k <= above + indices.numel():
            return masks_with_members(bits, bounds[1], largest_of(indices, patterns, k - above), block)
    threshold, greater = kth_bits(bits, high if stride == 1 else top_bits_histogram(bits), k)
    return top_k_masks(bits, threshold, k - greater, block)
