"""The ``Task`` interface: everything the repair needs to know about what a model does.

The repair (mix, fine-tune, choose ρ) is the same for every kind of model; only these
differ: how the model is loaded, the training loss on a batch, predictions, and the
clean-data measure the ρ rule compares (held-out accuracy for a classifier; a causal
LM would use held-out response loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    import torch

    from ..data import Example


class Task(Protocol):
    name: str

    def load_model(self, folder: Path) -> "torch.nn.Module":
        """The model in ``folder``, checked; failures as one ``FinemixError`` line."""

    def new_model(self, base: Path, labels: dict[int, str]) -> "torch.nn.Module":
        """A model to fine-tune, started from the pre-trained ``base`` (attacks, clean reference models)."""

    def loss(self, model: "torch.nn.Module", batch: dict) -> "torch.Tensor":
        """Training loss of one collated batch (hard labels, or ``soft_labels`` distributions)."""

    def predict_logits(self, model, tokenizer, rows: Sequence["Example"], max_length: int) -> "torch.Tensor":
        """One output row per example, in order."""

    def clean_measure(self, model, tokenizer, rows: Sequence["Example"], max_length: int) -> float:
        """Higher is better: the measure of clean behaviour the ρ rule and model selection use."""
