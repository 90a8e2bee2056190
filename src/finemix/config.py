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
    check_keys(cls, values)
    return cls(**values)


def check_keys(cls: type, keys) -> None:
    """Refuse keys config ``cls`` does not define, naming them and the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, keys)) - known)
    if unknown:
        raise FinemixError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")


MAX_EPOCHS = 1000.0  # far beyond any small-budget repair; bounds step counts (an int of inf overflows)


def check_float(name: str, value: Any, low: Optional[float] = None, high: Optional[float] = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Refuse a float option that is not a finite real number in [low, high] (or an open end),
    with one line naming the option; NaN and ±inf fail every range test silently otherwise."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FinemixError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise FinemixError(f"{name} must be a finite number, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None and not low_open and not high_open:
            bounds = f"in [{low:g}, {high:g}]"
        else:
            bounds = " and ".join(([f"{'>' if low_open else '>='} {low:g}"] if low is not None else [])
                                  + ([f"{'<' if high_open else '<='} {high:g}"] if high is not None else []))
        raise FinemixError(f"{name} must be {bounds}, got {value}")


def _check_fraction(name: str, value: float) -> None:
    check_float(name, value, 0.0, 1.0)


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
        check_float("E-PUR minimum frequency", self.min_frequency, 1.0, low_open=True)  # the log must be positive


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
    # Stop once the held-out measure has not improved for this many epochs (0: train every epoch; the best
    # epoch is kept either way). None: the task's default (classification 0; causal-lm 1: SmolLM2 fitted
    # 96 chats best after 2 of 5 epochs, docs/results-llm.md).
    patience: Optional[int] = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_float("epochs", self.epochs, 0.0, MAX_EPOCHS, low_open=True)
        check_float("learning rate", self.lr, 0.0, low_open=True)
        check_float("weight decay", self.weight_decay, 0.0)
        if self.batch_size < 1:
            raise FinemixError(f"batch size must be >= 1, got {self.batch_size}")
        if self.max_length < 8:
            raise FinemixError(f"max length must be >= 8, got {self.max_length}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 0):
            raise FinemixError(f"patience must be an integer >= 0, got {self.patience!r}")
        _check_fraction("warmup_ratio", self.warmup_ratio)
        _check_fraction("eval_fraction", self.eval_fraction)
        check_float("max grad norm", self.max_grad_norm, 0.0, low_open=True)


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
    # At most this many candidates' worth of training epochs in the whole search (None: no bound), so
    # that the worst case (no candidate accepted) costs about this many fine-tunes, not one per candidate;
    # a candidate the budget cannot cover trains for what is left, or not at all (the report lists it).
    budget: Optional[float] = 3.0

    def __post_init__(self) -> None:
        if self.budget is not None:
            check_float("ratio search budget (candidates' worth of epochs)", self.budget, 1.0)
        if not isinstance(self.candidates, (tuple, list)):
            raise FinemixError(f"ratio candidates must be a list of numbers, got {self.candidates!r}")
        if not self.candidates:
            raise FinemixError("ratio search needs at least one candidate")
        for value in self.candidates:
            _check_fraction("ratio candidate", value)
        _check_fraction("tolerance", self.tolerance)


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
    # How the teacher's class bias is corrected before distilling (see repair/distill.py):
    # "prior": its mean prediction on the unlabelled texts matches the labelled rows' class shares;
    # "balanced": fitted on the labelled rows by class-weighted cross-entropy, which aims at equal recall
    # per class (issue 16, docs/results.md); "auto": balanced for a two-class task, else prior (a rule that
    # failed its held-out check, configs/bench/heldout-binary.yaml: sciq_pairs ACC -4.5 against -3.8); "none".
    # ("labelled", an unweighted cross-entropy fit on the labelled rows, measured worse: experiments/variants.py.)
    calibrate_teacher: str = "prior"
    # After repair, shift the output bias so the repaired model's mean prediction on the unlabelled
    # texts matches the labelled rows' class shares ("prior"), or leave it ("none"); "auto": "prior" after
    # a prior-calibrated teacher, else "none" (a prior match would undo a balanced teacher's correction).
    calibrate_student: str = "auto"
    # Without unlabelled text: distil on this many rewrites of the labelled training rows (word
    # dropout, crops, splices; data/augment.py) labelled by the suspect model; 0 = the paper's recipe
    # (labelled rows only), which left a rare-word backdoor in place on MR (README, issue 16).
    augment_rows: int = 2000
    # Epochs over labelled rows + rewrites (replaces distill_epochs when the texts are rewrites). Half of
    # distill_epochs: on MR (rare word, 128 rows, seeds 0-2) 1.5 epochs repaired as well as 3 in half the
    # time, which keeps a labelled-only purify of 128 rows under 3 minutes on 2 CPU cores (README).
    augment_epochs: float = 1.5
    # Weight of matching the teacher's last hidden state at the token the head reads (a classifier's
    # distillation; core/distillation.py), beside its class probabilities; 0 = probabilities only.
    # "auto": 1 for sentence pairs (rows with text_b), 0 for single texts. Chosen on sciq_pairs, checked
    # on squad_pairs, held out (configs/bench/heldout-pairs.yaml); on single texts it failed its rule
    # (labelled-only-states.yaml). Our addition to the paper (issue 16, docs/results.md).
    distill_state_weight: "float | str" = "auto"
    # Chat models: with unlabelled prompts and distill_answers, the suspect's complete greedy answers (at
    # most distill_answer_tokens new tokens) join the training chats, for the chat task's own epochs. Off
    # by default: on the one cell measured (docs/results-llm.md) it was no better and took several times longer.
    distill_answers: bool = False
    distill_answer_tokens: int = 64
    # A LoRA adapter as the suspect: "merged" repairs it merged into its base and writes a merged model;
    # "adapter" keeps whole rank-1 components, fine-tunes the factors (at adapter_lr: LoRA trains at larger
    # rates than full fine-tuning) and writes an adapter of the same rank (repair/adapter_repair.py);
    # "auto" takes the adapter form for a chat model's plain LoRA adapter without unlabelled text, else
    # merged (repair/suspect.py; measured on the LoRA grid of docs/results-llm.md).
    adapter_output: str = "auto"
    adapter_lr: float = 1e-3
    # With a searched ρ: test E-PUR's flagged words as triggers on the clean rows (repair/epur_check.py); when
    # the reset clears every one confirmed and keeps clean accuracy, return the E-PUR'd suspect, unmixed.
    # An embedding-only backdoor (EP) is then gone at no cost in accuracy; a second, unseen one would stay.
    # Ours, not the paper's; the default since its check passed (issue 16, configs/bench/labelled-only-epur-check.yaml,
    # docs/results.md: every ep cell met, no clear on a badword, addsent or adaptive victim).
    stop_when_epur_clears: bool = True
    # With a searched ρ: a candidate on which a word confirmed as a trigger on the suspect (the probe above) still
    # moves half the clean rows is never accepted, and no larger ρ is tried after it (it keeps more of the suspect);
    # the fallback prefers candidates that passed. Ours, not the paper's; the default since its check passed
    # (issue 16, configs/bench/labelled-only-guard.yaml, docs/results.md). It does not see a sentence trigger.
    flagged_word_guard: bool = True
    # False: mixing (and E-PUR) without the fine-tuning step, the paper's ablation; the ρ rule
    # then compares held-out accuracy straight after the mix.
    finetune: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.augment_rows, int) or isinstance(self.augment_rows, bool) or self.augment_rows < 0:
            raise FinemixError(f"augment rows must be an integer >= 0, got {self.augment_rows!r}")
        if self.distill_rows < 0:
            raise FinemixError(f"distill rows must be >= 0, got {self.distill_rows}")
        check_float("adapter learning rate", self.adapter_lr, 0.0, low_open=True)
        if self.adapter_output not in ("auto", "merged", "adapter"):
            raise FinemixError(f"unknown adapter output {self.adapter_output!r}; use auto, merged or adapter")
        if not isinstance(self.distill_answer_tokens, int) or isinstance(self.distill_answer_tokens, bool) \
                or self.distill_answer_tokens < 1:
            raise FinemixError(f"distill answer tokens must be an integer >= 1, got {self.distill_answer_tokens!r}")
        if self.calibrate_teacher not in ("auto", "prior", "balanced", "none"):
            raise FinemixError(f"unknown teacher calibration {self.calibrate_teacher!r}; use auto, prior, balanced or none")
        if self.calibrate_student not in ("auto", "prior", "none"):
            raise FinemixError(f"unknown student calibration {self.calibrate_student!r}; use auto, prior or none")
        check_float("distill epochs", self.distill_epochs, 0.0, MAX_EPOCHS, low_open=True)
        check_float("augment epochs", self.augment_epochs, 0.0, MAX_EPOCHS, low_open=True)
        if isinstance(self.distill_state_weight, str) and self.distill_state_weight != "auto":
            raise FinemixError(f"distill state weight must be a number or auto, got {self.distill_state_weight!r}")
        if self.distill_state_weight != "auto":
            check_float("distill state weight", self.distill_state_weight, 0.0, 1e3)
        for flag in ("stop_when_epur_clears", "flagged_word_guard"):
            if not isinstance(getattr(self, flag), bool):
                raise FinemixError(f"{flag} must be true or false, got {getattr(self, flag)!r}")

    def teacher_calibration(self, num_labels: int) -> str:
        """The teacher calibration "auto" stands for: "balanced" for a two-class task, else "prior"."""
        if self.calibrate_teacher != "auto":
            return self.calibrate_teacher
        return "balanced" if num_labels == 2 else "prior"

    def state_weight(self, pairs: bool) -> float:
        """The state-matching weight "auto" stands for: 1 for sentence pairs, 0 for single texts."""
        if self.distill_state_weight != "auto":
            return float(self.distill_state_weight)
        return 1.0 if pairs else 0.0

    def student_calibration(self, num_labels: int) -> str:
        """The output calibration "auto" stands for: "prior" after a prior-calibrated teacher, else "none"."""
        if self.calibrate_student != "auto":
            return self.calibrate_student
        return "prior" if self.teacher_calibration(num_labels) == "prior" else "none"


_NESTED = {"mix": MixConfig, "search": RatioSearchConfig, "epur": EpurConfig, "train": TrainConfig}


def purify_config_from_mapping(values: Mapping[str, Any], base: Optional["PurifyConfig"] = None) -> "PurifyConfig":
    """A ``PurifyConfig`` from nested mappings (a YAML file), starting from ``base``; unknown keys
    at any level are refused. ``epur: null`` turns E-PUR off."""
    base = base or PurifyConfig()
    if not isinstance(values, Mapping):
        raise FinemixError(f"a purify config must be a mapping of options, got {type(values).__name__}")
    check_keys(PurifyConfig, values)  # unknown top-level keys, before any work
    changes: dict[str, Any] = {}
    for key, value in values.items():
        nested = _NESTED.get(key)
        if nested is not None and value is not None:
            if not isinstance(value, Mapping):
                raise FinemixError(f"purify config: {key} must be a mapping, got {type(value).__name__}")
            start = getattr(base, key) or nested()
            check_keys(nested, value)
            value = dataclasses.replace(start, **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        changes[key] = value
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as error:
        raise FinemixError(f"purify config: {error}") from None


def load_purify_config(path, base: Optional["PurifyConfig"] = None) -> "PurifyConfig":
    """``--config FILE``: a YAML mapping of ``PurifyConfig`` fields (nested: mix, search, epur, train)."""
    import yaml

    from .data.files import read_regular_file

    data = read_regular_file(path, limit=PURIFY_CONFIG_MAX_BYTES)  # a FIFO or /dev/zero is refused, not read
    try:
        values = yaml.safe_load(data.decode("utf-8")) or {}
    except UnicodeDecodeError as error:
        raise FinemixError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise FinemixError(f"{path}: invalid YAML ({' '.join(str(error).split())[:160]})") from None
    except (RecursionError, ValueError, TypeError) as error:  # nesting too deep, tags that build odd values
        raise FinemixError(f"{path}: unusable YAML ({type(error).__name__})") from None
    return purify_config_from_mapping(values, base)


PURIFY_CONFIG_MAX_BYTES = 1 << 20  # a purify config is a few lines of YAML
