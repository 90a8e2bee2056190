"""Distillation of the suspect model's clean behaviour, and the output-prior calibration.

The suspect model's answers on clean text are its clean behaviour: a rare trigger is
absent, so nothing of that backdoor is taught by these targets (a trigger made of common
words is another matter: docs/results.md, addsent). Its class prior is not clean, though:
dirty-label poisoning relabels rows to the target, which shifts the prior towards it. So
the teacher's logits get one bias per class before they become targets, chosen so that its
mean prediction on the unlabelled texts matches the labelled rows' class shares
(core/calibration.py). After the repair, the same correction is applied to the repaired
model's output bias. Our addition to the paper (docs/paper-choices.md).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

from ..config import PurifyConfig
from ..core.calibration import class_frequencies, class_shares, fit_class_bias, fit_prior_bias
from ..core.metrics import accuracy
from ..data import Example
from ..tasks.classification import predict_logits, predict_logits_and_states
from ..weights.pair import CheckpointPair
from .hooks import NO_HOOKS, RepairHooks

if TYPE_CHECKING:
    import torch


def distillation_rows(texts: Sequence["str | Example"], config: PurifyConfig) -> list[Example]:
    """The unlabelled texts (or rows, for sentence pairs) to distil on: unique, non-empty, at most
    ``distill_rows`` (a seeded sample). Labels are placeholders, never used."""
    rows = [t if isinstance(t, Example) else Example(t.strip(), 0) for t in texts]
    rows = [r for r in dict.fromkeys(rows) if r.text.strip()]
    if len(rows) > config.distill_rows:
        rows = random.Random(config.train.seed).sample(rows, config.distill_rows)
    return rows


def state_weight_for(config: PurifyConfig, clean: Sequence) -> float:
    """The state-matching weight for these labelled rows ("auto": 1 when they are sentence pairs)."""
    return config.state_weight(any(getattr(row, "text_b", None) for row in clean))


def teacher_targets(model, tokenizer, texts: Sequence["str | Example"], clean: Sequence[Example], config: PurifyConfig,
                    hooks: RepairHooks = NO_HOOKS, hidden_tokens: frozenset[int] = frozenset()):
    """(rows, class probabilities, hidden states at the head's token or None, calibration record) of
    the unrepaired model for distillation; the states only when the state-matching weight is > 0.

    The teacher reads every text without ``hidden_tokens`` (a research hook); the student is
    later trained on the full texts.
    """
    rows = distillation_rows(texts, config)
    length = config.train.max_length
    logits, states = predict_logits_and_states(model, tokenizer, rows, max_length=length, hidden_tokens=hidden_tokens,
                                               states=state_weight_for(config, clean) > 0)
    clean_logits = predict_logits(model, tokenizer, clean, max_length=length, hidden_tokens=hidden_tokens)
    labels = [e.label for e in clean]
    calibration = config.teacher_calibration(logits.shape[1])
    bias = teacher_bias(logits, clean_logits, labels, calibration, hooks)
    record = {
        "rows": len(rows),
        "calibration": calibration,
        "calibration_setting": config.calibrate_teacher,
        "class_bias": [round(float(b), 4) for b in bias],
        "predicted_class_share": class_shares(logits),
        "predicted_class_share_calibrated": class_shares(logits + bias),
        "labelled_class_share": [round(float(v), 4) for v in class_frequencies(labels, logits.shape[1])],
        "teacher_clean_accuracy": accuracy_of(clean_logits, labels),
        "teacher_clean_accuracy_calibrated": accuracy_of(clean_logits + bias, labels),
    }
    targets = hooks.distill_targets(logits + bias) if hooks.distill_targets else (logits + bias).softmax(dim=-1)
    return rows, targets, states, record


def teacher_bias(logits: "torch.Tensor", clean_logits: "torch.Tensor", labels: Sequence[int], calibration: str,
                 hooks: RepairHooks = NO_HOOKS) -> "torch.Tensor":
    """One bias per class for the teacher's logits: "prior" (default), "balanced" or "none"; a hook may replace it."""
    if hooks.teacher_bias is not None:
        return hooks.teacher_bias(logits, clean_logits, labels)
    if calibration == "prior":
        return fit_prior_bias(logits, class_frequencies(labels, logits.shape[1]))
    if calibration == "balanced":  # on the labelled rows, which the suspect never trained on
        return fit_class_bias(clean_logits, labels, balanced=True)
    return logits.new_zeros(logits.shape[1])


def calibrate_output_prior(model, tokenizer, rows: Sequence[Example], clean: Sequence[Example],
                           pair: CheckpointPair, config: PurifyConfig) -> dict:
    """Shift the repaired model's output bias so its mean prediction on the unlabelled rows
    matches the labelled rows' class shares (the teacher's correction, applied to the result)."""
    import torch

    num_labels = model.config.num_labels
    output_bias = _output_bias(model, pair, num_labels)
    if output_bias is None:
        return {"skipped": "no output bias of size num_labels in the head"}
    logits = predict_logits(model, tokenizer, rows, max_length=config.train.max_length)
    shift = fit_prior_bias(logits, class_frequencies([e.label for e in clean], num_labels))
    name, parameter = output_bias
    with torch.no_grad():
        parameter += shift.to(parameter.dtype)
    return {
        "tensor": name,
        "class_bias": [round(float(b), 4) for b in shift],
        "predicted_class_share": class_shares(logits),
        "predicted_class_share_calibrated": class_shares(logits + shift),
    }


def _output_bias(model, pair: CheckpointPair, num_labels: int):
    """The last bias of shape (num_labels,) among the head tensors (classifier.bias, classifier.out_proj.bias)."""
    head = set(pair.names.finetuned_only)
    found = None
    for name, parameter in model.named_parameters():
        if name in head and name.endswith("bias") and tuple(parameter.shape) == (num_labels,):
            found = (name, parameter)
    return found


def accuracy_of(logits: "torch.Tensor", labels: Sequence[int]) -> float:
    """Accuracy of the argmax of ``logits``, rounded for a report."""
    return round(accuracy(logits.argmax(dim=-1).tolist(), list(labels)), 4)
