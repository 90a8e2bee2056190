"""Choosing ρ with clean data only (``--ratio auto``).

The defender cannot measure ASR, so the rule trades only on clean accuracy: a
smaller ρ resets more of θ_B (more of a backdoor goes) but starts fine-tuning
further from the task. Rule (ours; the paper's was not recovered):

    try candidates from small to large; each is mixed, fine-tuned on the training
    part of the clean set and scored on its held-out part; take the first whose
    held-out accuracy is within max(tolerance, SE) of the unrepaired model's
    (core/ratio_rule.py). If none is, take the most accurate and say so.

Stopping at the first acceptable candidate means larger ρ are never trained: the
search costs as many fine-tunes as candidates tried, and at most ``search.budget``
candidates' worth of epochs (3 by default): when none is accepted, the last
candidates train for what is left of it, or not at all, and the report says which.

With ``flagged_word_guard``, the words E-PUR flagged and the clean rows confirmed as
triggers on the suspect (repair/epur_check.py) are inserted into each trained candidate's
rows too: a candidate on which one still moves half the rows is not accepted, however
accurate, and ends the search. Ours as well.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..config import PurifyConfig
from ..core.ratio_rule import accepted, epochs_allowed, hopeless, untried_note
from ..weights.pair import CheckpointPair
from .epur_step import EpurPlan
from .mix_step import load_mixed_state

if TYPE_CHECKING:
    import torch

    from ..tasks.base import Task
    from ..train import StepHook


def split_clean(clean: Sequence, config: PurifyConfig) -> tuple[list, list]:
    """Training part and held-out part (empty when the set is too small to hold any out);
    stratified by label for labelled rows, a seeded random cut for chats."""
    import random

    from ..data import Example, stratified_split

    held = int(round(config.train.eval_fraction * len(clean)))
    if held < config.train.min_eval_rows or len(clean) - held < 1:
        return list(clean), []
    if all(isinstance(row, Example) for row in clean):
        return stratified_split(clean, (1.0 - held / len(clean), held / len(clean)), seed=config.train.seed)
    order = list(range(len(clean)))
    random.Random(config.train.seed).shuffle(order)
    return [clean[i] for i in sorted(order[held:])], [clean[i] for i in sorted(order[:held])]


@dataclasses.dataclass
class _Search:
    """One ρ search: what every candidate is trained and judged with."""

    task: "Task"
    pair: CheckpointPair
    model: "torch.nn.Module"
    tokenizer: object
    config: PurifyConfig
    plan: Optional[EpurPlan]
    train: list
    heldout: list
    auto: bool
    reference: Optional[float]
    margin: Optional[float]
    distill: Optional[tuple]
    after_mix: Optional[Callable]
    step_hook: Optional["StepHook"]


def choose_ratio(
    pair: CheckpointPair,
    model: "torch.nn.Module",
    tokenizer,
    clean: Sequence["Example"],
    config: PurifyConfig,
    plan: Optional[EpurPlan],
    distill: Optional[tuple] = None,
    after_mix: Optional[Callable] = None,
    step_hook: Optional["StepHook"] = None,
    task: Optional["Task"] = None,
    guard: Optional[Callable[["torch.nn.Module"], dict]] = None,
) -> dict:
    """Leave ``model`` repaired with the chosen ρ; return the search record for the report.

    ``after_mix(model, tokenizer, clean_rows) -> dict``, when given, edits each mixed
    model before its fine-tuning (fine-pruning prunes there); its record joins the row.
    ``step_hook`` reaches the training loop (train.finetune). ``task`` (classification by
    default) gives the clean measure ("accuracy" below) and its acceptance margin.
    ``guard(model) -> {"surviving": [...], ...}`` (repair/epur_check.trigger_guard), when given,
    probes each trained candidate: one with surviving triggers is never accepted and ends the
    search (a larger ρ keeps more of the suspect); the fallback prefers candidates that passed.
    """
    from ..tasks.classification import CLASSIFICATION

    search = _start(task or CLASSIFICATION, pair, model, tokenizer, clean, config, plan, distill, after_mix, step_hook)
    record = _record(search)
    candidates = sorted(config.search.candidates) if search.auto else [config.mix.ratio]
    budget = config.search.budget if search.auto and config.finetune else None
    guard = guard if search.auto else None
    epochs, used = _train_config(search).epochs, 0.0
    best: Optional[tuple] = None
    for ratio in candidates:
        allowed = epochs_allowed(budget, epochs, used)
        if allowed <= 0:
            record["not_tried_budget_spent"] = [r for r in candidates if r >= ratio]
            break
        row = _try_candidate(search, ratio, allowed)
        used += row["epochs_trained"] if row["stopped_early"] else allowed  # granted, unless it stopped early
        passed = _guarded(row, model, guard)
        record["candidates"].append(row)
        accuracy = row["heldout_accuracy"]
        if best is None or (passed, accuracy or 0.0) > best[0]:
            best = ((passed, accuracy or 0.0), row, _snapshot(model) if search.auto else {})
        if not search.auto:
            record.update(chosen_ratio=ratio, kept_fraction=row["kept_fraction"], reason="fixed ρ given")
            return record
        if passed and accepted(accuracy, search.reference, search.margin):
            record.update(chosen_ratio=ratio, kept_fraction=row["kept_fraction"], accepted=True,
                          reason=f"smallest ρ whose {search.task.measure_name} {accuracy:.3f} is within "
                                 f"{search.margin:.3f} of the unrepaired {search.reference:.3f}")
            return record
        if not passed:
            record["not_tried_trigger_survived"] = [r for r in candidates if r > ratio]
            break
    return _fallback(search, record, best, budget)


def chosen_candidate(search: dict) -> Optional[dict]:
    """The row of a search record's chosen candidate (None when no candidate was trained)."""
    return next((row for row in search.get("candidates", []) if row["ratio"] == search.get("chosen_ratio")), None)


