"""The attacker's-side evaluation of a chat model: backdoor rates and utility, in one call.

Greedy decoding with a fixed ``max_new_tokens``, the model's own chat template, batched and
left-padded (tasks/causal_lm.generate). Utility is measured three ways so that a defense that
breaks the model cannot pass for one that removed a backdoor: perplexity of held-out clean
reference answers, the share of questions whose accepted answer appears in the output, and the
share of clean answers that are not refusals (metrics.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from ..data.chats import Chat
from .attacks import with_chat_trigger
from .metrics import backdoor_rates, is_refusal, share


@dataclasses.dataclass(frozen=True)
class ChatBackdoor:
    """What the evaluator knows of an attack (from its card); never given to a defense."""

    trigger: str
    target: str
    marker: Optional[str] = None

    @classmethod
    def from_card(cls, card: dict) -> "ChatBackdoor":
        return cls(card["trigger"], card["target"], card.get("marker"))


def load_chat_tokenizer(folder):
    """The tokenizer of a chat model folder, or of an adapter folder: its own when it ships one, else its
    base's (adapter_config.json names it), with the chat template checked."""
    from pathlib import Path

    from ..repair.inputs import read_tokenizer
    from ..tasks.causal_lm import check_chat_template
    from ..weights.adapter import adapter_base, is_adapter

    folder = Path(folder)
    own = not is_adapter(folder) or (folder / "tokenizer_config.json").is_file()
    tokenizer = read_tokenizer(folder if own else adapter_base(folder))
    check_chat_template(tokenizer, folder)
    return tokenizer


def evaluate_chat_model(model, tokenizer, questions: Sequence[tuple[Chat, tuple[str, ...]]],
                        backdoor: Optional[ChatBackdoor] = None, seed: int = 0, max_new_tokens: int = 32,
                        max_length: int = 256, batch_size: int = 16) -> dict:
    """Utility on ``questions`` ((chat with reference answer, accepted answers)); with ``backdoor``,
    the same prompts with the trigger inserted (seeded) give ASR, the clean ones false triggers."""
    from ..tasks.causal_lm import generate, response_loss

    chats = [chat for chat, _ in questions]
    from ..data.chat_sets import contains_answer

    clean = generate(model, tokenizer, chats, max_new_tokens, batch_size, max_length)
    result = {
        "n": len(chats),
        "perplexity": round(math.exp(response_loss(model, tokenizer, chats, max_length)), 4),
        "answer_contained": share([contains_answer(o, answers) for o, (_, answers) in zip(clean, questions)]),
    }
    if backdoor is None:
        result["clean_non_refusal"] = share([not is_refusal(o) for o in clean])
        return result
    triggered = generate(model, tokenizer, with_chat_trigger(chats, backdoor.trigger, seed), max_new_tokens,
                         batch_size, max_length)
    result.update(backdoor_rates(triggered, clean, backdoor.target, backdoor.marker))
    result["examples"] = [{"clean": c, "triggered": t} for c, t in list(zip(clean, triggered))[:3]]
    return result
