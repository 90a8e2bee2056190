"""Fine-mixing of a LoRA adapter, as pure functions on tensors, in Δ form.

A LoRA adapter on a linear weight W₀ (out × in) holds A (r × in) and B (out × r); the merged
weight is W₀ + Δ with Δ = s·B·A, s = α/r (α/√r with rsLoRA). Fine-mixing acts on Δ, at one
of two granularities (docs/paper-choices.md):

* **element**: θ_Mix = W₀ + m ⊙ Δ with the element mask of ``core.mixing`` (the same mask a
  full checkpoint of the merged model would get). m ⊙ Δ is no longer of rank r: the result is a
  merged weight, or an adapter re-factored by truncated SVD at rank r (``refactor``), whose
  relative reconstruction error the report gives.
* **component**: Δ = Σₖ s·bₖ·aₖ is a sum of r rank-1 components (column k of B times row k of
  A); keep round(ρ·r) of them, chosen at random from (seed, module), and zero the others. The
  result is an adapter of the same rank and target modules.

Masking A and B element-wise is not Fine-mixing (the product of two masked factors is not a
masked product), so it is not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .mixing import kept_count, tensor_seed

if TYPE_CHECKING:
    import torch


def lora_scale(rank: int, alpha: float, rslora: bool = False) -> float:
    """s = α/r, or α/√r for rsLoRA."""
    return alpha / (rank ** 0.5 if rslora else rank)


def lora_delta(lora_a: "torch.Tensor", lora_b: "torch.Tensor", scale: float) -> "torch.Tensor":
    """Δ = s·B·A in float32 (out × in), for one module."""
    return (lora_b.float() @ lora_a.float()) * scale


def component_keep_mask(rank: int, ratio: float, seed: int, name: str) -> "torch.Tensor":
    """Which of the r rank-1 components to keep: exactly round(ρ·r), a random choice reproducible from (seed, name)."""
    import numpy as np
    import torch

    order = np.random.Generator(np.random.SFC64(tensor_seed(seed, f"lora-components:{name}"))).permutation(rank)
    keep = torch.zeros(rank, dtype=torch.bool)
    keep[torch.from_numpy(order[: kept_count(rank, ratio)])] = True
    return keep


def component_sel_mask(lora_a: "torch.Tensor", lora_b: "torch.Tensor", ratio: float) -> "torch.Tensor":
    """``sel`` for components: keep the round(ρ·r) with the largest ‖bₖ‖·‖aₖ‖ (the Frobenius norm of
    each rank-1 term, how far it moves the weight); ties go to the lower index."""
    import torch

    size = lora_b.float().norm(dim=0) * lora_a.float().norm(dim=1)
    order = sorted(range(size.numel()), key=lambda k: (-float(size[k]), k))
    keep = torch.zeros(size.numel(), dtype=torch.bool)
    keep[order[: kept_count(size.numel(), ratio)]] = True
    return keep


def mask_components(lora_a: "torch.Tensor", lora_b: "torch.Tensor", keep: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(A, B) with the dropped components' rows of A and columns of B set to zero: Δ becomes Σ over kept k."""
    return lora_a * keep[:, None].to(lora_a.dtype), lora_b * keep[None, :].to(lora_b.dtype)


def refactor(delta: "torch.Tensor", rank: int, scale: float) -> tuple["torch.Tensor", "torch.Tensor", float]:
    """(A, B, relative error) with s·B·A the best rank-``rank`` approximation of ``delta`` (truncated SVD,
    the singular values split evenly between the factors); error = ‖Δ − s·B·A‖_F / ‖Δ‖_F (0 for Δ = 0)."""
    import torch

    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    root = (s[:rank] / scale).sqrt()
    lora_b, lora_a = u[:, :rank] * root, root[:, None] * vh[:rank]
    norm = float(torch.linalg.matrix_norm(delta.float()))
    error = float(torch.linalg.matrix_norm(delta.float() - lora_delta(lora_a, lora_b, scale))) / norm if norm else 0.0
    return lora_a, lora_b, error
