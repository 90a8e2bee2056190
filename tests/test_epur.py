"""Property tests of E-PUR (no models involved)."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finemix.core import epur


def test_scores_follow_the_formula():
    ft = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    pre = torch.zeros(3, 2)
    freq = torch.tensor([0.0, 100.0, 5.0])
    scores = epur.epur_scores(epur.embedding_drift(ft, pre), freq, 20.0)
    assert torch.allclose(scores, torch.tensor([5.0 / math.log(20), 1.0 / math.log(100), 0.0]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 60))
def test_resets_exactly_the_top_n_rows_and_nothing_else(seed, n):
    g = torch.Generator().manual_seed(seed)
    vocab, dim = 50, 8
    pre = torch.randn(vocab, dim, generator=g)
    ft = pre + torch.randn(vocab, dim, generator=g) * torch.rand(vocab, 1, generator=g)
    freq = torch.randint(0, 200, (vocab,), generator=g).float()
    ft_before = ft.clone()
    rows, scores = epur.select_rows(ft, pre, freq, n, 20.0)
    purified = epur.reset_rows(ft, pre, rows)
    expected = min(n, vocab)
    assert rows.numel() == expected and len(set(rows.tolist())) == expected
    reset = set(rows.tolist())
    for k in range(vocab):
        assert torch.equal(purified[k], pre[k] if k in reset else ft[k])
    if 0 < expected < vocab:
        chosen = scores[rows]
        others = scores[[k for k in range(vocab) if k not in reset]]
        assert chosen.min() >= others.max()
    assert torch.equal(ft, ft_before)  # input untouched: reset_rows copies


def test_rare_token_that_moved_far_ranks_first():
    pre = torch.zeros(5, 4)
    ft = pre.clone()
    ft[1] += 1.0  # frequent token moved a lot
    ft[3] += 0.6  # rare token moved less in absolute terms
    freq = torch.tensor([1000.0, 5000.0, 1000.0, 0.0, 1000.0])
    rows, _ = epur.select_rows(ft, pre, freq, 1, 20.0)
    # 1.2/log(20)=0.40 > 2.0/log(5000)=0.23
    assert rows.tolist() == [3]


def test_token_frequencies_counts_occurrences():
    counts = epur.token_frequencies([[1, 2, 2], [2, 4], []], 6)
    assert counts.tolist() == [0, 1, 3, 0, 1, 0]
    assert epur.token_frequencies([], 3).tolist() == [0, 0, 0]


def test_input_matrix_is_not_modified():
    pre, ft = torch.zeros(4, 2), torch.ones(4, 2)
    before = ft.clone()
    epur.reset_rows(ft, pre, torch.tensor([0, 2]))
    assert torch.equal(ft, before)


@settings(max_examples=30, deadline=None)
@given(vocab=st.integers(1, 60), dim=st.integers(1, 9), rows=st.integers(1, 70),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), seed=st.integers(0, 1000))
def test_drift_in_row_chunks_equals_the_whole_matrix_in_float32(vocab, dim, rows, dtype, seed):
    """Chunked rows (no float32 copy of a whole 16-bit embedding) give the whole-matrix norms exactly."""
    generator = torch.Generator().manual_seed(seed)
    ft, pre = (torch.randn(vocab, dim, generator=generator).to(dtype) for _ in range(2))
    expected = (ft.float() - pre.float()).norm(dim=1)
    assert torch.equal(epur.embedding_drift(ft, pre, rows=rows), expected)
