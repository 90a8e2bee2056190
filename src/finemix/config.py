"""Typed configuration: frozen dataclasses that reject unknown keys.

Every stage takes one of these instead of ``**kwargs`` so a misspelt option
fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, TypeVar

from .errors import FinemixError

C = TypeVar("C")


def from_mapping(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build config ``cls`` from a mapping, rejecting keys it does not define."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FinemixError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**values)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FinemixError(f"{name} must be in [0, 1], got {value}")


def check_head_policy(head: str) -> None:
    if head not in ("keep", "reinit"):
        raise FinemixError(f"unknown head policy {head!r}; use 'keep' or 'reinit'")


@dataclasses.dataclass(frozen=True)
class MixConfig:
    """How θ_B and θ_Pre are combined (see mixing.py)."""

    ratio: float = 0.3  # ρ: fraction of fine-tuned weights kept
    mode: str = "random"  # "random" | "sel"
    sel_scope: str = "tensor"  # "tensor" | "global" (sel only)
    head: str = "keep"  # policy for tensors θ_Pre lacks: "keep" | "reinit"
    mix_embeddings: bool = True  # word embeddings are mixed like every other weight (paper)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fraction("ratio", self.ratio)
        if self.mode not in ("random", "sel"):
            raise FinemixError(f"unknown mix mode {self.mode!r}; use 'random' or 'sel'")
        if self.sel_scope not in ("tensor", "global"):
            raise FinemixError(f"unknown sel scope {self.sel_scope!r}; use 'tensor' or 'global'")
        check_head_policy(self.head)


@dataclasses.dataclass(frozen=True)
class EpurConfig:
    """Embedding purification (see epur.py)."""

    top_n: int = 200  # rows reset to θ_Pre
    min_frequency: float = 20.0  # f_min in s_k = d_k / log(max(f_k, f_min))

    def __post_init__(self) -> None:
        if self.top_n < 0:
            raise FinemixError(f"E-PUR top-N must be >= 0, got {self.top_n}")
        if self.min_frequency <= 1.0:
            raise FinemixError(f"E-PUR minimum frequency must be > 1 (log must be positive), got {self.min_frequency}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Small-budget clean fine-tuning (see finetune.py)."""

    epochs: float = 5.0
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_fraction: float = 0.25  # held-out slice for model selection and the ρ search
    min_eval_rows: int = 16  # below this, no held-out slice: train on everything
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise FinemixError(f"epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise FinemixError(f"learning rate must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise FinemixError(f"batch size must be >= 1, got {self.batch_size}")
        if self.max_length < 8:
            raise FinemixError(f"max length must be >= 8, got {self.max_length}")
        _check_fraction("warmup_ratio", self.warmup_ratio)
        _check_fraction("eval_fraction", self.eval_fraction)
        if self.max_grad_norm <= 0:
            raise FinemixError(f"max grad norm must be > 0, got {self.max_grad_norm}")


def optional_replace(config: C, **changes: Optional[Any]) -> C:
    """``dataclasses.replace`` that ignores ``None`` values (unset CLI options)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class RatioSearchConfig:
    """How ``--ratio auto`` picks ρ from clean data only (see ratio_search.py)."""

    candidates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    tolerance: float = 0.03  # accepted drop in held-out clean accuracy vs the unrepaired model
    # Stop training a candidate after an epoch when even its best per-epoch gain so far, repeated
    # for every remaining epoch, would leave it below the acceptance line (ratio_search.hopeless).
    stop_hopeless: bool = True

    def __post_init__(self) -> None:
        if not self.candidates:
            raise FinemixError("ratio search needs at least one candidate")
        for value in self.candidates:
            _check_fraction("ratio candidate", value)
        _check_fraction("tolerance", self.tolerance)


TEACHER_INPUTS = ("raw", "epur-masked")


def check_teacher_input(value: str) -> None:
    if value not in TEACHER_INPUTS:
        raise FinemixError(f"unknown teacher input {value!r}; use {' or '.join(TEACHER_INPUTS)}")


DISTILL_LABELS = ("soft", "hard")

TEACHERS = ("suspect", "cross-fit")


def check_teacher(value: str) -> None:
    if value not in TEACHERS:
        raise FinemixError(f"unknown distillation teacher {value!r}; use {' or '.join(TEACHERS)}")


def check_distill_labels(value: str) -> None:
    if value not in DISTILL_LABELS:
        raise FinemixError(f"unknown distillation labels {value!r}; use {' or '.join(DISTILL_LABELS)}")


@dataclasses.dataclass(frozen=True)
class PurifyConfig:
    """Everything ``purify`` does; the defender's view holds no trigger or target label."""

    mix: MixConfig = MixConfig()
    ratio_auto: bool = True  # search ρ; False uses mix.ratio
    search: RatioSearchConfig = RatioSearchConfig()
    epur: Optional[EpurConfig] = EpurConfig()  # None = no E-PUR
    train: TrainConfig = TrainConfig()
    # With unlabelled clean text: fine-tune on the suspect model's own predictions for it too
    # (soft targets). A rare-word trigger is absent from clean text, so only clean behaviour is taught;
    # a sentence of common words is not wholly absent (docs/results.md, addsent).
    distill: bool = True
    distill_rows: int = 2000  # cap on unlabelled rows used for distillation (CPU budget)
    # Epochs over labelled + unlabelled rows when distilling (replaces train.epochs). 3 measured better
    # than 2 on MiniLM/MR (docs/results-minilm-mr.md): a more accurate student, fewer false positives.
    distill_epochs: float = 3.0
    # How the teacher's class bias is corrected before distilling (see pipeline.teacher_targets):
    # "prior": its mean prediction on the unlabelled texts matches the labelled rows' class shares;
    # "labelled": cross-entropy fit on the labelled rows; "none".
    calibrate_teacher: str = "prior"  # measured better than "labelled" on MiniLM/MR (docs/results-minilm-mr.md)
    # After repair, shift the output bias so the repaired model's mean prediction on the unlabelled
    # texts matches the labelled rows' class shares ("prior"), or leave it ("none").
    calibrate_student: str = "prior"
    # What the teacher reads: "raw" texts, or "epur-masked": the texts without the tokens E-PUR
    # flagged (its top-N rows). A trigger made of common words (a sentence) leaves the suspect
    # model leaning to the target on clean texts that share those words; the student would learn
    # that lean from its answers. Needs E-PUR; without it the teacher reads raw texts. Measured
    # worse than "raw" on MiniLM/MR (docs/paper-choices.md), so off by default.
    teacher_input: str = "raw"
    # Distillation labels: the calibrated teacher's class probabilities ("soft") or its calibrated
    # argmax as one-hot labels ("hard", pseudo-labels), which pass on less of a lean that does not
    # change the answer.
    distill_labels: str = "soft"
    # Who labels the unlabelled texts: the "suspect" model itself, or "cross-fit": the texts are
    # halved, a first repair is run on each half (the suspect's answers on it), and each text is then
    # labelled by the first-round student that never trained on it. A student inherits only part of
    # the suspect's lean towards the target on clean texts that resemble a trigger (a sentence of
    # common words), so the second repair learns less of it. About 2-3x the time (pipeline.cross_fitted_targets).
    teacher: str = "suspect"
    # Keep E-PUR's reset embedding rows at θ_Pre through fine-tuning, so the repair cannot learn
    # them back from the suspect's answers. Needs E-PUR.
    freeze_epur_rows: bool = False
    # False: mixing (and E-PUR) without the fine-tuning step, the paper's ablation; the ρ rule
    # then compares held-out accuracy straight after the mix.
    finetune: bool = True

    def __post_init__(self) -> None:
        if self.distill_rows < 0:
            raise FinemixError(f"distill rows must be >= 0, got {self.distill_rows}")
        if self.calibrate_teacher not in ("prior", "labelled", "none"):
            raise FinemixError(f"unknown teacher calibration {self.calibrate_teacher!r}; use prior, labelled or none")
        if self.calibrate_student not in ("prior", "none"):
            raise FinemixError(f"unknown student calibration {self.calibrate_student!r}; use prior or none")
        check_teacher_input(self.teacher_input)
        check_distill_labels(self.distill_labels)
        check_teacher(self.teacher)
        if self.distill_epochs <= 0:
            raise FinemixError(f"distill epochs must be > 0, got {self.distill_epochs}")
