"""The Fine-mixing formula, as pure functions on tensors.

    θ_Mix = m ⊙ θ_B + (1 − m) ⊙ θ_Pre

θ_B are the (possibly backdoored) fine-tuned weights, θ_Pre the public pre-trained
ones and m a 0/1 mask that keeps a fraction ρ of θ_B. Equivalently
θ_Pre + m ⊙ (θ_B − θ_Pre): the fine-tuning update is dropped element-wise.

Choices of ours (the paper's full text was not available; see docs/paper-choices.md):
* no rescaling of kept entries (unlike DARE's 1/ρ); ρ = 1 gives θ_B, ρ = 0 gives θ_Pre;
* "random": each element kept independently with probability ρ; the generator is
  seeded from (seed, tensor name) so a mask never depends on tensor order;
* "sel": keep the ⌊ρ·n⌉ elements with the largest |θ_B − θ_Pre| (they carry most
  of the task), per tensor or over the whole model ("global").
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed derived from (run seed, tensor name) alone."""
    digest = hashlib.sha256(f"finemix:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_keep_mask(shape: "torch.Size | tuple[int, ...]", ratio: float, seed: int, name: str) -> "torch.Tensor":
    """Bernoulli(ρ) keep-mask for tensor ``name``; reproducible from (seed, name)."""
    import torch

    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    # torch.rand is in [0, 1): ρ = 0 keeps nothing and ρ = 1 keeps everything, exactly.
    return torch.rand(tuple(shape), generator=generator) < ratio


def kept_count(numel: int, ratio: float) -> int:
    """Number of elements ``sel`` keeps out of ``numel``."""
    return min(numel, max(0, int(round(ratio * numel))))


def sel_keep_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float) -> "torch.Tensor":
    """Keep exactly the ⌊ρ·n⌉ entries with the largest |θ_B − θ_Pre| (ties: lowest index)."""
    import torch

    change = (finetuned.float() - pretrained.float()).abs().flatten()
    mask = torch.zeros(change.numel(), dtype=torch.bool)
    k = kept_count(change.numel(), ratio)
    if k > 0:
        # A stable sort makes tie-breaking deterministic, unlike topk.
        order = torch.sort(change, descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask.view(finetuned.shape)


def global_threshold(abs_changes: "torch.Tensor", ratio: float) -> float:
    """Smallest |Δ| kept when ``sel`` keeps a fraction ρ of all elements of the model.

    ``abs_changes`` is the flattened |θ_B − θ_Pre| of every mixed tensor.
    Returns +inf when nothing is kept.
    """
    k = kept_count(abs_changes.numel(), ratio)
    if k == 0:
        return float("inf")
    # k-th largest = (n − k + 1)-th smallest
    return float(abs_changes.float().kthvalue(abs_changes.numel() - k + 1).values)


def threshold_keep_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", threshold: float) -> "torch.Tensor":
    """Global ``sel``: keep entries whose |θ_B − θ_Pre| reaches the model-wide threshold."""
    return (finetuned.float() - pretrained.float()).abs() >= threshold


def apply_mask(finetuned: "torch.Tensor", pretrained: "torch.Tensor", keep: "torch.Tensor") -> "torch.Tensor":
    """θ_Mix = m ⊙ θ_B + (1 − m) ⊙ θ_Pre, in θ_B's dtype."""
    import torch

    return torch.where(keep, finetuned, pretrained.to(finetuned.dtype))


def mix_tensor(
    finetuned: "torch.Tensor", pretrained: "torch.Tensor", ratio: float, mode: str, seed: int, name: str
) -> "torch.Tensor":
    """Mix one tensor with a per-tensor mask (``random`` or per-tensor ``sel``)."""
    if finetuned.shape != pretrained.shape:
        raise ValueError(f"{name}: shapes differ {tuple(finetuned.shape)} vs {tuple(pretrained.shape)}")
    if mode == "random":
        keep = random_keep_mask(finetuned.shape, ratio, seed, name)
    elif mode == "sel":
        keep = sel_keep_mask(finetuned, pretrained, ratio)
    else:
        raise ValueError(f"unknown mix mode {mode!r}")
    return apply_mask(finetuned, pretrained, keep)
