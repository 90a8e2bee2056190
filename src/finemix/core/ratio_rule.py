"""When a ρ candidate is good enough, judged on clean data only (the defender cannot measure ASR).

A candidate is accepted when its held-out accuracy is within ``acceptance_margin`` of the
unrepaired model's: max(tolerance, SE), SE = sqrt(p(1 − p)/n) the standard error of that
model's held-out accuracy p on n rows. With tens of held-out rows one row is worth several
points, so a fixed tolerance of 3 points would reject candidates on a single row's noise (seen
on MR with 32 rows: 0.844 vs 0.875); with hundreds of rows the tolerance governs. Ours; the
paper's rule was not recovered (docs/paper-choices.md).
"""

from __future__ import annotations

import math
from typing import Sequence

EPSILON = 1e-9  # accuracies are rounded to 6 digits; equal values must compare equal


def acceptance_margin(reference: float, rows: int, tolerance: float) -> float:
    """max(tolerance, standard error of a held-out accuracy ``reference`` measured on ``rows`` rows)."""
    standard_error = math.sqrt(max(reference * (1.0 - reference), 0.0) / max(rows, 1))
    return round(max(tolerance, standard_error), 6)


def loss_margin(tolerance: float) -> float:
    """For a loss-based measure (a causal LM's held-out response loss, negated): ``tolerance`` is
    read as a relative rise in perplexity, so the accepted rise in mean token loss is
    log(1 + tolerance) (0.03: perplexity within 3 %). Ours, as the accuracy rule."""
    return round(math.log1p(tolerance), 6)


def accepted(accuracy: "float | None", reference: float, margin: float) -> bool:
    """True when a candidate's held-out ``accuracy`` is within ``margin`` of the unrepaired ``reference``."""
    return accuracy is not None and accuracy >= reference - margin - EPSILON


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
    return max(accuracies) + remaining * best_gain < line - EPSILON


def epochs_allowed(budget: "float | None", epochs: float, used: float) -> float:
    """Epochs the next candidate may train when a search may spend ``budget`` candidates' worth of
    ``epochs`` in all and has spent ``used`` (None: no bound); 0 when the budget is spent."""
    if budget is None:
        return epochs
    return max(0.0, min(epochs, round(budget * epochs - used, 6)))


def untried_note(untried: Sequence[float], budget: "float | None") -> str:
    """The clause a search's reason gains when its budget left candidates untried ("" when none were)."""
    if not untried:
        return ""
    return f"; not tried: ρ {', '.join(map(str, untried))} (search budget of {budget:g} candidates' epochs spent)"
