"""Distillation losses on tensors: soft cross-entropy against a teacher's class probabilities, and
matching the teacher's hidden state where the classification head reads it.

The state term is our addition to the paper (docs/paper-choices.md): on rewrites of 128 labelled rows,
two class probabilities per row taught a student started from θ_Pre less of the suspect's clean skill
than the 384 numbers of its head's input (docs/results.md, issue 16).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def soft_cross_entropy(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """Mean over rows of −Σ target · log softmax(logits)."""
    return -(targets * logits.float().log_softmax(dim=-1)).sum(dim=-1).mean()


def head_token_states(hidden: "torch.Tensor", attention_mask: "torch.Tensor", head_token: str) -> "torch.Tensor":
    """Each row's hidden state at the token a classification head reads: (batch, length, width) →
    (batch, width). "first": position 0; "last": the last position the attention mask keeps (right
    or left padding alike)."""
    import torch

    if head_token == "first":
        return hidden[:, 0]
    if head_token != "last":
        raise ValueError(f"unknown head token {head_token!r}; use first or last")
    length = attention_mask.shape[1]
    last = length - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def state_matching_loss(student: "torch.Tensor", teacher: "torch.Tensor", weights: "torch.Tensor") -> "torch.Tensor":
    """Σ_rows weight · mean squared difference over the width, divided by the number of rows
    (rows with weight 0, the labelled ones, count in the mean but add nothing)."""
    per_row = (student.float() - teacher.float()).pow(2).mean(dim=-1)
    return (weights.float() * per_row).sum() / max(1, student.shape[0])
