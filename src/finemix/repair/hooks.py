"""Extension points of the repair for research variants; the product sets none of them.

Variants measured and not adopted (a teacher that does not read E-PUR's flagged tokens,
hard distillation labels, a cross-fitted teacher, frozen E-PUR rows, a teacher calibrated
on the labelled rows) live in experiments/variants.py, which builds a ``RepairHooks`` from
a bench config's ``variant:`` options. Each hook replaces one default step of the repair.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

if TYPE_CHECKING:
    from ..train import StepHook


@dataclasses.dataclass(frozen=True)
class RepairHooks:
    # The variant's options as given (recorded in the report).
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # (tokenizer, E-PUR plan) -> token ids the distillation teacher does not read.
    teacher_hidden_tokens: Optional[Callable] = None
    # (teacher logits on unlabelled rows, logits on clean rows, clean labels) -> per-class bias.
    teacher_bias: Optional[Callable] = None
    # (calibrated teacher logits) -> distillation targets (default: their softmax).
    distill_targets: Optional[Callable] = None
    # (RelabelContext) -> (targets, repair config): replace the suspect's targets (cross-fit, source labels).
    relabel: Optional[Callable] = None
    # (RelabelContext) -> (rows, targets): more rows to distil on, after the relabelling (e.g. rewrites
    # with suspected trigger tokens inserted, taught the targets of the rows they came from).
    extra_rows: Optional[Callable] = None
    # (texts the repair would distil on, seed) -> the texts to distil on (e.g. with a generic corpus added).
    distill_texts: Optional[Callable[[list, int], list]] = None
    # (E-PUR plan) -> train.StepHook or None: called after every optimiser step.
    step_hook: Optional[Callable[[Any], Optional["StepHook"]]] = None
    # (checkpoint pair, E-PUR plan) -> an edit of each mixed model before it trains, after the defense's own
    # (ratio_search.choose_ratio's after_mix), e.g. some of θ_B's layers put back whole.
    after_mix: Optional[Callable[[Any, Any], Callable]] = None


NO_HOOKS = RepairHooks()


@dataclasses.dataclass
class RelabelContext:
    """What a relabelling hook may use: the defender's inputs and the suspect's own targets."""

    pair: Any
    suspect: Any
    tokenizer: Any
    clean: Any
    config: Any
    plan: Any
    rows: Any
    suspect_targets: Any
    after_mix: Optional[Callable]
    record: dict
    rewrites: bool = False  # every row is a rewrite of a labelled row (each carries its source row's label)


def chain_edits(first: Optional[Callable], then: Optional[Callable]) -> Optional[Callable]:
    """One after-mix edit that runs ``first`` and then ``then``; their records merged."""
    if first is None or then is None:
        return first or then

    def both(model, tokenizer, rows) -> dict:
        return {**(first(model, tokenizer, rows) or {}), **(then(model, tokenizer, rows) or {})}

    return both
