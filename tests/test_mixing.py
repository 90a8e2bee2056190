"""Property tests of the Fine-mixing formula (no models involved)."""

import contextlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finemix.core import bitselect, mixing, topk


def pair(shape=(64, 48), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("mode", ["random", "sel"])
def test_ratio_one_gives_finetuned_and_zero_gives_pretrained(mode):
    ft, pre = pair()
    assert torch.equal(mixing.mix_tensor(ft, pre, 1.0, mode, 0, "w")[0], ft)
    assert torch.equal(mixing.mix_tensor(ft, pre, 0.0, mode, 0, "w")[0], pre)


@settings(max_examples=40, deadline=None)
@given(ratio=st.floats(0.0, 1.0), seed=st.integers(0, 2**31), name=st.text(min_size=1, max_size=20))
def test_random_kept_fraction_within_binomial_bounds(ratio, seed, name):
    n = 20_000
    kept = int(mixing.random_keep_mask((n,), ratio, seed, name).sum())
    # The generator draws at 1/65536 resolution (mixing._threshold16): its keep probability is ρ rounded to
    # that step, and at least one step for 0 < ρ (hypothesis found ρ = 1.2e-38 keeping 2 of 20,000).
    if 0.0 < ratio < 1.0:
        p = mixing._threshold16(ratio) / 65536
        assert abs(p - ratio) <= 1 / 65536
    else:
        p = ratio
    # 6 standard deviations: a false alarm has probability ~1e-9 per example.
    bound = 6 * math.sqrt(n * p * (1 - p)) + 1
    assert abs(kept - n * p) <= bound


def test_every_element_is_from_one_side_and_mask_matches():
    ft, pre = pair()
    keep = mixing.random_keep_mask(ft.shape, 0.4, 3, "layer.w")
    mixed = mixing.apply_mask(ft, pre, keep)
    assert torch.equal(mixed[keep], ft[keep])
    assert torch.equal(mixed[~keep], pre[~keep])


def test_no_rescaling_of_kept_entries():
    ft, pre = pair()
    mixed, _ = mixing.mix_tensor(ft, pre, 0.5, "random", 0, "w")
    assert set(torch.unique((mixed == ft) | (mixed == pre)).tolist()) == {True}


PINNED_MASK = "100011000000000100000000"  # v2, seed 0, ρ = 0.3, "bert.embeddings.word_embeddings.weight"


def test_random_mix_at_the_ends_draws_nothing():
    ft, pre = pair((64, 64))
    assert torch.equal(mixing.random_mix(ft, pre, 1.0, 0, "w")[0], ft) and mixing.random_mix(ft, pre, 1.0, 0, "w")[1] == ft.numel()
    assert torch.equal(mixing.random_mix(ft, pre, 0.0, 0, "w")[0], pre) and mixing.random_mix(ft, pre, 0.0, 0, "w")[1] == 0


def test_random_mask_is_pinned():
    """The published masks: v2's first bits for one (seed, name) are fixed, so a change of generator cannot
    pass silently (bump MASK_GENERATOR when it changes)."""
    keep = mixing.random_keep_mask((24,), 0.3, 0, "bert.embeddings.word_embeddings.weight")
    assert "".join("1" if bit else "0" for bit in keep.tolist()) == PINNED_MASK
    assert mixing.MASK_GENERATOR.startswith("v2:")


def test_each_chunk_of_a_random_mask_is_drawn_on_its_own():
    """Chunks are independent: the mask of the second chunk is the same whatever precedes it, so chunks
    can be drawn in any order or on any thread."""
    whole = mixing.random_keep_mask((10,), 0.5, 4, "w", chunk=4)
    assert torch.equal(whole[4:8], mixing._chunk_keep(4, "w", 1, 4, mixing._threshold16(0.5)))
    assert torch.equal(mixing.random_keep_mask((7,), 0.5, 4, "w", chunk=4), whole[:7])  # a shorter tensor: a prefix
    assert abs(mixing._threshold16(0.3) / 65536 - 0.3) < 2**-16 and mixing._threshold16(1e-9) == 1


def test_random_mask_depends_only_on_seed_and_name():
    a = mixing.random_keep_mask((100, 10), 0.3, 7, "encoder.layer.0.w")
    b = mixing.random_keep_mask((100, 10), 0.3, 7, "encoder.layer.0.w")
    assert torch.equal(a, b)
    # generating other masks in between (another tensor order) changes nothing
    mixing.random_keep_mask((5,), 0.3, 7, "other")
    torch.rand(1000)
    assert torch.equal(a, mixing.random_keep_mask((100, 10), 0.3, 7, "encoder.layer.0.w"))
    assert not torch.equal(a, mixing.random_keep_mask((100, 10), 0.3, 8, "encoder.layer.0.w"))
    assert not torch.equal(a, mixing.random_keep_mask((100, 10), 0.3, 7, "encoder.layer.1.w"))


def test_tensor_seed_is_stable_across_runs():
    # a fixed value: masks published in reports stay reproducible across versions
    assert mixing.tensor_seed(0, "bert.embeddings.word_embeddings.weight") == 8120074543567824735
    assert mixing.tensor_seed(0, "a") != mixing.tensor_seed(1, "a")
    assert 0 <= mixing.tensor_seed(123, "x") < 2**63


@settings(max_examples=40, deadline=None)
@given(ratio=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_sel_keeps_exactly_the_largest_changes(ratio, seed):
    ft, pre = pair((37, 11), seed)
    keep = mixing.sel_keep_mask(ft, pre, ratio)
    change = (ft - pre).abs()
    k = mixing.kept_count(change.numel(), ratio)
    assert int(keep.sum()) == k
    if 0 < k < change.numel():
        assert change[keep].min() >= change[~keep].max()


@settings(max_examples=60, deadline=None)
@given(ratio=st.floats(0.0, 1.0), seed=st.integers(0, 1000), levels=st.integers(1, 6))
def test_sel_equals_a_stable_sort_even_with_many_ties(ratio, seed, levels):
    """The selection-based mask is the one a stable descending sort gives (ties: lowest index)."""
    generator = torch.Generator().manual_seed(seed)
    ft = torch.randint(0, levels, (13, 7), generator=generator).float()  # few distinct |Δ|: many ties
    pre = torch.zeros(13, 7)
    k = mixing.kept_count(ft.numel(), ratio)
    reference = torch.zeros(ft.numel(), dtype=torch.bool)
    reference[torch.sort(ft.flatten(), descending=True, stable=True).indices[:k]] = True
    assert torch.equal(mixing.sel_keep_mask(ft, pre, ratio), reference.view(13, 7))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 3000), k_share=st.floats(0.0, 1.0),
       kind=st.sampled_from(["normal", "ties", "zeros", "spread"]))
