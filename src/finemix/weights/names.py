"""Name mapping: ``map_names`` pairs a classifier's tensor names (``bert.encoder…``) with a
bare pre-trained encoder's (``encoder…``) by stripping or adding the base-model prefix,
in whichever direction the two folders need.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ..errors import FinemixError


@dataclasses.dataclass(frozen=True)
class NameMap:
    """How the fine-tuned checkpoint's tensors find their pre-trained counterparts."""

    pairs: dict[str, str]  # fine-tuned name -> pre-trained name
    finetuned_only: list[str]  # e.g. the classification head; handled by the head policy
    pretrained_only: list[str]  # e.g. an MLM head; ignored
    rule: str  # "identical names" | "strip 'bert.'" | "add 'bert.'"


def prefix_candidates(finetuned: Sequence[str], pretrained: Sequence[str]) -> list[str]:
    """Leading name components found on one side only (``bert`` in ``bert.encoder…`` against a
    bare ``encoder…``): the places a base-model prefix can be.

    Read off the names instead of transformers' ``base_model_prefix`` because that needs
    the model class imported (2.5 s, most of a small mix's time); it also covers any
    architecture, known to transformers or not.
    """
    heads_a = {name.split(".", 1)[0] for name in finetuned if "." in name}
    heads_b = {name.split(".", 1)[0] for name in pretrained if "." in name}
    return sorted(heads_a ^ heads_b)


def map_names(finetuned: list[str], pretrained: list[str], prefixes: Sequence[str]) -> NameMap:
    """Choose the renaming (none, or strip or add one of ``prefixes``) that pairs the most tensors."""
    available = set(pretrained)
    rules = {"identical names": lambda n: n}
    for prefix in prefixes:
        dotted = prefix + "."
        rules[f"strip '{dotted}'"] = lambda n, d=dotted: n[len(d):] if n.startswith(d) else n
        rules[f"add '{dotted}'"] = lambda n, d=dotted: n if n.startswith(d) else d + n
    best_rule, best_pairs = "identical names", {}
    for rule, rename in rules.items():
        pairs = {n: rename(n) for n in finetuned if rename(n) in available}
        if len(pairs) > len(best_pairs):
            best_rule, best_pairs = rule, pairs
    if not best_pairs:
        raise FinemixError("the two checkpoints share no tensor names (different architectures?)")
    used = set(best_pairs.values())
    return NameMap(
        pairs=best_pairs,
        finetuned_only=[n for n in finetuned if n not in best_pairs],
        pretrained_only=[n for n in pretrained if n not in used],
        rule=best_rule,
    )
