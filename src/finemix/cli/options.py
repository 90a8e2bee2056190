"""Argument types and option groups shared by the commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional


def finite_float(value: str) -> float:
    """The type of every float option: a finite number (``float`` alone accepts nan and inf,
    which slip through every later range test)."""
    import math

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


SEED_MAX = 2**32 - 1  # numpy's and accelerate's limit; torch alone accepts more


def strict_int(value: str) -> int:
    """ASCII digits with an optional sign: ``int()`` also takes '²'-free but odd spellings
    (' 5', '1_0', '٣'), and ``str.isdigit`` takes '²', which ``int()`` then refuses."""
    import re

    if not re.fullmatch(r"[+-]?[0-9]{1,30}", value):
        raise argparse.ArgumentTypeError(f"expected an integer, got {value[:40]!r}")
    return int(value)


def int_at_least(low: int, what: str = ""):
    """An argparse type: a strict integer >= ``low`` (counts, sizes and lengths)."""

    def parse(value: str) -> int:
        number = strict_int(value)
        if number < low:
            raise argparse.ArgumentTypeError(f"{what} must be >= {low}, got {number}".lstrip())
        return number

    parse.__name__ = f"int >= {low}"  # argparse names the type in its messages
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
max_length = int_at_least(8, "max length")  # the shortest row that still holds special tokens and some text


def seed(value: str) -> int:
    """Every --seed: 0..2³²−1, the range every seeded library accepts."""
    number = strict_int(value)
    if not 0 <= number <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{SEED_MAX}, got {number}")
    return number


def ratio(value: str) -> Optional[float]:
    if value == "auto":
        return None
    try:
        number = finite_float(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1], got {number}")
    return number


def nonempty_name_or_path(value: str) -> str:
    """A path, or a name such as a Hub model or a built-in data set: never empty or blank
    (``''`` would mean the current folder) and without NUL bytes."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got an empty one ({value!r})")
    if "\0" in value:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL byte: {value!r}")
    return value


def nonempty_path(value: str) -> Path:
    """The type of every file and folder option: ``nonempty_name_or_path`` as a ``Path``."""
    return Path(nonempty_name_or_path(value))


def add_pair(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backdoored", required=True, type=nonempty_name_or_path, metavar="DIR",
                        help="suspect fine-tuned classifier: a Hugging Face model folder or Hub name")
    parser.add_argument("--pretrained", required=True, type=nonempty_name_or_path, metavar="DIR",
                        help="the public pre-trained checkpoint it was fine-tuned from (folder or Hub name)")
    parser.add_argument("--output", required=True, type=nonempty_name_or_path, metavar="DIR", help="folder to write (created atomically)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder once the new one is complete")


def add_mix_options(parser: argparse.ArgumentParser, sel_scope: bool = True) -> None:
    parser.add_argument("--mix", choices=("random", "sel"), default="random",
                        help="random: keep each fine-tuned weight with probability ρ; sel: keep the ρ fraction that moved most")
    if sel_scope:
        parser.add_argument("--sel-scope", choices=("tensor", "global"), default="tensor",
                            help="for --mix sel: rank changes within each tensor (default) or over the whole model")
    parser.add_argument("--head", choices=("keep", "reinit"), default="keep",
                        help="tensors the pre-trained model lacks (classifier head, absent pooler): keep or re-initialise")
    parser.add_argument("--seed", type=seed, default=0, help="seed for masks, data splits and training")


def add_epur_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epur-top-n", type=non_negative_int, default=200, metavar="N", help="embedding rows E-PUR resets (default 200)")
    parser.add_argument("--epur-min-frequency", type=finite_float, default=20.0, metavar="F",
                        help="f_min in score = drift / log(max(frequency, f_min)) (default 20)")
    parser.add_argument("--frequency-text", type=nonempty_path, action="append", default=[], metavar="FILE",
                        help="unlabelled clean text for token frequencies (.txt lines or csv/tsv/jsonl 'text'); repeatable")


def add_training_options(parser: argparse.ArgumentParser, epochs_help: str) -> None:
    """The training budget, the same for ``purify`` and ``defend``."""
    parser.add_argument("--epochs", type=finite_float, default=None, help=epochs_help)
    parser.add_argument("--lr", type=finite_float, default=None, help="learning rate (default 5e-5)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default 16)")
    parser.add_argument("--max-length", type=max_length, default=None,
                        help="max tokens per row, at least 8 (default 128; at most the model's positions)")


def add_unlabelled_text(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unlabelled-text", type=nonempty_path, action="append", default=[], metavar="FILE",
                        help="unlabelled clean in-domain text (.txt lines or csv/tsv/jsonl 'text'); used for E-PUR counts and "
                             "to distil the suspect model's calibrated clean predictions (config: distill: false turns that "
                             "off; chat models: each line is a prompt, and with distill_answers: true the suspect's "
                             "complete answers join the training chats); repeatable")
