"""Did E-PUR's reset remove a trigger? Flip rates of inserted words, and the rule that trusts the reset.

E-PUR flags the embedding rows that moved abnormally far for how often their word occurs. Whether a
flagged word *is* a trigger is something the clean rows can test without knowing the attack: insert
the word into each row and count how many answers move to one class. A word that moves at least
``CONFIRM_FLIP`` of the rows not already there is a confirmed trigger. The reset *cleared* it when,
inserted into the E-PUR'd model's rows, it moves no more than an ordinary word does: at most
``ORDINARY_FLIP``, or twice the median flip rate of the other probed words (a fragile model moves on
any inserted word), and in any case fewer than ``CONFIRM_FLIP`` of them. Ours, not the paper's
(docs/paper-choices.md): the thresholds were set before any measurement on the issue-16 grid
(configs/bench/labelled-only-epur-check.yaml); the ``CONFIRM_FLIP`` cap after the reset was added after it.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Mapping, Sequence

CONFIRM_FLIP = 0.5  # a word that moves half the rows to one class is a trigger
ORDINARY_FLIP = 0.1  # what inserting an ordinary word may move, at least


def flip_rate(before: Sequence[int], after: Sequence[int], classes: int) -> float:
    """The share of rows moved to one class by an edit, for the class most moved to, among the rows
    not in that class before (a trigger's target is unknown; a row already there cannot flip to it)."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} predictions before an edit, {len(after)} after")
    best = 0.0
    for target in range(classes):
        pool = [i for i, label in enumerate(before) if label != target]
        if pool:
            best = max(best, sum(after[i] == target for i in pool) / len(pool))
    return best


def confirmed_triggers(flips: Mapping[str, float]) -> list[str]:
    """The probed words whose insertion moved at least CONFIRM_FLIP of the rows, in probe order."""
    return [word for word, rate in flips.items() if rate >= CONFIRM_FLIP]


def ordinary_line(flips: Mapping[str, float], confirmed: Sequence[str]) -> float:
    """How far an ordinary word moves this model's rows: ORDINARY_FLIP, or twice the median flip rate
    of the probed words that are not confirmed triggers, whichever is larger."""
    others = [rate for word, rate in flips.items() if word not in confirmed]
    return max(ORDINARY_FLIP, 2 * statistics.median(others)) if others else ORDINARY_FLIP


@dataclasses.dataclass(frozen=True)
class ClearedVerdict:
    """Whether the reset cleared every confirmed trigger, and the numbers that decided it."""

    confirmed: list[str]
    line: float
    cleared: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def reset_cleared(before: Mapping[str, float], after: Mapping[str, float]) -> ClearedVerdict:
    """``before``: each probed word's flip rate on the suspect; ``after``: each confirmed one's on the E-PUR'd suspect.
    Cleared when at least one word was a confirmed trigger and none of them moves more than an
    ordinary word after the reset."""
    confirmed = confirmed_triggers(before)
    line = ordinary_line(before, confirmed)
    # A word that still moves half the rows is a trigger whatever the line: the line may pass it on a model
    # that any word moves (amended after the check: it cleared a clean model's 'bad' at 0.5, docs/results.md).
    cleared = bool(confirmed) and all(after[word] <= line and after[word] < CONFIRM_FLIP for word in confirmed)
    return ClearedVerdict(confirmed, round(line, 6), cleared)
