"""E-PUR as a step of the repair: count token frequencies, score every vocabulary row, plan the reset.

The math is in core/epur.py; the reset itself happens while mixing (mix_step.py), where
the planned rows of θ_B are replaced by θ_Pre's before the mask is applied.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from ..config import EpurConfig
from ..core import epur as epur_math
from ..weights.pair import CheckpointPair


@dataclasses.dataclass
class EpurPlan:
    """Which embedding rows E-PUR resets, and why."""

    tensor: str
    rows: list[int]
    tokens: list[dict]  # {"id", "token", "score", "drift", "frequency"} per reset row, highest score first
    frequency_rows: int  # texts the frequencies were counted on
    # Other tensors whose same rows are reset: a decoder's untied output matrix (lm_head), whose
    # row k scores token k as the next word. A tied one is the embedding itself, reset once.
    also_reset: list[str] = dataclasses.field(default_factory=list)
    note: Optional[str] = None  # why nothing was reset, when nothing was

    def resets(self, name: str) -> bool:
        return name == self.tensor or name in self.also_reset

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_epur(pair: CheckpointPair, tokenizer, texts: Sequence[str], config: EpurConfig, max_length: int = 512) -> EpurPlan:
    """Score every vocabulary row and pick the top N to reset."""
    name = pair.embedding_name()
    finetuned, pretrained = pair.finetuned.get(name), pair.pretrained.get(pair.names.pairs[name])
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"] if texts else []
    frequency = epur_math.token_frequencies(encoded, finetuned.shape[0])
    drift = epur_math.embedding_drift(finetuned, pretrained)
    scores = epur_math.epur_scores(drift, frequency, config.min_frequency)
    # A row the fine-tuning never moved equals θ_Pre already: resetting it would change nothing.
    ids = [i for i in epur_math.top_rows(scores, config.top_n).tolist() if drift[i] > 0]
    strings = tokenizer.convert_ids_to_tokens(ids)
    tokens = [
        {"id": i, "token": s, "score": round(float(scores[i]), 6), "drift": round(float(drift[i]), 6), "frequency": int(frequency[i])}
        for i, s in zip(ids, strings)
    ]
    note = None if ids else ("the embedding did not move (e.g. a LoRA adapter that does not train it): "
                             "E-PUR had nothing to act on")
    return EpurPlan(tensor=name, rows=ids, tokens=tokens, frequency_rows=len(texts), also_reset=_untied_output(pair, name),
                    note=note)


def _untied_output(pair: CheckpointPair, embedding: str) -> list[str]:
    """The decoder's output matrix when it is stored apart from the embedding (same shape), else none."""
    from ..weights.roles import roles_for

    suffix = roles_for(pair.config).lm_head
    if not suffix or pair.config.get("tie_word_embeddings") is True:
        return []
    shape = pair.finetuned.shape(embedding)
    return [n for n in pair.names.pairs if n.endswith(suffix) and n != embedding and pair.finetuned.shape(n) == shape]
