"""The defender's inputs, checked: the tokenizer of the pair, and the clean labelled rows.

Defense boundary: nothing in repair/ takes a trigger, target label or poison flag; evaluation
with a trigger lives in evaluation.py and is never called from here (tests/test_defenses.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import FinemixError
from ..weights.pair import CheckpointPair
from ..weights.tokenizer_files import check_same_vocabulary, has_tokenizer_files, same_tokenizer_files

if TYPE_CHECKING:
    from ..data import Example


def load_tokenizer(pair: CheckpointPair, required: bool = True):
    """The suspect model's tokenizer, checked against the pre-trained one when both exist.

    With ``required`` False (a mix needs no tokenizer, only the check), nothing is
    imported or loaded when the vocabulary files are byte-identical or absent: importing
    transformers' tokenizer classes alone takes over a second.
    """
    same_files = same_tokenizer_files(pair.finetuned_dir, pair.pretrained_dir)
    if not required and (same_files or not has_tokenizer_files(pair.finetuned_dir)):
        return None
    try:
        tokenizer = read_tokenizer(pair.finetuned_dir)
    except FinemixError:
        if not required:
            return None
        raise
    if required:
        check_tokenizer_fits(tokenizer, pair.finetuned.shape(pair.embedding_name())[0], pair.finetuned_dir)
    if same_files or not has_tokenizer_files(pair.pretrained_dir):
        return tokenizer  # a bare pre-trained folder may ship weights only: nothing to compare
    try:
        pre_tokenizer = read_tokenizer(pair.pretrained_dir)
    except FinemixError:
        return tokenizer
    check_same_vocabulary(tokenizer, pre_tokenizer)
    return tokenizer


def read_tokenizer(folder: Path):
    """A model folder's own tokenizer, or a one-line error. A folder without vocabulary files is
    refused: transformers would build one of five special tokens and every word would be [UNK]."""
    require_tokenizer_files(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as error:  # malformed files raise many unrelated types
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise FinemixError(f"{folder}: cannot load its tokenizer ({reason})") from None


def require_tokenizer_files(folder: Path) -> None:
    if not has_tokenizer_files(folder):
        raise FinemixError(f"{folder}: no tokenizer files (tokenizer.json, vocab.txt, ...): give it the "
                           "tokenizer the model was trained with")


def check_tokenizer_fits(tokenizer, embedding_rows: int, folder: Path) -> None:
    """Every id the tokenizer can produce has a row in the model's word embedding."""
    largest = max(tokenizer.get_vocab().values(), default=-1)
    if largest >= embedding_rows:
        raise FinemixError(f"{folder}: the tokenizer has token ids up to {largest} but the model's word embedding "
                           f"has {embedding_rows} rows (a tokenizer from another model?)")


def check_clean_rows(clean: Sequence["Example"], num_labels: int) -> tuple[list["Example"], dict]:
    """Refuse clean sets that would train a wrong model; drop exact duplicates; (rows, notes for the report).

    Duplicates are dropped because a row in both the training and held-out parts of
    the ρ search would inflate held-out accuracy; rows with the same text but
    different labels are kept (label noise is the user's call) and counted.
    """
    bad = sorted({e.label for e in clean if not 0 <= e.label < num_labels})
    if bad:
        raise FinemixError(f"clean labels {bad} are outside the model's labels 0..{num_labels - 1}")
    classes = {e.label for e in clean}
    if len(classes) < 2 <= num_labels:
        raise FinemixError(
            f"the clean data has only one class (label {classes.pop()}); fine-tuning on it would teach "
            "the model to predict that class for everything: give rows of at least two classes"
        )
    unique = list(dict.fromkeys(clean))
    texts: dict[tuple, set] = {}
    for example in unique:
        texts.setdefault((example.text, example.text_b), set()).add(example.label)
    from ..report import label_counts

    notes = {"label_counts": label_counts(unique), "duplicates_dropped": len(clean) - len(unique),
             "texts_with_conflicting_labels": sum(len(labels) > 1 for labels in texts.values())}
    return unique, notes


def check_chat_rows(chats: Sequence, tokenizer, folder: Path) -> tuple[list, dict]:
    """Chat rows for a causal LM: the tokenizer must carry a chat template, every row must be a
    ``Chat`` with an answer; exact duplicates are dropped (as for labelled rows)."""
    from ..data.chats import Chat
    from ..tasks.causal_lm import check_chat_template

    check_chat_template(tokenizer, folder)
    bad = next((i for i, chat in enumerate(chats) if not isinstance(chat, Chat) or not chat.response.strip()), None)
    if bad is not None:
        raise FinemixError(f"clean chat {bad + 1} has no answer to learn (a causal LM is repaired on chats with answers)")
    unique = list(dict.fromkeys(chats))
    return unique, {"duplicates_dropped": len(chats) - len(unique)}