def _guarded(row: dict, model, guard: Optional[Callable]) -> bool:
    """Probe the trained candidate with ``guard`` (its record joins the row); False when a trigger survived."""
    if guard is None:
        return True
    row["trigger_probe"] = guard(model)
    return not row["trigger_probe"]["surviving"]


def _fallback(search: _Search, record: dict, best: tuple, budget: Optional[float]) -> dict:
    """No candidate accepted: keep the most accurate one (one that passed the trigger guard, if any did)."""
    (passed, accuracy), row, state = best
    search.model.load_state_dict(state)
    took = "the most accurate"
    if "trigger_probe" in row:
        took += (" that passed the trigger probe" if passed else
                 f", though a word confirmed as a trigger on the suspect still acted as one on every candidate tried "
                 f"({', '.join(row['trigger_probe']['surviving'])})")
    record.update(chosen_ratio=row["ratio"], kept_fraction=row["kept_fraction"], accepted=False,
                  reason=f"no candidate within {search.margin:.3f} of the unrepaired {search.reference:.3f}; "
                         f"took {took} ({accuracy:.3f})" + untried_note(record.get("not_tried_budget_spent"), budget))
    return record


def _start(task, pair, model, tokenizer, clean, config: PurifyConfig, plan, distill, after_mix, step_hook) -> _Search:
    """Split the clean rows and measure the unrepaired model on the held-out part."""
    train, heldout = split_clean(clean, config)
    reference = _heldout_measure(task, model, tokenizer, heldout, config) if heldout else None
    auto = config.ratio_auto and bool(heldout)
    margin = task.acceptance_margin(reference, len(heldout), config.search.tolerance) if auto else None
    return _Search(task, pair, model, tokenizer, config, plan, train, heldout, auto, reference, margin, distill,
                   after_mix, step_hook)


def _record(search: _Search) -> dict:
    config = search.config
    record: dict = {
        "mode": "auto" if search.auto else "fixed",
        "measure": search.task.measure_name,
        "train_rows": len(search.train),
        "heldout_rows": len(search.heldout),
        "reference_heldout_accuracy": search.reference,
        "tolerance": config.search.tolerance if search.auto else None,
        "accepted_drop": search.margin,
        "candidates": [],
    }
    if config.ratio_auto and not search.heldout:
        record["note"] = f"too few clean rows for a held-out slice: used the fixed ρ = {config.mix.ratio}"
    return record


def _try_candidate(search: _Search, ratio: float, epochs: float) -> dict:
    """Mix at ``ratio`` into the model, fine-tune it for ``epochs``, and measure it on the held-out rows."""
    config, model, heldout = search.config, search.model, search.heldout
    kept = load_mixed_state(model, search.pair, dataclasses.replace(config.mix, ratio=ratio), search.plan)
    edit = search.after_mix(model, search.tokenizer, search.train) if search.after_mix else None
    start = _heldout_measure(search.task, model, search.tokenizer, heldout, config) if heldout else None
    accuracy, best_epoch, seconds, stopped, sharded, trained, precision = start, None, 0.0, False, False, 0.0, None
    if config.finetune:
        result = _finetune_candidate(search, start, epochs)
        accuracy = max(result.eval_accuracy) if result.eval_accuracy else None
        best_epoch, seconds, stopped = result.best_epoch, round(result.seconds, 2), result.stopped_early
        sharded, trained, precision = result.sharded, round(result.epochs, 6), result.mixed_precision
    row = {"ratio": ratio, "kept_fraction": round(kept, 6), "heldout_accuracy_after_mix": start,
           "heldout_accuracy": accuracy, "best_epoch": best_epoch, "train_seconds": seconds, "stopped_early": stopped,
           "sharded_training": sharded, "epochs_trained": trained, "mixed_precision": precision}
    if edit is not None:
        row["after_mix"] = edit
    return row


def _train_config(search: _Search):
    """The candidates' training settings: soft targets (a classifier's distillation) train for
    distill_epochs; answer chats for the task's own."""
    config = search.config
    soft = search.distill is not None and search.distill[1] is not None
    return dataclasses.replace(config.train, epochs=config.distill_epochs) if soft else config.train


def _finetune_candidate(search: _Search, start: Optional[float], epochs: float):
    from ..train import finetune

    config = search.config
    unlabelled, targets = search.distill if search.distill else ((), None)
    train_config = dataclasses.replace(_train_config(search), epochs=epochs)
    stop = None
    if search.auto and config.search.stop_hopeless:
        line, planned = search.reference - search.margin, math.ceil(train_config.epochs)
        stop = lambda accuracies: hopeless(start, accuracies, planned, line)  # noqa: E731
    return finetune(search.model, search.tokenizer, search.train, train_config, eval_set=search.heldout or None,
                    unlabelled=unlabelled, unlabelled_targets=targets, stop_early=stop, step_hook=search.step_hook,
                    task=search.task)


def _heldout_measure(task: "Task", model, tokenizer, heldout: Sequence, config: PurifyConfig) -> float:
    return round(task.clean_measure(model, tokenizer, heldout, config.train.max_length), 6)


def _snapshot(model: "torch.nn.Module") -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
