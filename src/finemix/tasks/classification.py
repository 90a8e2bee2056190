"""Sequence classification: ``AutoModelForSequenceClassification``, class-label loss, accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Sequence

from ..core.metrics import accuracy
from ..data import Example, drop_token_ids, make_collator, tokenize_examples
from ..errors import FinemixError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_classifier(folder: Path):
    """``AutoModelForSequenceClassification`` from a folder; failures as one line (never remote code).

    A weight the checkpoint lacks is refused, named: transformers would initialise it at
    random, so the model (and anything trained and written from it) would change on every load.
    """
    from transformers import AutoModelForSequenceClassification

    from ..weights.reader import TensorReader, all_finite

    stored = TensorReader(folder).names()  # also refuses shard files outside the folder before transformers reads them
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False,
                                                                         output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise FinemixError(f"{folder}: cannot load as a sequence classifier ({short_error(error)})") from None
    missing = missing_weights(model, stored, info.get("missing_keys") or ())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FinemixError(f"{folder}: the checkpoint lacks {missing[0]}{more}, a weight of the model (transformers "
                           "would initialise it at random on every load): refused")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not all_finite(tensor):
            raise FinemixError(f"{folder}: weight {name} contains NaN or Inf values")
    return model


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


def missing_weights(model: "torch.nn.Module", stored: Sequence[str], reported: Sequence[str]) -> list[str]:
    """The model's weights that the checkpoint (tensor names ``stored``) does not hold, sorted.

    A weight is a parameter or a floating-point persistent buffer (integer buffers such as
    ``position_ids`` are built, not learnt; non-persistent ones are never saved).
    transformers' ``missing_keys`` (``reported``) name what it initialised, after tying
    weights and renaming legacy names, but leave out whatever the model class lists in
    ``_keys_to_ignore_on_load_missing``; those are compared with ``stored`` here: present
    under their name, with or without the base-model prefix, or through a tied twin.
    """
    import re

    state = model.state_dict()
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    patterns = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or ())]
    stored, prefix = set(stored), f"{getattr(model, 'base_model_prefix', '')}."
    twins: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            twins.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)

    def held(name: str) -> bool:
        return bool({name, name[len(prefix):] if name.startswith(prefix) else prefix + name} & stored)

    def weight(name: str) -> bool:
        return name in params or (name in state and state[name].is_floating_point())

    unlisted = {n for n in state if any(p.search(n) for p in patterns) and not held(n)
                and not any(held(t) for t in twins.get((state[n].data_ptr(), tuple(state[n].shape)), []))}
    return sorted(n for n in set(reported) | unlisted if weight(n))


def short_error(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:160] if lines else type(error).__name__)


def batch_loss(model: "torch.nn.Module", batch: dict) -> "torch.Tensor":
    """The model's own class-label loss, or soft cross-entropy against ``soft_labels`` rows
    (one-hot for labelled rows, a teacher's probabilities for distilled ones)."""
    soft = batch.pop("soft_labels", None)
    if soft is None:
        return model(**batch).loss
    return -(soft * model(**batch).logits.float().log_softmax(dim=-1)).sum(dim=-1).mean()


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
    import torch

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
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk]).items()}
                logits[torch.as_tensor(chunk)] = model(**batch).logits.float().cpu()
    finally:
        model.train(was_training)
    return logits


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

    def load_model(self, folder: Path):
        return load_classifier(folder)

    def new_model(self, base: Path, labels: dict[int, str]):
        return new_classifier(base, labels)[0]

    def loss(self, model, batch: dict):
        return batch_loss(model, batch)

    def predict_logits(self, model, tokenizer, rows: Sequence[Example], max_length: int):
        return predict_logits(model, tokenizer, rows, max_length=max_length)

    def clean_measure(self, model, tokenizer, rows: Sequence[Example], max_length: int) -> float:
        return clean_accuracy(model, tokenizer, rows, max_length)


CLASSIFICATION = ClassificationTask()
