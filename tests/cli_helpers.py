"""Helpers shared by the command-line tests: run ``finemix`` in-process, check one-line errors, hash trees."""

from __future__ import annotations

import hashlib
from pathlib import Path

from finemix.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``finemix ARGV``; argparse's own exit becomes the status."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """Exit status 2 and exactly one ``finemix: error:`` line holding every fragment; returns the line."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("finemix: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    return lines[0]


def tree_hashes(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (files or folders), to show that nothing was touched."""
    files = []
    for path in paths:
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
