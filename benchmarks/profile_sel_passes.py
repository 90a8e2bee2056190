"""Where ``sel``'s time goes, pass by pass, on one synthetic tensor, beside the random mix; and how much each
histogram pass gains from the mix's two workers (issue 19: ``sel`` is the target still missed).

    .venv/bin/python benchmarks/profile_sel_passes.py --elements 33554432

Prints nanoseconds an element (best of ``--repeats``) for fp32 and bf16, one thread, then the histogram
passes serial against two workers (``repair.mix_step.ordered_map``, as the mix runs them). Timings of one
process on a shared machine: read them beside each other, not as absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the CLI sets it (cli/__init__.py), before torch

import torch  # noqa: E402

from finemix.core import mixing, topk  # noqa: E402
from finemix.core.bitselect import SELECT_BLOCK  # noqa: E402
from finemix.repair.mix_step import ordered_map, threads_per_worker  # noqa: E402


def pair(elements: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ_B, θ_Pre): θ_Pre ~ N(0, 1), θ_B = θ_Pre + N(0, 0.01²), in ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    pretrained = torch.randn(elements, generator=generator)
    finetuned = pretrained + 0.01 * torch.randn(elements, generator=generator)
    return finetuned.to(dtype), pretrained.to(dtype)


def ns_per_element(function, elements: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e9 / elements


def passes(finetuned: torch.Tensor, pretrained: torch.Tensor, repeats: int) -> dict[str, float]:
    """Each of ``sel``'s passes (core/topk.py) timed alone, the exact second radix pass it falls back to, and
    both mixes whole."""
    n, k = finetuned.numel(), int(0.3 * finetuned.numel())
    stride = 1 if n < topk._SAMPLED_FROM else topk._SAMPLE_STRIDE
    sampled = topk._no_counts()
    bits = topk.abs_change(finetuned, pretrained, sampled, stride).view(torch.int32)
    high = topk.top_bits_histogram(bits)
    threshold, greater = topk.kth_bits(bits, high, k)
    low, bound = topk.boundary_range(sampled, stride, n, k)
    indices, patterns, above = topk.range_members(bits, low, bound)
    kept = topk.largest_of(indices, patterns, k - above)
    steps = {
        "|Δ| float32": lambda: topk.abs_change(finetuned, pretrained),
        "|Δ| + sampled histogram": lambda: topk.abs_change(finetuned, pretrained, topk._no_counts(), stride),
        "|Δ| + full histogram": lambda: topk.abs_change(finetuned, pretrained, topk._no_counts()),
        "gather the boundary range": lambda: topk.range_members(bits, low, bound),
        "k-th among the gathered": lambda: topk.largest_of(indices, patterns, k - above),
        "masks": lambda: list(topk.masks_with_members(bits, bound, kept, SELECT_BLOCK)),
        "fallback: second radix pass": lambda: topk.kth_bits(bits, high, k),
        "fallback: masks with ties": lambda: list(topk.top_k_masks(bits, threshold, k - greater, SELECT_BLOCK)),
        "sel_mix whole": lambda: mixing.sel_mix(finetuned, pretrained, 0.3),
        "random_mix whole": lambda: mixing.random_mix(finetuned, pretrained, 0.3, 0, "w"),
    }
    timings = {name: ns_per_element(step, n, repeats) for name, step in steps.items()}
    timings["gathered share"] = indices.numel() / n
    return timings


def worker_scaling(bits: torch.Tensor, tensors: int = 4) -> tuple[float, float]:
    """(serial, two workers) ns an element of the top-bits histogram pass (``topk._high_counts``, as ``sel``
    runs it) over ``tensors`` copies of the work."""
    def histogram(_: int) -> None:
        scratch = topk._scratch(torch.int32)
        for start in topk._block_starts(bits.numel()):
            topk._high_counts(bits[start:start + topk._RADIX_BLOCK], scratch)

    elements = tensors * bits.numel()
    serial = ns_per_element(lambda: [histogram(i) for i in range(tensors)], elements, 2)
    torch.set_num_threads(2)
    with threads_per_worker(2):
        parallel = ns_per_element(lambda: list(ordered_map(histogram, range(tensors), 2)), elements, 2)
    torch.set_num_threads(1)
    return serial, parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dtype in (torch.float32, torch.bfloat16):
        finetuned, pretrained = pair(args.elements, dtype)
        for name, value in passes(finetuned, pretrained, args.repeats).items():
            print(f"{str(dtype):15s} {name:26s} {value:.4f}")
        bits = topk.abs_change(finetuned, pretrained).view(torch.int32)
        serial, parallel = worker_scaling(bits)
        print(f"{str(dtype):15s} histogram pass: one worker {serial:.2f}, two workers {parallel:.2f} ns an element"
              f" (×{serial / parallel:.2f})")


if __name__ == "__main__":
    main()
