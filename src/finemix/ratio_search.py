"""Choosing ρ with clean data only (``--ratio auto``).

The defender cannot measure ASR, so the rule trades only on clean accuracy: a
smaller ρ resets more of θ_B (more of a backdoor goes) but starts fine-tuning
further from the task. Rule (ours; the paper's was not recovered):

    try candidates from small to large; each is mixed, fine-tuned on the training
    part of the clean set and scored on its held-out part; take the first whose
    held-out accuracy is within max(tolerance, SE) of the unrepaired model's, where
    SE = sqrt(p(1 − p)/n) is the standard error of that model's held-out accuracy p
    on n rows. If none is, take the most accurate and say so.

The SE term: with tens of held-out rows one row is worth several points, so a fixed
tolerance of 3 points would reject candidates on a single row's noise (seen on MR
with 32 rows: 0.844 vs 0.875). With hundreds of rows the tolerance governs.

Stopping at the first acceptable candidate means larger ρ are never trained: the
search costs as many fine-tunes as candidates tried.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .config import PurifyConfig

if TYPE_CHECKING:
    import torch

    from .checkpoint import CheckpointPair
    from .data import Example
    from .pipeline import EpurPlan


def split_clean(clean: Sequence["Example"], config: PurifyConfig) -> tuple[list["Example"], list["Example"]]:
    """Training part and held-out part (empty when the set is too small to hold any out)."""
    from .data import stratified_split

    held = int(round(config.train.eval_fraction * len(clean)))
    if held < config.train.min_eval_rows or len(clean) - held < 1:
        return list(clean), []
    train, heldout = stratified_split(clean, (1.0 - held / len(clean), held / len(clean)), seed=config.train.seed)
    return train, heldout


def choose_ratio(
    pair: "CheckpointPair",
    model: "torch.nn.Module",
    tokenizer,
    clean: Sequence["Example"],
    config: PurifyConfig,
    plan: Optional["EpurPlan"],
    distill: Optional[tuple] = None,
    after_mix: Optional[Callable] = None,
) -> dict:
    """Leave ``model`` repaired with the chosen ρ; return the search record for the report.

    ``after_mix(model, tokenizer, clean_rows) -> dict``, when given, edits each mixed
    model before its fine-tuning (fine-pruning prunes there); its record joins the row.
    """
    from .evaluation import predict
    from .finetune import finetune
    from .pipeline import load_mixed_state

    train, heldout = split_clean(clean, config)
    reference = _accuracy(predict(model, tokenizer, heldout, max_length=config.train.max_length), heldout) if heldout else None
    auto = config.ratio_auto and bool(heldout)
    margin = acceptance_margin(reference, len(heldout), config.search.tolerance) if auto else None
    candidates = sorted(config.search.candidates) if auto else [config.mix.ratio]
    record: dict = {
        "mode": "auto" if auto else "fixed",
        "train_rows": len(train),
        "heldout_rows": len(heldout),
        "reference_heldout_accuracy": reference,
        "tolerance": config.search.tolerance if auto else None,
        "accepted_drop": margin,
        "candidates": [],
    }
    if config.ratio_auto and not heldout:
        record["note"] = f"too few clean rows for a held-out slice: used the fixed ρ = {config.mix.ratio}"
    unlabelled, targets = distill if distill else ((), None)
    frozen = plan.rows if (plan is not None and config.freeze_epur_rows) else ()
    train_config = dataclasses.replace(config.train, epochs=config.distill_epochs) if distill else config.train
    best: Optional[tuple[float, dict, dict]] = None
    for ratio in candidates:
        mix = dataclasses.replace(config.mix, ratio=ratio)
        kept = load_mixed_state(model, pair, mix, plan)
        edit = after_mix(model, tokenizer, train) if after_mix else None
        start = _accuracy(predict(model, tokenizer, heldout, max_length=config.train.max_length), heldout) if heldout else None
        stopped = False
        if config.finetune:
            stop = None
            if auto and config.search.stop_hopeless:
                line = reference - margin
                epochs = math.ceil(train_config.epochs)
                stop = lambda accuracies, s=start: hopeless(s, accuracies, epochs, line)  # noqa: E731
            result = finetune(model, tokenizer, train, train_config, eval_set=heldout or None,
                              unlabelled=unlabelled, unlabelled_targets=targets, stop_early=stop,
                              frozen_embedding_rows=frozen)
            accuracy = max(result.eval_accuracy) if result.eval_accuracy else None
            best_epoch, seconds, stopped = result.best_epoch, round(result.seconds, 2), result.stopped_early
        else:
            accuracy, best_epoch, seconds = start, None, 0.0
        row = {"ratio": ratio, "kept_fraction": round(kept, 6), "heldout_accuracy_after_mix": start,
               "heldout_accuracy": accuracy, "best_epoch": best_epoch, "train_seconds": seconds, "stopped_early": stopped}
        if edit is not None:
            row["after_mix"] = edit
        record["candidates"].append(row)
        if best is None or (accuracy or 0.0) > (best[0] or 0.0):
            best = (accuracy, row, _snapshot(model) if auto else {})
        if not auto:
            record.update(chosen_ratio=ratio, kept_fraction=row["kept_fraction"], reason="fixed ρ given")
            return record
        if accuracy is not None and accuracy >= reference - margin - 1e-9:
            record.update(chosen_ratio=ratio, kept_fraction=row["kept_fraction"],
                          reason=f"smallest ρ whose held-out accuracy {accuracy:.3f} is within {margin:.3f} of the unrepaired {reference:.3f}")
            return record
    accuracy, row, state = best
    model.load_state_dict(state)
    record.update(chosen_ratio=row["ratio"], kept_fraction=row["kept_fraction"],
                  reason=f"no candidate within {margin:.3f} of the unrepaired {reference:.3f}; took the most accurate ({accuracy:.3f})")
    return record


def hopeless(start: float, accuracies: Sequence[float], epochs: int, line: float) -> bool:
    """True when a candidate cannot reach ``line``: its best held-out accuracy so far plus its best
    per-epoch gain so far (from ``start``, the accuracy right after mixing) for every remaining epoch
    stays below. Learning curves flatten, so the projection is optimistic and a stop is safe in
    all but odd curves; a stopped candidate still counts, with its best epoch, if none is accepted."""
    remaining = epochs - len(accuracies)
    if remaining <= 0 or not accuracies:
        return False
    points = [start, *accuracies]
    best_gain = max(0.0, max(b - a for a, b in zip(points, points[1:])))
    return max(accuracies) + remaining * best_gain < line - 1e-9


def acceptance_margin(reference: float, rows: int, tolerance: float) -> float:
    """max(tolerance, standard error of a held-out accuracy ``reference`` measured on ``rows`` rows)."""
    import math

    standard_error = math.sqrt(max(reference * (1.0 - reference), 0.0) / max(rows, 1))
    return round(max(tolerance, standard_error), 6)


def _snapshot(model: "torch.nn.Module") -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _accuracy(predictions: Sequence[int], examples: Sequence["Example"]) -> float:
    return round(sum(int(p == e.label) for p, e in zip(predictions, examples)) / max(1, len(examples)), 6)
