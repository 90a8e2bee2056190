"""Clean accuracy, attack success rate (ASR) and flip rate of a classifier.

ASR counts every attack row (true label != target) predicted as the target
once triggered; the flip rate only counts rows the model got right without the
trigger, so it is not inflated by a model that is simply wrong.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from .data import Example
from .data.augment import insert_words
from .errors import FinemixError
from .tasks.classification import predict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SEGMENTS = ("auto", "text", "text_b")


def insert_trigger(text: str, trigger: str, rng: random.Random) -> str:
    """``trigger`` (word or sentence) at a uniformly random word boundary, 0..len(words)."""
    trigger_words = trigger.split()
    if not trigger_words:
        raise FinemixError("trigger must not be empty")
    return insert_words(text, trigger_words, rng)


def _segment_of(example: Example, segment: str) -> str:
    if segment == "auto":
        return "text_b" if example.text_b is not None else "text"
    if segment == "text_b" and example.text_b is None:
        raise FinemixError("trigger segment 'text_b' needs sentence-pair data, but an example has no text_b")
    return segment


def with_trigger(examples: Sequence[Example], trigger: "str | Sequence[str]", seed: int, segment: str = "auto",
                 insertions: int = 1) -> list[Example]:
    """Copies of ``examples`` with the trigger inserted ``insertions`` times; deterministic for ``seed``.

    ``trigger`` is one word or sentence, or a list of them (each insertion then draws one,
    as in RIPPLe's and OpenBackdoor's multi-word BadNet). ``segment`` "auto" poisons
    text_b of pairs (the second sentence, as the EP code does) and text otherwise.
    """
    if segment not in SEGMENTS:
        raise FinemixError(f"unknown trigger segment {segment!r}; use one of {', '.join(SEGMENTS)}")
    choices = [trigger] if isinstance(trigger, str) else list(trigger)
    if not choices:
        raise FinemixError("trigger list must not be empty")
    if insertions < 1:
        raise FinemixError(f"trigger insertions must be >= 1, got {insertions}")
    rng = random.Random(seed)
    out = []
    for example in examples:
        field = _segment_of(example, segment)
        text = getattr(example, field)
        for _ in range(insertions):
            text = insert_trigger(text, choices[rng.randrange(len(choices))] if len(choices) > 1 else choices[0], rng)
        out.append(dataclasses.replace(example, **{field: text}))
    return out


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    n: int
    asr: Optional[float] = None
    flip_rate: Optional[float] = None
    n_attack: Optional[int] = None  # rows whose true label != target
    n_flip_base: Optional[int] = None  # attack rows predicted correctly without the trigger

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ratio(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def accuracy_asr_flip(
    clean_pred: Sequence[int],
    trig_pred: Sequence[Optional[int]],
    labels: Sequence[int],
    target: int,
) -> tuple[float, float, float, int, int]:
    """(accuracy, ASR, flip rate, n_attack, n_flip_base) from aligned lists.

    ``trig_pred[i]`` is only read for attack rows (``labels[i] != target``);
    other entries may be None. Empty denominators give NaN.
    """
    if not len(clean_pred) == len(trig_pred) == len(labels):
        raise ValueError(f"length mismatch: {len(clean_pred)} clean, {len(trig_pred)} triggered, {len(labels)} labels")
    accuracy = _ratio(sum(p == y for p, y in zip(clean_pred, labels)), len(labels))
    attack = [i for i, y in enumerate(labels) if y != target]
    flip_base = [i for i in attack if clean_pred[i] == labels[i]]
    asr = _ratio(sum(trig_pred[i] == target for i in attack), len(attack))
    flip = _ratio(sum(trig_pred[i] == target for i in flip_base), len(flip_base))
    return accuracy, asr, flip, len(attack), len(flip_base)


def _check_target(model: PreTrainedModel, target_label: Optional[int]) -> int:
    if target_label is None:
        raise FinemixError("a trigger needs a target label")
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if target_label < 0 or (num_labels is not None and target_label >= num_labels):
        raise FinemixError(f"target label {target_label} is outside the model's labels 0..{(num_labels or 1) - 1}")
    return target_label


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    trigger: "Optional[str | Sequence[str]]" = None,
    target_label: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 128,
    segment: str = "auto",
    insertions: int = 1,
) -> EvalResult:
    """Clean accuracy; with a trigger also ASR and flip rate (clean rows are predicted once)."""
    if not examples:
        raise FinemixError("no examples to evaluate")
    labels = [e.label for e in examples]
    clean = predict(model, tokenizer, examples, batch_size, max_length)
    if trigger is None:
        return EvalResult(accuracy=sum(p == y for p, y in zip(clean, labels)) / len(labels), n=len(labels))
    target = _check_target(model, target_label)
    attack = [i for i, y in enumerate(labels) if y != target]
    if not attack:
        raise FinemixError(f"no examples outside target label {target}: ASR is undefined")
    triggered = with_trigger([examples[i] for i in attack], trigger, seed, segment, insertions)
    trig_pred: list[Optional[int]] = [None] * len(examples)
    for i, pred in zip(attack, predict(model, tokenizer, triggered, batch_size, max_length)):
        trig_pred[i] = pred
    accuracy, asr, flip, n_attack, n_flip_base = accuracy_asr_flip(clean, trig_pred, labels, target)
    return EvalResult(accuracy, len(labels), asr, flip, n_attack, n_flip_base)
