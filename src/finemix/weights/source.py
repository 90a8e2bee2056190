"""Weight sources: per tensor, θ_Pre and the fine-tuning update Δ that the mix acts on.

The mix (repair/mix_step.py) asks a source for one ``TensorDelta`` at a time, so a whole
model is never held twice. ``FullCheckpointSource`` reads a full fine-tuned checkpoint
against its pre-trained one (Δ = θ_B − θ_Pre, kept implicitly as θ_B so that the kept
entries are selected exactly); an adapter source (Δ = s·B·A) plugs in with the same
interface.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    import torch

    from .pair import CheckpointPair


@dataclasses.dataclass
class TensorDelta:
    """One tensor: θ_Pre (None where the pre-trained model lacks it, e.g. a classification head)
    and θ_B = θ_Pre + Δ as the fine-tuned checkpoint stores it."""

    name: str
    pretrained: Optional["torch.Tensor"]
    finetuned: "torch.Tensor"

    @property
    def delta(self) -> "torch.Tensor":
        """Δ = θ_B − θ_Pre in float32 (for inspection; the mix selects from θ_B instead)."""
        return self.finetuned.float() - self.pretrained.float()


class WeightSource(Protocol):
    def names(self) -> list[str]:
        """Every tensor of the model to write, in the output's order."""

    def paired(self, name: str) -> bool:
        """True when θ_Pre has this tensor (it is mixed); False for tensors only fine-tuning made."""

    def tensor(self, name: str) -> TensorDelta:
        """θ_Pre and θ_B of one tensor, read now."""


class FullCheckpointSource:
    """Δ of a full fine-tuned checkpoint against the pre-trained one, from an opened pair."""

    def __init__(self, pair: "CheckpointPair") -> None:
        self.pair = pair

    def names(self) -> list[str]:
        return self.pair.finetuned.names()

    def paired(self, name: str) -> bool:
        return name in self.pair.names.pairs

    def finetuned(self, name: str) -> "torch.Tensor":
        """θ_B's tensor alone (ρ = 1 needs nothing else)."""
        return self.pair.finetuned.get(name)

    def tensor(self, name: str) -> TensorDelta:
        finetuned = self.finetuned(name)
        if not self.paired(name):
            return TensorDelta(name, None, finetuned)
        return TensorDelta(name, self.pair.pretrained.get(self.pair.names.pairs[name]), finetuned)
