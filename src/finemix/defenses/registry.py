"""Defenses: one registered interface, model in → model out plus report.

The boundary: a defense receives ``DefenderInputs`` and ``DefenseSettings`` and
nothing else. Neither type has a field for a trigger, a target label or poison
flags, and this package imports nothing from attacks.py or the trigger side of
evaluation.py (tests/test_defenses.py checks both), so no defense can peek.

Every defense except ``none`` and ``epur`` is a ``purify`` run with a different
configuration, so all share E-PUR, the held-out split, distillation and the report:

=================  =======================================================  =========
name               what it does                                             E-PUR
=================  =======================================================  =========
none               the suspect model, untouched                             –
epur               E-PUR alone (reset the top-N embedding rows)             yes
finetune           clean fine-tuning of θ_B (ρ = 1)                         ±
fineprune          prune the FFN neurons least active on clean data, then   ±
                   fine-tune (Liu et al. 2018; per layer, our adaptation)
mix                random mixing with θ_Pre, no fine-tuning                 ±
finemix            Fine-mixing: random mixing, then fine-tuning             ±
finemix-sel        Fine-mixing (sel): keep the most-changed weights         ±
=================  =======================================================  =========

``NAME+epur`` runs E-PUR first; the registry holds both forms of each. Each defense
declares the ``DefenseSettings`` fields it reads (``Defense.parameters``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from ..config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig, check_head_policy
from ..errors import FinemixError
from .fineprune import prune_dormant_neurons

if TYPE_CHECKING:
    from ..data import Example


@dataclasses.dataclass(frozen=True)
class DefenderInputs:
    """What a defender holds. There is deliberately no field for anything the attacker knows."""

    suspect: Path
    pretrained: str
    clean: tuple["Example", ...]
    unlabelled: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DefenseSettings:
    """Budgets shared by every defense, so they are compared at equal clean data."""

    train: TrainConfig = TrainConfig(progress=False)
    ratio: Optional[float] = None  # None: the ρ search (finemix, finemix-sel, mix)
    search: RatioSearchConfig = RatioSearchConfig()
    epur: EpurConfig = EpurConfig()
    distill: bool = True  # with unlabelled text, for every defense that fine-tunes
    distill_rows: int = 2000
    distill_epochs: float = PurifyConfig().distill_epochs
    augment_rows: int = PurifyConfig().augment_rows  # without unlabelled text: rewrites of the labelled rows to distil on
    augment_epochs: float = PurifyConfig().augment_epochs
    calibrate_teacher: str = PurifyConfig().calibrate_teacher  # the distillation teacher's class-bias correction
    distill_state_weight: "float | str" = PurifyConfig().distill_state_weight  # matching the teacher's head-input state
    stop_when_epur_clears: bool = PurifyConfig().stop_when_epur_clears  # no mixing when E-PUR's reset clears a trigger
    flagged_word_guard: bool = PurifyConfig().flagged_word_guard  # a candidate a trigger still moves
    prune_ratio: float = 0.3  # fineprune: share of FFN neurons pruned in every layer
    head: str = "keep"  # mixing defenses: policy for tensors θ_Pre lacks (the baselines keep the suspect's head)
    # Options of a research variant (experiments/variants.py), e.g. {"teacher": "cross-fit"}; empty: the product.
    variant: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio < 1.0:
            raise FinemixError(f"prune ratio must be in [0, 1), got {self.prune_ratio}")
        check_head_policy(self.head)
        if not isinstance(self.variant, Mapping) or not all(isinstance(k, str) for k in self.variant):
            raise FinemixError(f"a research variant must be a mapping of option names, got {self.variant!r}")


@dataclasses.dataclass(frozen=True)
class DefenseResult:
    model: Path  # the defended model folder (the suspect itself for "none")
    report: dict


@dataclasses.dataclass(frozen=True)
class Defense:
    name: str
    run: Callable[[DefenderInputs, Path, DefenseSettings, bool], DefenseResult]
    description: str
    parameters: tuple[str, ...] = ()  # the DefenseSettings fields this defense reads


# --------------------------------------------------------------------------- units

def _purify_config(settings: DefenseSettings, epur: bool, mix: MixConfig, auto: bool, finetune: bool) -> PurifyConfig:
    return PurifyConfig(mix=mix, ratio_auto=auto, search=settings.search, epur=settings.epur if epur else None,
                        train=settings.train, distill=settings.distill, distill_rows=settings.distill_rows,
                        distill_epochs=settings.distill_epochs, augment_rows=settings.augment_rows,
                        augment_epochs=settings.augment_epochs, calibrate_teacher=settings.calibrate_teacher,
                        distill_state_weight=settings.distill_state_weight, finetune=finetune,
                        stop_when_epur_clears=settings.stop_when_epur_clears and epur,
                        flagged_word_guard=settings.flagged_word_guard and epur)


def _purify(inputs: DefenderInputs, output: Path, config: PurifyConfig, settings: DefenseSettings, force: bool,
            after_mix: Optional[Callable] = None) -> DefenseResult:
    from ..repair.steps import purify
    from .variants import research_hooks

    report = purify(inputs.suspect, inputs.pretrained, list(inputs.clean), output, config,
                    unlabelled_texts=list(inputs.unlabelled), force=force, after_mix=after_mix,
                    hooks=research_hooks(settings.variant))
    return DefenseResult(Path(output), report)


def _mixing_defense(mode: str, finetune: bool, epur: bool):
    def run(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
        seed = settings.train.seed
        mix = MixConfig(ratio=settings.ratio if settings.ratio is not None else 0.3, mode=mode, seed=seed, head=settings.head)
        config = _purify_config(settings, epur, mix, auto=settings.ratio is None, finetune=finetune)
        return _purify(inputs, output, config, settings, force)
    return run


def _finetune_defense(epur: bool):
    def run(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
        config = _purify_config(settings, epur, MixConfig(ratio=1.0, seed=settings.train.seed), auto=False, finetune=True)
        return _purify(inputs, output, config, settings, force)
    return run


def _fineprune_defense(epur: bool):
    def run(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
        config = _purify_config(settings, epur, MixConfig(ratio=1.0, seed=settings.train.seed), auto=False, finetune=True)

        def prune(model, tokenizer, rows):
            return prune_dormant_neurons(model, tokenizer, rows, settings.prune_ratio, settings.train.max_length)
        return _purify(inputs, output, config, settings, force, after_mix=prune)
    return run


def _epur_only(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
    config = _purify_config(settings, True, MixConfig(ratio=1.0, seed=settings.train.seed), auto=False, finetune=False)
    return _purify(inputs, output, config, settings, force)


def _none(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
    return DefenseResult(Path(inputs.suspect), {"command": "none"})


# --------------------------------------------------------------------------- registry

_TRAINING = ("train", "distill", "distill_rows", "distill_epochs", "augment_rows", "augment_epochs", "calibrate_teacher",
             "distill_state_weight", "variant")
_UNITS = {
    "finetune": (_finetune_defense, "clean fine-tuning of the suspect model", _TRAINING),
    "fineprune": (_fineprune_defense, "fine-pruning: prune dormant FFN neurons, then fine-tune", ("prune_ratio", *_TRAINING)),
    "mix": (lambda epur: _mixing_defense("random", False, epur), "random mixing without fine-tuning",
            ("ratio", "search", "head", "train")),
    "finemix": (lambda epur: _mixing_defense("random", True, epur), "Fine-mixing (random)",
                ("ratio", "search", "head", *_TRAINING)),
    "finemix-sel": (lambda epur: _mixing_defense("sel", True, epur), "Fine-mixing (sel)",
                    ("ratio", "search", "head", *_TRAINING)),
}


def _registry() -> dict[str, Defense]:
    table = {
        "none": Defense("none", _none, "the suspect model, untouched"),
        "epur": Defense("epur", _epur_only, "E-PUR alone", ("epur", "train")),
    }
    for name, (make, description, parameters) in _UNITS.items():
        table[name] = Defense(name, make(False), description, parameters)
        # they act only where ρ is searched
        searched = ("stop_when_epur_clears", "flagged_word_guard") if "search" in parameters else ()
        table[f"{name}+epur"] = Defense(f"{name}+epur", make(True), f"E-PUR, then {description}",
                                        ("epur", *searched, *parameters))
    return table


DEFENSES: dict[str, Defense] = _registry()


def run_defense(name: str, inputs: DefenderInputs, output: str | os.PathLike, settings: DefenseSettings,
                force: bool = False) -> DefenseResult:
    if name not in DEFENSES:
        raise FinemixError(f"unknown defense {name!r}; known: {', '.join(DEFENSES)}")
    return DEFENSES[name].run(inputs, Path(output), settings, force)