def test_kth_largest_equals_kthvalue(seed, size, k_share, kind):
    """The radix step finds the same k-th largest as a kthvalue over everything: random values, many ties,
    mostly zeros, and values spread over many binary orders of magnitude (many buckets)."""
    generator = torch.Generator().manual_seed(seed)
    values = {"normal": lambda: torch.randn(size, generator=generator).abs() * 1e-3,
              "ties": lambda: torch.randint(0, 4, (size,), generator=generator).float(),
              "zeros": lambda: torch.where(torch.rand(size, generator=generator) < 0.9, 0.0, 1.0),
              "spread": lambda: torch.exp(torch.randn(size, generator=generator) * 20).clamp(max=3e38)}[kind]()
    k = max(1, min(size, round(k_share * size)))
    assert topk.kth_largest(values, k) == values.kthvalue(size - k + 1).values


def test_sel_ties_are_deterministic():
    ft = torch.ones(10)
    pre = torch.zeros(10)
    keep = mixing.sel_keep_mask(ft, pre, 0.3)
    assert keep.tolist() == [True] * 3 + [False] * 7


def test_global_threshold_keeps_ratio_of_all_elements():
    tensors = [pair((20, 20), s) for s in range(3)]
    changes = torch.cat([(f - p).abs().flatten() for f, p in tensors])
    threshold = mixing.global_threshold(changes, 0.25)
    kept = sum(int(mixing.threshold_keep_mask(f, p, threshold).sum()) for f, p in tensors)
    assert kept == mixing.kept_count(changes.numel(), 0.25)
    assert mixing.global_threshold(changes, 0.0) == float("inf")


