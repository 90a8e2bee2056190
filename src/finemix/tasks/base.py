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
    measure_name: str  # what clean_measure is, for reports
    default_patience: int  # epochs without a better held-out measure before training stops (0: never)
    # what purify distils from the suspect on unlabelled text: "predictions" (its calibrated class
    # probabilities, soft targets) or "answers" (its greedy answers to the texts as prompts)
    distils: str

    def load_model(self, folder: Path) -> "torch.nn.Module":
        """The model in ``folder``, checked; failures as one ``FinemixError`` line."""

    def new_model(self, base: Path, labels: dict[int, str]) -> "torch.nn.Module":
        """A model to fine-tune, started from the pre-trained ``base`` (attacks, clean reference models)."""

    def features(self, tokenizer, rows: Sequence, max_length: int) -> list[dict]:
        """One unpadded training feature per row (with its ``labels``)."""

    def collator(self, tokenizer):
        """Pads a list of features into a batch."""

    def loss(self, model: "torch.nn.Module", batch: dict) -> "torch.Tensor":
        """Training loss of one collated batch (hard labels, or ``soft_labels`` distributions)."""

    def clean_measure(self, model, tokenizer, rows: Sequence["Example"], max_length: int) -> float:
        """Higher is better: the measure of clean behaviour the ρ rule and model selection use."""

    def acceptance_margin(self, reference: float, rows: int, tolerance: float) -> float:
        """How far below the unrepaired model's measure a ρ candidate may fall and still be accepted."""

    def texts(self, rows: Sequence) -> list[str]:
        """The rows' texts (E-PUR's token frequencies)."""
