"""Sequence classification: ``AutoModelForSequenceClassification``, class-label loss, accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Sequence

from ..core.metrics import accuracy
from ..data import Example, drop_token_ids, make_collator, tokenize_examples
from ..errors import FinemixError
from .loading import load_checked, short_error

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_classifier(folder: Path):
    """``AutoModelForSequenceClassification`` from a folder, checked (tasks/loading.py)."""
    return load_checked(folder, "AutoModelForSequenceClassification", "a sequence classifier")


def new_classifier(base: Path, labels: dict[int, str]):
    """(model, loading info): a classifier started from the pre-trained ``base`` with a fresh head for
    ``labels`` (id → name), as attacks and the bench's clean models start."""
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(labels), label2id={v: k for k, v in labels.items()},
            output_loading_info=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise FinemixError(f"{base}: cannot start a sequence classifier from it ({short_error(error)})") from None


def batch_loss(model: "torch.nn.Module", batch: dict) -> "torch.Tensor":
    """The model's own class-label loss, or soft cross-entropy against ``soft_labels`` rows
    (one-hot for labelled rows, a teacher's probabilities for distilled ones), plus, where rows carry
    ``teacher_states`` and ``state_weights``, the weighted squared distance of the student's hidden
    state to the teacher's at the token the head reads (core/distillation.py)."""
    from ..core.distillation import head_token_states, soft_cross_entropy, state_matching_loss

    soft = batch.pop("soft_labels", None)
    teacher, weights = batch.pop("teacher_states", None), batch.pop("state_weights", None)
    if soft is None:
        return model(**batch).loss
    if teacher is None:
        return soft_cross_entropy(model(**batch).logits, soft)
    output = model(**batch, output_hidden_states=True)
    student = head_token_states(output.hidden_states[-1], batch["attention_mask"], head_token(model))
    return soft_cross_entropy(output.logits, soft) + state_matching_loss(student, teacher, weights)


def head_token(model) -> str:
    """Where the model's classification head reads its input: declared per architecture (weights/roles.py).
    ``model`` may be wrapped for training (DDP keeps the model, and its config, in ``.module``)."""
    from ..weights.roles import roles_for

    return roles_for(getattr(model, "module", model).config.to_dict()).head_token


def predict_logits(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    examples: Sequence[Example],
    batch_size: int = 64,
    max_length: int = 128,
    hidden_tokens: AbstractSet[int] = frozenset(),
):
    """Logits (float32 tensor, one row per example) in the order of ``examples``; the model
    does not see the token ids in ``hidden_tokens`` (they are dropped after tokenisation)."""
    return predict_logits_and_states(model, tokenizer, examples, batch_size, max_length, hidden_tokens)[0]


def predict_logits_and_states(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    examples: Sequence[Example],
    batch_size: int = 64,
    max_length: int = 128,
    hidden_tokens: AbstractSet[int] = frozenset(),
    states: bool = False,
):
    """(logits, hidden states at the head's token or None): ``predict_logits``, and with ``states`` the
    last layer's state each row's head reads (float32, one row per example), from the same pass."""
    import torch

    from ..core.distillation import head_token_states

    if batch_size < 1:
        raise FinemixError(f"batch size must be >= 1, got {batch_size}")
    features = tokenize_examples(tokenizer, examples, max_length)
    if hidden_tokens:
        features = [drop_token_ids(feature, hidden_tokens) for feature in features]
    for feature in features:
        feature.pop("labels")  # no loss needed; also keeps the collator from touching labels
    # Longest first: similar lengths share a batch (little padding) and memory errors surface at once.
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    collate = make_collator(tokenizer)
    device = next(model.parameters()).device
    logits = torch.zeros(len(features), model.config.num_labels)
    found = torch.zeros(len(features), model.config.hidden_size) if states else None
    reads = head_token(model) if states else None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = torch.as_tensor(order[start : start + batch_size])
                batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk]).items()}
                output = model(**batch, output_hidden_states=states)
                logits[chunk] = output.logits.float().cpu()
                if states:
                    found[chunk] = head_token_states(output.hidden_states[-1], batch["attention_mask"], reads).float().cpu()
    finally:
        model.train(was_training)
    return logits, found


def predict(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    examples: Sequence[Example],
    batch_size: int = 64,
    max_length: int = 128,
) -> list[int]:
    """Predicted class ids in the order of ``examples``."""
    if not examples:
        return []
    return predict_logits(model, tokenizer, examples, batch_size, max_length).argmax(dim=-1).tolist()


def clean_accuracy(model, tokenizer, rows: Sequence[Example], max_length: int) -> float:
    """Held-out accuracy: the classifier's clean measure."""
    return accuracy(predict(model, tokenizer, rows, max_length=max_length), [e.label for e in rows])


class ClassificationTask:
    """``Task`` for sequence classifiers (see tasks/base.py)."""

    name = "classification"
    measure_name = "held-out accuracy"
    default_patience = 0  # train every epoch (the measured grids did)
    distils = "predictions"

    def load_model(self, folder: Path):
        return load_classifier(folder)

    def new_model(self, base: Path, labels: dict[int, str]):
        return new_classifier(base, labels)[0]

    def features(self, tokenizer, rows: Sequence[Example], max_length: int) -> list[dict]:
        return tokenize_examples(tokenizer, rows, max_length)

    def collator(self, tokenizer):
        return make_collator(tokenizer)

    def loss(self, model, batch: dict):
        return batch_loss(model, batch)

    def clean_measure(self, model, tokenizer, rows: Sequence[Example], max_length: int) -> float:
        return clean_accuracy(model, tokenizer, rows, max_length)

    def acceptance_margin(self, reference: float, rows: int, tolerance: float) -> float:
        from ..core.ratio_rule import acceptance_margin

        return acceptance_margin(reference, rows, tolerance)

    def texts(self, rows: Sequence[Example]) -> list[str]:
        return [t for e in rows for t in (e.text, e.text_b) if t]


CLASSIFICATION = ClassificationTask()
