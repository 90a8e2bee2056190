"""E-PUR (embedding purification), as pure functions on tensors.

For every vocabulary row k:
    drift      d_k = ‖e_B[k] − e_Pre[k]‖₂
    frequency  f_k = occurrences of token k in clean text the defender holds
    score      s_k = d_k / log(max(f_k, f_min))
and the N highest-scoring rows are reset to e_Pre. In clean fine-tuning a row moves
roughly with how often its token is seen; a trigger is rare yet moves far.

Choices of ours (recollection of the paper, kept as parameters): f_min = 20, N = 200,
frequencies counted on tokenised clean text *with* special tokens (what the model
sees), ties broken by lower token id.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    import torch


DRIFT_ROWS = 256  # rows differenced in float32 at a time, in one reused buffer that stays in cache


def embedding_drift(finetuned: "torch.Tensor", pretrained: "torch.Tensor", rows: int = DRIFT_ROWS) -> "torch.Tensor":
    """Per-row L2 distance between two (vocab, dim) embedding matrices, in float32, ``rows`` rows at a time
    (a bf16 embedding is never copied whole; 4,096-row float32 temporaries were twice as slow)."""
    import torch

    if finetuned.shape != pretrained.shape:
        raise ValueError(f"embedding shapes differ: {tuple(finetuned.shape)} vs {tuple(pretrained.shape)}")
    drift = torch.empty(finetuned.shape[0], dtype=torch.float32)
    buffer = torch.empty((min(rows, finetuned.shape[0]), *finetuned.shape[1:]), dtype=torch.float32)
    for start in range(0, finetuned.shape[0], rows):
        part = slice(start, start + rows)
        difference = buffer[: finetuned[part].shape[0]].copy_(finetuned[part]).sub_(pretrained[part].float())
        torch.linalg.vector_norm(difference, dim=1, out=drift[part])
    return drift


def epur_scores(drift: "torch.Tensor", frequency: "torch.Tensor", min_frequency: float = 20.0) -> "torch.Tensor":
    """s_k = d_k / log(max(f_k, f_min)); f_min > 1 keeps the denominator positive."""
    import torch

    if min_frequency <= 1.0:
        raise ValueError("min_frequency must be > 1")
    floor = torch.full_like(frequency, min_frequency, dtype=torch.float32)
    return drift.float() / torch.log(torch.maximum(frequency.float(), floor))


def top_rows(scores: "torch.Tensor", n: int) -> "torch.Tensor":
    """Indices of the ``n`` highest scores, highest first; ties go to the lower index."""
    import torch

    n = max(0, min(int(n), scores.numel()))
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return order[:n]


def reset_rows(finetuned: "torch.Tensor", pretrained: "torch.Tensor", rows: "torch.Tensor") -> "torch.Tensor":
    """A copy of ``finetuned`` whose ``rows`` are replaced by the pre-trained rows."""
    purified = finetuned.clone()
    if rows.numel():
        purified[rows] = pretrained[rows].to(finetuned.dtype)
    return purified


def token_frequencies(token_ids: Iterable[Sequence[int]], vocab_size: int) -> "torch.Tensor":
    """Occurrence count of every token id over tokenised texts (float32, length ``vocab_size``)."""
    import torch

    flat = [i for ids in token_ids for i in ids]
    if not flat:
        return torch.zeros(vocab_size, dtype=torch.float32)
    counts = torch.bincount(torch.as_tensor(flat, dtype=torch.long), minlength=vocab_size)[:vocab_size]
    return counts.float()


def select_rows(
    finetuned: "torch.Tensor", pretrained: "torch.Tensor", frequency: "torch.Tensor", top_n: int, min_frequency: float
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(rows to reset, all scores) for one embedding matrix."""
    scores = epur_scores(embedding_drift(finetuned, pretrained), frequency, min_frequency)
    return top_rows(scores, top_n), scores


def log_floor(min_frequency: float) -> float:
    """The denominator a never-seen token gets; useful when explaining scores."""
    return math.log(min_frequency)
