"""Tokenizer files: whether a folder ships a vocabulary, whether two ship the same one."""

from __future__ import annotations

from pathlib import Path

from ..errors import FinemixError

_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                     "sentencepiece.bpe.model", "tokenizer.model")


def has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _VOCABULARY_FILES)


def same_tokenizer_files(a: Path, b: Path) -> bool:
    """Both folders ship the same vocabulary files, byte for byte (so loading and comparing
    the tokenizers can be skipped); False when unsure."""
    shared = [name for name in _VOCABULARY_FILES if (a / name).is_file() and (b / name).is_file()]
    only_one = [name for name in _VOCABULARY_FILES if (a / name).is_file() != (b / name).is_file()]
    return bool(shared) and not only_one and all((a / n).read_bytes() == (b / n).read_bytes() for n in shared)


def check_same_vocabulary(ft_tokenizer, pre_tokenizer) -> None:
    """Mixing assumes row k of both embedding matrices is the same token."""
    if ft_tokenizer.get_vocab() != pre_tokenizer.get_vocab():
        raise FinemixError("the fine-tuned and pre-trained tokenizers have different vocabularies")
