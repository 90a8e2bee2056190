"""Stratified splits: exact split sizes, (nearly) equal label proportions, deterministic for a seed."""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Optional, Sequence

from ..errors import FinemixError
from .examples import Example, label_counts

_PARTITION_SEED = 1234  # fixed so the test set never depends on the caller's seed


def _largest_remainder(total: int, fractions: Sequence[Fraction]) -> list[int]:
    counts = [int(total * f) for f in fractions]
    order = sorted(range(len(fractions)), key=lambda j: (-(total * fractions[j] - counts[j]), j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return counts


def _split_counts(sizes: Sequence[int], fractions: Sequence[Fraction]) -> list[list[int]]:
    """counts[label][split]: split totals exact (largest remainder), each cell its quota rounded.

    Start from the floors; the leftover rows form a 0/1 matrix with known row
    and column sums, found by augmenting paths over the cells with a positive
    remainder (so each cell is its quota's floor or ceiling). Should that ever
    be infeasible, any cell may take the extra row, then any number of them.
    """
    totals = _largest_remainder(sum(sizes), fractions)
    floors = [[int(size * f) for f in fractions] for size in sizes]
    row_left = [size - sum(row) for size, row in zip(sizes, floors)]
    col_left = [total - sum(row[j] for row in floors) for j, total in enumerate(totals)]
    remainder = [[size * f - c for f, c in zip(fractions, row)] for size, row in zip(sizes, floors)]
    extra = None
    for allowed in ([[r > 0 for r in row] for row in remainder], [[True] * len(fractions) for _ in sizes]):
        extra = _zero_one_matrix(row_left, list(col_left), allowed)
        if extra is not None:
            break
    if extra is None:  # pragma: no cover - not reached in randomised tests; keeps totals exact regardless
        extra = _spread(row_left, list(col_left))
    counts = [[c + e for c, e in zip(row, extra_row)] for row, extra_row in zip(floors, extra)]
    _ensure_presence(counts, sizes, fractions)
    return counts


def _zero_one_matrix(row_sums: list[int], col_left: list[int], allowed: list[list[bool]]) -> Optional[list[list[int]]]:
    """A 0/1 matrix on ``allowed`` cells with the given row sums and column sums, or None."""
    matrix = [[0] * len(col_left) for _ in row_sums]
    for row, need in enumerate(row_sums):
        for _ in range(need):
            if not _augment(row, matrix, col_left, allowed):
                return None
    return matrix


def _augment(start: int, matrix: list[list[int]], col_left: list[int], allowed: list[list[bool]]) -> bool:
    """Place one more 1 in row ``start``, shifting other rows' 1s along an augmenting path (BFS)."""
    col_parent: dict[int, int] = {}  # column -> row that reached it
    row_parent: dict[int, int] = {start: -1}  # row -> column it was reached through
    queue = [start]
    for row in queue:
        for col in range(len(col_left)):
            if col in col_parent or not allowed[row][col] or matrix[row][col]:
                continue
            col_parent[col] = row
            if col_left[col] > 0:
                _flip_path(col, col_parent, row_parent, matrix)
                col_left[col] -= 1
                return True
            for other, cells in enumerate(matrix):
                if cells[col] and other not in row_parent:
                    row_parent[other] = col
                    queue.append(other)
    return False


def _flip_path(col: int, col_parent: dict[int, int], row_parent: dict[int, int], matrix: list[list[int]]) -> None:
    while col != -1:
        row = col_parent[col]
        matrix[row][col] = 1
        col = row_parent[row]
        if col != -1:
            matrix[row][col] = 0  # this row's 1 moves from col to the newly set cell


def _spread(row_sums: list[int], col_left: list[int]) -> list[list[int]]:
    matrix = [[0] * len(col_left) for _ in row_sums]
    for row, need in enumerate(row_sums):
        for col in range(len(col_left)):
            take = min(need, col_left[col])
            matrix[row][col] += take
            col_left[col] -= take
            need -= take
    return matrix


def _ensure_presence(counts: list[list[int]], sizes: Sequence[int], fractions: Sequence[Fraction]) -> None:
    """Give every split at least one row of each label that has enough rows, keeping split sizes.

    A missing (label, split) cell takes one row of that label from the split most
    over that label's quota, and pays back with the other label that is most over
    quota in the receiving split and most under it in the donor, so the swaps spread
    instead of piling one label into one split.
    """
    n_splits = len(counts[0]) if counts else 0
    quota = [[size * f for f in fractions] for size in sizes]

    def surplus(label: int, split: int) -> float:
        return counts[label][split] - quota[label][split]

    for label, row in enumerate(counts):
        if sizes[label] < n_splits:
            continue
        for j in range(n_splits):
            if row[j] > 0:
                continue
            donors = [k for k in range(n_splits) if row[k] >= 2]
            if not donors:
                continue
            donor = max(donors, key=lambda k: (surplus(label, k), -k))
            payers = [i for i in range(len(counts)) if i != label and counts[i][j] >= 2]
            if not payers:
                continue  # not possible without emptying another cell
            other = max(payers, key=lambda i: (surplus(i, j) - surplus(i, donor), -i))
            row[donor] -= 1
            row[j] += 1
            counts[other][j] -= 1
            counts[other][donor] += 1


def _partition(examples: Sequence[Example], fractions: Sequence[Fraction], rng: random.Random) -> list[list[Example]]:
    labels = sorted(label_counts(examples))
    groups = {label: [e for e in examples if e.label == label] for label in labels}
    for label in labels:
        rng.shuffle(groups[label])
    counts = _split_counts([len(groups[label]) for label in labels], fractions)
    splits: list[list[Example]] = [[] for _ in fractions]
    for label, row in zip(labels, counts):
        start = 0
        for j, count in enumerate(row):
            splits[j].extend(groups[label][start : start + count])
            start += count
    for split in splits:
        rng.shuffle(split)  # otherwise rows come grouped by label
    return splits


def _exact_fractions(fractions: Sequence[float]) -> list[Fraction]:
    values = list(fractions)
    if not values or any(not 0.0 <= f <= 1.0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise FinemixError(f"split fractions must be in [0, 1] and sum to 1, got {tuple(values)}")
    exact = [Fraction(f).limit_denominator(10**9) for f in values]
    return [f / sum(exact) for f in exact]


def stratified_split(examples: Sequence[Example], fractions: Sequence[float], seed: int) -> list[list[Example]]:
    """Split into ``len(fractions)`` shuffled parts with (nearly) equal label proportions.

    Split sizes follow ``fractions`` exactly up to rounding; every split gets
    each label that has at least one row per split. Deterministic for a seed.
    """
    return _partition(examples, _exact_fractions(fractions), random.Random(seed))


def stratified_sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """``n`` rows with label proportions as close as possible to ``examples``'."""
    if not 0 <= n <= len(examples):
        raise FinemixError(f"cannot sample {n} rows from {len(examples)}")
    if n == 0:
        return []
    fraction = Fraction(n, len(examples))
    return _partition(examples, [fraction, 1 - fraction], random.Random(seed))[0]