def test_dtype_is_preserved():
    ft, pre = pair()
    mixed, _ = mixing.mix_tensor(ft.to(torch.bfloat16), pre, 0.5, "random", 0, "w")
    assert mixed.dtype == torch.bfloat16


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        mixing.mix_tensor(torch.zeros(3), torch.zeros(4), 0.5, "random", 0, "w")


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), chunk=st.integers(1, 300), ratio=st.floats(0.01, 0.99),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), seed=st.integers(0, 2**31))
def test_chunked_random_mix_equals_the_whole_tensor_mask_in_the_input_dtype(rows, cols, chunk, ratio, dtype, seed):
    """The production mix draws the mask in chunks: same mask bit for bit, output in θ_B's own dtype."""
    ft, pre = pair((rows, cols), seed % 1000)
    ft, pre = ft.to(dtype), pre.to(dtype)
    mixed, kept = mixing.random_mix(ft, pre, ratio, seed, "layer.w", chunk=chunk)
    keep = mixing.random_keep_mask(ft.shape, ratio, seed, "layer.w", chunk=chunk)
    assert mixed.dtype == dtype and mixed.shape == ft.shape
    assert torch.equal(mixed, mixing.apply_mask(ft, pre, keep)) and kept == int(keep.sum())


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 700), block=st.integers(1, 300), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8,
                              torch.complex64, torch.complex128]))
def test_select_copies_the_same_bits_as_torch_where(size, block, seed, dtype):
    """Every bit pattern (NaN payloads, -0.0, infinities) comes through unchanged, across block edges."""
    g = torch.Generator().manual_seed(seed)
    width = size * torch.empty(0, dtype=dtype).element_size()
    kept_from, rest = (torch.randint(0, 256, (width,), dtype=torch.uint8, generator=g).view(dtype) for _ in range(2))
    keep = torch.rand(size, generator=g) < 0.5
    out = torch.empty(size, dtype=dtype)
    bitselect.select(keep, kept_from, rest, out, block=block)
    expected = torch.where(keep, kept_from, rest)
    assert torch.equal(out.view(torch.uint8), expected.view(torch.uint8))


@pytest.mark.parametrize("seed", range(6))
def test_sel_across_many_blocks_equals_a_stable_sort(seed, monkeypatch):
    """The blocked passes (|Δ|, both histograms, the masks and ties) cut every few elements give the same
    mask and k-th largest as whole-tensor references, and sel_mix the same θ_Mix as that mask applied:
    bf16 inputs, few distinct |Δ|, many ties; then other dtypes."""
    monkeypatch.setattr(topk, "_RADIX_BLOCK", 7)
    monkeypatch.setattr(mixing, "SELECT_BLOCK", 5)
    generator = torch.Generator().manual_seed(seed)
    pre = torch.randn(41, 9, generator=generator).bfloat16()
    ft = (pre.float() + torch.randint(-2, 3, (41, 9), generator=generator) * 2.0**-6).bfloat16()
    change = (ft.float() - pre.float()).abs().flatten()
    assert torch.equal(topk.abs_change(ft, pre), change)
    for ratio in (0.0, 0.05, 0.3, 0.5, 0.97, 1.0):
        k = mixing.kept_count(change.numel(), ratio)
        if 0 < k:
            assert topk.kth_largest(change, k) == change.kthvalue(change.numel() - k + 1).values
        reference = torch.zeros(change.numel(), dtype=torch.bool)
        reference[torch.sort(change, descending=True, stable=True).indices[:k]] = True
        assert torch.equal(mixing.sel_keep_mask(ft, pre, ratio), reference.view(41, 9))
        for ft_dtype, pre_dtype in ((torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
                                    (torch.float16, torch.float32), (torch.float64, torch.float64)):
            a, b = ft.to(ft_dtype), pre.to(pre_dtype)
            mixed, kept = mixing.mix_tensor(a, b, ratio, "sel", 0, "w")
            expected = mixing.apply_mask(a, b, mixing.sel_keep_mask(a, b, ratio))
            assert kept == k and mixed.dtype == ft_dtype and torch.equal(mixed, expected)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(2, 600), ratio=st.floats(0.001, 0.999),
       kind=st.sampled_from(["normal", "ties", "zeros", "bf16", "rows"]), route=st.sampled_from(["gather", "sample",
       "sample-missed", "histograms"]), radix_block=st.integers(1, 64), mask_block=st.integers(1, 64))
