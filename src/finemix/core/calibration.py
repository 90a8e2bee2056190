"""Class-prior calibration of a classifier's logits, as pure functions on tensors.

Dirty-label poisoning relabels rows to the target class, so a backdoored model's
class prior leans towards it even on clean text. One bias per class, fitted here,
undoes that lean: either so that the mean prediction over many unlabelled texts
matches the labelled rows' class shares (``fit_prior_bias``; only the shares come
from the small labelled set), or by cross-entropy on the labelled rows themselves
(``fit_class_bias``). Class 0's bias is fixed at 0 (only differences matter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import torch


def class_frequencies(labels: Sequence[int], num_classes: int) -> "torch.Tensor":
    """Share of each class id among ``labels`` (float32, length ``num_classes``)."""
    import torch

    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).float()
    return counts / counts.sum()


def fit_prior_bias(logits: "torch.Tensor", prior: "torch.Tensor", steps: int = 200) -> "torch.Tensor":
    """Per-class logit offsets making the mean predicted distribution over ``logits`` equal ``prior``.

    Minimises KL(prior ‖ mean softmax(logits + b)) (class 0 fixed at 0). Used on
    unlabelled texts, the mean is taken over thousands of rows, so only the class
    shares come from the (small) labelled set.
    """
    target = prior.float().clamp_min(1e-6)

    def loss(bias: "torch.Tensor") -> "torch.Tensor":
        share = (logits.float() + bias).softmax(dim=-1).mean(dim=0).clamp_min(1e-9)
        return (target * (target.log() - share.log())).sum()

    return _fit_bias(logits.shape[1], loss, steps)


def fit_class_bias(logits: "torch.Tensor", labels: Sequence[int], steps: int = 200,
                   balanced: bool = False) -> "torch.Tensor":
    """Per-class logit offsets minimising cross-entropy on labelled rows (class 0 fixed at 0); ``balanced``
    weights each class by its inverse share, which aims at equal recall rather than the rows' class shares."""
    import torch

    target = torch.as_tensor(list(labels), dtype=torch.long)
    weight = 1.0 / class_frequencies(labels, logits.shape[1]).clamp_min(1e-6) if balanced else None
    return _fit_bias(logits.shape[1], lambda bias: torch.nn.functional.cross_entropy(
        logits.float() + bias, target, weight=weight), steps)


def _fit_bias(num_classes: int, loss_of_bias: Callable[["torch.Tensor"], "torch.Tensor"], steps: int) -> "torch.Tensor":
    """Minimise ``loss_of_bias(b)`` over per-class offsets b with b[0] = 0 (LBFGS)."""
    import torch

    free = torch.zeros(num_classes - 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([free], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_of_bias(torch.cat([free.new_zeros(1), free]))
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.cat([torch.zeros(1), free.detach()])


def class_shares(logits: "torch.Tensor") -> list[float]:
    """Mean predicted probability of each class, rounded for a report."""
    return [round(float(v), 4) for v in logits.softmax(-1).mean(0)]
