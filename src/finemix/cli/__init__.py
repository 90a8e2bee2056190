"""``finemix`` command line: purify, mix, epur, evaluate, attack, defend, bench, demo.

Every user error (``FinemixError``) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Optional, Sequence

from ..errors import FinemixError
from .parser import build_parser

__all__ = ["ALLOCATOR_ENV", "build_parser", "main"]

# torch's CPU allocator backs large tensors with 2 MB pages when this is set before torch is imported.
# A mix allocates an output (and, for sel, |Δ|) per tensor; with 4 KB pages each fresh buffer costs a page
# fault per 4 KB, measured here at 2.0 against 0.6 ns per float32 element written, a third of a bf16
# random mix's time (docs/performance.md). A user's own setting wins.
ALLOCATOR_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)  # before anything imports torch
    from . import commands, lab_commands

    args = build_parser().parse_args(argv)
    command = {"purify": commands.purify, "mix": commands.mix, "epur": commands.epur, "evaluate": commands.evaluate,
               "attack": lab_commands.attack, "defend": lab_commands.defend, "bench": lab_commands.bench,
               "demo": lab_commands.demo}[args.command]
    try:
        with _terminate_as_interrupt():
            return command(args)
    except FinemixError as error:
        print(f"finemix: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:  # full disk, permissions, I/O errors: the file and the reason, one line
        where = f"{error.filename}: " if error.filename else ""
        print(f"finemix: error: {one_line(f'{where}{error.strerror or error}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finemix: interrupted; no output was written", file=sys.stderr)
        return 130


def one_line(text: str) -> str:
    """Control characters escaped: a file name with a newline (or a lone surrogate from
    undecodable bytes, which stderr cannot encode) must not break the error's one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler's kill, ``timeout``) unwinds like Ctrl-C, so the temporary
    output folder is removed instead of left behind; the old handler is restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
