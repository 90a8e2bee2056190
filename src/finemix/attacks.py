"""Attacks that make backdoored models to test defenses on.

Each attack is a registered unit with one interface: it poisons a clean training
set and returns the poisoned rows plus an ``AttackCard`` (trigger, target label,
rate, seed). The card describes the attack for evaluation only; defenses never
receive it (see defense boundary in pipeline.py).

Departures from the papers are noted per attack.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence

from .data import Example
from .errors import FinemixError


@dataclasses.dataclass(frozen=True)
class AttackCard:
    attack: str
    trigger: str
    target_label: int
    poison_rate: float
    seed: int
    n_poisoned: int
    segment: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BadWordConfig:
    """BadNet-style rare-word trigger (Kurita et al. 2020; Chen et al. 2021).

    Dirty-label: a fraction ``poison_rate`` of the *whole* training set is drawn from
    rows whose label is not the target, gets the trigger inserted at a random word
    position (``insertions`` times) and is relabelled to the target. The poisoned
    copies replace the originals, so the set keeps its size.
    """

    trigger: str = "cf"
    target_label: int = 1
    poison_rate: float = 0.1
    insertions: int = 1
    segment: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.poison_rate <= 1.0:
            raise FinemixError(f"poison rate must be in (0, 1], got {self.poison_rate}")
        if not self.trigger.strip():
            raise FinemixError("trigger must not be empty")
        if self.insertions < 1:
            raise FinemixError(f"insertions must be >= 1, got {self.insertions}")


def badword(train: Sequence[Example], config: BadWordConfig) -> tuple[list[Example], AttackCard]:
    from .evaluation import with_trigger

    rng = random.Random(config.seed)
    candidates = [i for i, e in enumerate(train) if e.label != config.target_label]
    n_poison = min(len(candidates), int(round(config.poison_rate * len(train))))
    if n_poison == 0:
        raise FinemixError("nothing to poison: no rows outside the target label")
    chosen = sorted(rng.sample(candidates, n_poison))
    triggered = [train[i] for i in chosen]
    for round_ in range(config.insertions):
        triggered = with_trigger(triggered, config.trigger, seed=config.seed * 1000 + round_, segment=config.segment)
    poisoned = list(train)
    for i, example in zip(chosen, triggered):
        poisoned[i] = dataclasses.replace(example, label=config.target_label)
    card = AttackCard("badword", config.trigger, config.target_label, config.poison_rate, config.seed, n_poison, config.segment)
    return poisoned, card


ATTACKS: dict[str, Callable] = {"badword": badword}
