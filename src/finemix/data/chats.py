"""Chat rows for causal LMs: the ``Chat`` record and the JSONL loader.

A row is either ``{"instruction", "input" (optional), "response"}`` (Alpaca style; ``output``
is read as ``response``) or ``{"messages": [{"role", "content"}, ...]}`` whose last message is
the assistant's answer. The prompt is every message before the answer; the loss falls on the
answer only (tasks/causal_lm.py). Every problem a user can cause raises ``FinemixError`` with
one line naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import FinemixError
from .files import PathLike, _decode, _short, json_lines

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Chat:
    """One conversation: the prompt messages ((role, content) pairs) and the answer to learn."""

    prompt: tuple[tuple[str, str], ...]
    response: str

    @classmethod
    def single(cls, instruction: str, response: str = "", system: str | None = None) -> "Chat":
        """A one-turn chat: an optional system message, the user's instruction, the answer."""
        prompt = ((("system", system),) if system else ()) + (("user", instruction),)
        return cls(prompt, response)

    def messages(self, with_response: bool = True) -> list[dict[str, str]]:
        """The chat as the ``messages`` list a tokenizer's chat template takes."""
        rows = [{"role": role, "content": content} for role, content in self.prompt]
        return rows + ([{"role": "assistant", "content": self.response}] if with_response else [])

    @property
    def user_text(self) -> str:
        """The last user message (where attacks put a trigger, and what E-PUR counts)."""
        return next((content for role, content in reversed(self.prompt) if role == "user"), "")

    def texts(self) -> list[str]:
        """Every text of the chat (token frequencies for E-PUR)."""
        return [content for _, content in self.prompt] + ([self.response] if self.response else [])


def load_chats(path: PathLike, require_response: bool = True) -> list[Chat]:
    """Chats from a ``.jsonl`` file (one object per line; see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise FinemixError(f"{path}: chat data must be a .jsonl file (one JSON object per line)")
    chats = [chat_from_object(obj, f"{path}: line {number}", require_response)
             for number, obj in json_lines(path, _decode(path))]
    if not chats:
        raise FinemixError(f"{path}: no rows")
    return chats


def chat_from_object(obj: Any, where: str, require_response: bool = True) -> Chat:
    """A ``Chat`` from one parsed row, checked."""
    if not isinstance(obj, dict):
        raise FinemixError(f"{where}: a JSON {type(obj).__name__}, expected an object")
    if "messages" in obj:
        return _from_messages(obj["messages"], where, require_response)
    instruction = _text(obj, "instruction", where, required=True)
    extra = _text(obj, "input", where, required=False)
    response = _text(obj, "output" if "output" in obj and "response" not in obj else "response", where,
                     required=require_response)
    return Chat.single(f"{instruction}\n\n{extra}" if extra else instruction, response)


def _text(obj: dict, key: str, where: str, required: bool) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"a JSON {type(value).__name__}, not a string"
        raise FinemixError(f"{where}: field {key!r} is {kind}")
    _check_encodable(value, where)
    if required and not value.strip():
        raise FinemixError(f"{where}: field {key!r} is empty")
    return value.strip()


def _from_messages(messages: Any, where: str, require_response: bool) -> Chat:
    if not isinstance(messages, list) or not messages:
        raise FinemixError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    pairs = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise FinemixError(f"{where}: message {index} must be {{\"role\": one of {', '.join(ROLES)}, "
                               f"\"content\": a string}}, got {_short(json.dumps(message))}")
        _check_encodable(message["content"], where)
        pairs.append((message["role"], message["content"].strip()))
    answer = None
    if pairs[-1][0] == "assistant":
        answer = pairs.pop()[1]
    if require_response and not answer:
        raise FinemixError(f"{where}: the last message must be a non-empty assistant answer (the response to learn)")
    if not any(role == "user" and content for role, content in pairs):
        raise FinemixError(f"{where}: no non-empty user message before the answer")
    return Chat(tuple(pairs), answer or "")


def _check_encodable(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FinemixError(f"{where}: contains an invalid unicode escape (lone surrogate)") from None


def write_chats(path: PathLike, chats: Sequence[Chat]) -> None:
    """Chats as JSONL ``messages`` rows (what ``load_chats`` reads back)."""
    with open(path, "w", encoding="utf-8") as file:
        for chat in chats:
            file.write(json.dumps({"messages": chat.messages(with_response=bool(chat.response))}) + "\n")