def test_sel_by_every_route_keeps_the_stable_sort_top_k(seed, size, ratio, kind, route, radix_block, mask_block):
    """Every way to find the boundary (the exact bucket gathered; a sampled range gathered; a sample that
    missed it, or a crowded range, falling back; both histogram passes) keeps exactly the stable-sort top k,
    across block edges, with many ties, and with rows whose |Δ| differ (what a strided sample can misjudge)."""
    from unittest import mock

    generator = torch.Generator().manual_seed(seed)
    pre = torch.randn(size, generator=generator)
    step = {"normal": lambda: torch.randn(size, generator=generator) * 1e-2,
            "ties": lambda: torch.randint(-2, 3, (size,), generator=generator) * 0.25,
            "zeros": lambda: torch.where(torch.rand(size, generator=generator) < 0.9, 0.0, 1.0),
            "bf16": lambda: torch.randint(-3, 4, (size,), generator=generator) * 2.0**-6,
            "rows": lambda: torch.randn(size, generator=generator) * 10.0 ** (torch.arange(size) // 16 % 3)}[kind]()
    ft = pre + step
    if kind == "bf16":
        ft, pre = ft.bfloat16(), pre.bfloat16()
    change = (ft.float() - pre.float()).abs()
    k = mixing.kept_count(size, ratio)
    reference = torch.zeros(size, dtype=torch.bool)
    reference[torch.sort(change, descending=True, stable=True).indices[:k]] = True
    patches = {"gather": {"_GATHER_AT_MOST": 0}, "sample": {"_SAMPLED_FROM": 1, "_SAMPLE_STRIDE": 3, "_GATHER_AT_MOST": 0},
               "sample-missed": {"_SAMPLED_FROM": 1, "_SAMPLE_STRIDE": 5, "_MARGIN_SIGMAS": 0},
               "histograms": {"_GATHER_AT_MOST": 1 << 40}}[route]
    with contextlib.ExitStack() as stack:
        for name, value in {**patches, "_RADIX_BLOCK": radix_block}.items():
            stack.enter_context(mock.patch.object(topk, name, value))
        stack.enter_context(mock.patch.object(mixing, "SELECT_BLOCK", mask_block))
        assert torch.equal(mixing.sel_keep_mask(ft, pre, ratio), reference)
        mixed, kept = mixing.sel_mix(ft, pre, ratio)
    assert kept == k and torch.equal(mixed, mixing.apply_mask(ft, pre, reference))


def test_range_members_lists_the_range_in_index_order_and_counts_what_is_above():
    bits = torch.tensor([5 << 16, 3, (5 << 16) | 7, 6 << 16, (5 << 16) | 1, 9 << 16], dtype=torch.int32)
    indices, patterns, above = topk.range_members(bits, 5 << 16, 6 << 16)
    assert indices.tolist() == [0, 2, 4] and patterns.tolist() == [5 << 16, (5 << 16) | 7, (5 << 16) | 1]
    assert above == 2
    assert topk.largest_of(indices, patterns, 2).tolist() == [2, 4]  # the two largest of them, in index order


def test_a_sampled_boundary_range_widens_with_the_margin():
    high = torch.zeros(1 << 15, dtype=torch.int64)
    high[100:1100] = 10  # 10,000 sampled entries, 10 a bucket
    assert topk.boundary_range(high, 1, 10_000, 25) == (1097 << 16, 1098 << 16)  # exact: the 25th largest's bucket
    # every 4th of 40,000 entries: sample rank 25 ± 6 (σ + 1) = 36 covers ranks 1-61, buckets 1093-1099
    assert topk.boundary_range(high, 4, 40_000, 100) == (1093 << 16, 1100 << 16)
    assert topk.boundary_range(high, 4, 2_000, 100) is None  # 280 entries in the range: over 1/8 of 2,000


def test_reused_change_buffers_give_the_same_masks_and_are_freed_on_exit():
    """Tensors of growing and shrinking sizes, mixed one after another in one thread (the buffer is reused,
    then replaced by a larger one) and on two worker threads, give exactly the masks of fresh buffers."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = [pair(shape, seed) for seed, shape in enumerate([(30, 20), (50, 40), (10, 7), (64, 48), (3, 3)])]
    expected = [mixing.sel_mix(f, p, 0.3)[0] for f, p in pairs]
    with topk.reused_change_buffers():
        assert all(torch.equal(mixing.sel_mix(f, p, 0.3)[0], e) for (f, p), e in zip(pairs, expected))
        assert topk._HELD.change.numel() == 64 * 48  # grown to the largest, held between tensors
        with ThreadPoolExecutor(max_workers=2) as pool:
            mixed = list(pool.map(lambda fp: mixing.sel_mix(*fp, 0.3)[0], pairs * 3))
        assert all(torch.equal(m, e) for m, e in zip(mixed, expected * 3))
    assert not hasattr(topk._HELD, "change")
    first = topk.abs_change(*pairs[0])
    topk.abs_change(*pairs[1])
    assert torch.equal(first, (pairs[0][0] - pairs[0][1]).abs().flatten())  # outside: a fresh buffer per call
