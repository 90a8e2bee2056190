"""Test E-PUR's flagged words as triggers on the clean rows, before and after the reset (core/trigger_check.py).

When the reset clears every confirmed trigger and costs no clean accuracy, ``purify`` returns the
E-PUR'd suspect without mixing (``stop_when_epur_clears``): an embedding-only backdoor (EP) is then
gone, and mixing would only cost accuracy. A second backdoor that E-PUR cannot see (a sentence, a
style) would survive: the report says so. Only words are tested (the defender's candidates, never the
attack's trigger); classifiers only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..core.ratio_rule import acceptance_margin
from ..core.trigger_check import confirmed_triggers, flip_rate, reset_cleared
from ..data.augment import with_word
from ..tasks.classification import clean_accuracy, predict
from ..weights.pair import CheckpointPair
from .epur_step import EpurPlan

if TYPE_CHECKING:
    from ..data import Example

PROBE_WORDS = 5  # E-PUR's highest-scored whole words tested
PROBE_ROWS = 64  # labelled rows each word is inserted into (a flip rate to within a few points)


def probe_words(plan: EpurPlan, tokenizer, count: int = PROBE_WORDS) -> list[str]:
    """E-PUR's ``count`` highest-scored tokens that are whole words: the word, written in a text,
    is that one token (so a word piece, a special token or punctuation glued to others is skipped)."""
    words = []
    for token in plan.tokens:
        word = tokenizer.convert_tokens_to_string([token["token"]]).strip()
        if word.isalnum() and tokenizer(word, add_special_tokens=False)["input_ids"] == [token["id"]]:
            words.append(word)
        if len(words) == count:
            break
    return words


def word_flip_rates(model, tokenizer, rows: Sequence["Example"], words: Sequence[str], max_length: int,
                    seed: int) -> dict[str, float]:
    """Each word's flip rate, inserted once at a seeded random position in each row (pairs: in either
    segment, the larger rate counts: the trigger's segment is unknown)."""
    base = predict(model, tokenizer, rows, max_length=max_length)
    segments = ["text"] + (["text_b"] if all(row.text_b is not None for row in rows) else [])
    classes = model.config.num_labels
    return {word: round(max(flip_rate(base, predict(model, tokenizer, with_word(rows, word, seed, segment),
                                                    max_length=max_length), classes)
                            for segment in segments), 6)
            for word in words}


def probe_rows(clean: Sequence["Example"]) -> list:
    """The labelled rows every probe inserts its words into: the suspect's, the reset's and each candidate's."""
    return list(clean[:PROBE_ROWS])


def probe_suspect(model, tokenizer, clean: Sequence["Example"], plan: EpurPlan, max_length: int, seed: int) -> dict:
    """E-PUR's top words inserted into the first PROBE_ROWS clean rows of the suspect: the record's
    ``flip_before`` (each word's flip rate) and ``confirmed`` (those that act as triggers)."""
    rows = probe_rows(clean)
    words = probe_words(plan, tokenizer)
    record: dict = {"words": words, "rows": len(rows), "cleared": False}
    if words and rows:
        record["flip_before"] = word_flip_rates(model, tokenizer, rows, words, max_length, seed)
        record["confirmed"] = confirmed_triggers(record["flip_before"])
    return record


def check_epur_reset(model, tokenizer, pair: CheckpointPair, clean: Sequence["Example"], plan: EpurPlan,
                     max_length: int, seed: int, tolerance: float) -> dict:
    """Probe the suspect, reset E-PUR's rows in ``model`` and probe again. The rows stay reset only when
    the reset cleared the confirmed triggers and kept the suspect's clean accuracy on ``clean`` (within
    the ρ rule's margin, core/ratio_rule.py). Returns the record ("cleared": ``model`` is now the repair)."""
    record = probe_suspect(model, tokenizer, clean, plan, max_length, seed)
    if not record.get("confirmed"):  # no trigger among the words: nothing for the reset to clear
        return record
    rows = probe_rows(clean)
    reference = clean_accuracy(model, tokenizer, clean, max_length)
    saved = _reset_rows(model, pair, plan)
    record["flip_after"] = word_flip_rates(model, tokenizer, rows, record["confirmed"], max_length, seed)
    verdict = reset_cleared(record["flip_before"], record["flip_after"])
    accuracy = clean_accuracy(model, tokenizer, clean, max_length)
    kept_accuracy = accuracy >= reference - acceptance_margin(reference, len(clean), tolerance)
    record.update(verdict.to_dict(), cleared=verdict.cleared and kept_accuracy,
                  clean_accuracy={"suspect": round(reference, 6), "after_reset": round(accuracy, 6)})
    if not record["cleared"]:
        _restore_rows(model, plan, saved)
    return record


def trigger_guard(check: Optional[dict], tokenizer, clean: Sequence["Example"], max_length: int,
                  seed: int) -> Optional[Callable[[object], dict]]:
    """For the ρ search: ``guard(candidate) -> {"flip": {word: rate}, "surviving": [words]}``, the words the
    probe confirmed as triggers on the suspect, inserted into the same rows of a repaired candidate;
    "surviving" are those that still move CONFIRM_FLIP of them (they still act as triggers). None when the
    probe confirmed no word: then there is nothing the clean rows can test."""
    words = list((check or {}).get("confirmed") or [])
    if not words:
        return None
    rows = probe_rows(clean)

    def guard(model) -> dict:
        flips = word_flip_rates(model, tokenizer, rows, words, max_length, seed)
        return {"flip": flips, "surviving": confirmed_triggers(flips)}

    return guard


CLEARED_CAVEAT = ("a second backdoor that E-PUR cannot see (a sentence or a style trigger) would survive: "
                  "set stop_when_epur_clears: false in --config to mix and fine-tune as well")
CLEARED_MODE = "epur-cleared"  # the search record's mode when no ρ was searched: the E-PUR'd suspect is the repair


def cleared_search(check: dict) -> dict:
    """The report's ``ratio_search`` record of a repair that stopped after E-PUR (ρ = 1, nothing mixed)."""
    words = ", ".join(f"'{w}' ({100 * check['flip_before'][w]:.0f} % of rows moved before the reset, "
                      f"{100 * check['flip_after'][w]:.0f} % after)" for w in check["confirmed"])
    reason = (f"E-PUR's reset cleared what acted as a trigger on the clean rows: {words}, and kept clean accuracy "
              f"({check['clean_accuracy']['suspect']:.3f} → {check['clean_accuracy']['after_reset']:.3f}); "
              "nothing was mixed or fine-tuned; " + CLEARED_CAVEAT)
    return {"mode": CLEARED_MODE, "chosen_ratio": 1.0, "kept_fraction": 1.0, "accepted": True, "candidates": [],
            "heldout_rows": 0, "reference_heldout_accuracy": None, "reason": reason}


def _reset_rows(model, pair: CheckpointPair, plan: EpurPlan):
    """E-PUR's rows of the input embedding set to θ_Pre's; returns the suspect's, to undo it."""
    import torch

    weight = model.get_input_embeddings().weight
    rows = torch.as_tensor(plan.rows, dtype=torch.long)
    pretrained = pair.pretrained.get(pair.names.pairs[plan.tensor])[rows]
    rows = rows.to(weight.device)
    with torch.no_grad():
        saved = weight[rows].clone()
        weight[rows] = pretrained.to(weight.device, weight.dtype)
    return saved


def _restore_rows(model, plan: EpurPlan, saved) -> None:
    import torch

    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[torch.as_tensor(plan.rows, dtype=torch.long, device=weight.device)] = saved
