"""Atomic output: ``atomic_output_dir`` builds an output folder under a temporary name and
renames it into place only when complete; ``recover_interrupted_output`` cleans up after a
killed run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import FinemixError
from .formats import is_weight_file

TEMP_MARKER = ".finemix-incomplete"


def check_output_dir(output: Path, force: bool, inputs: tuple[Path, ...] = (), needed_bytes: int = 0) -> None:
    """Refuse, before any work, outputs that would destroy inputs, unfinished-looking
    folders, unwritable places and disks without room for the result."""
    output = Path(output).resolve()
    check_output_apart(output, inputs)
    if output.exists() and not output.is_dir():
        raise FinemixError(f"output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise FinemixError(f"output {output} exists and is not empty (use --force to replace it)")
    existing = _nearest_existing(output.parent)
    if not existing.is_dir():
        raise FinemixError(f"cannot create {output}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FinemixError(f"cannot write in {existing} (permission denied)")
    free = shutil.disk_usage(existing).free
    if needed_bytes and free < needed_bytes * 1.05:
        raise FinemixError(f"not enough disk space for {output}: needs about {_gib(needed_bytes)}, {_gib(free)} free")


def check_output_apart(output: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "output") -> None:
    """Refuse an output (folder or file) that is, contains or lies inside one of ``inputs``
    (folders or files), or that is the current folder, the home folder, a filesystem root or
    a folder above one of them. Paths are compared after resolving symlinks and ``..``.

    Every command that writes calls this before any work (with ``--force`` too); commands
    that keep adding to an output (bench ``--out`` and ``--models``) call it instead of
    ``check_output_dir``."""
    output = Path(output).resolve()
    _refuse_special_place(output, what)
    for source in inputs:
        source = Path(source).resolve()
        kind = "folder" if source.is_dir() else "file"
        for holds, relation in ((output == source, "the same path"),
                                (output in source.parents, f"the input is inside the {what}"),
                                (source in output.parents, f"the {what} is inside the input")):
            if holds:
                raise FinemixError(f"{what} {output} overlaps the input {kind} {source} ({relation})")


def child_path(root: str | os.PathLike, name: object, what: str = "name") -> Path:
    """``root / name`` for a name taken from a user's file or option (a bench data-set key, an
    attack label, a config ``name:``) that becomes one folder or file name: refused unless it is
    a plain non-empty name, no path (``/``, ``\\``, ``..``, absolute), no hidden name (``.x``, the
    shape of finemix's own temporary folders), no NUL, and stays directly under ``root`` after
    symlinks are resolved."""
    name = plain_name(name, what)
    root = Path(root)
    path = root / name
    if path.resolve().parent != root.resolve():
        raise FinemixError(f"{what} {name!r} leads outside {root}")
    return path


def plain_name(name: object, what: str = "name") -> str:
    """``name`` when it can be one folder or file name (``child_path``'s rules without a folder:
    checked where a name is read, e.g. a bench config when it loads), else a one-line error."""
    if not isinstance(name, str):
        raise FinemixError(f"{what} must be a string, got {type(name).__name__} {name!r}")
    if (not name.strip() or name != name.strip() or name.startswith(".") or "\0" in name
            or any(sep in name for sep in ("/", "\\")) or Path(name).is_absolute()):
        raise FinemixError(f"{what} {name!r} is not a plain name (no path separators, no leading dot, not empty)")
    return name


def _refuse_special_place(output: Path, what: str) -> None:
    if output == output.parent:
        raise FinemixError(f"{what} {output} is a filesystem root")
    places = []
    with contextlib.suppress(OSError):
        places.append(("the current folder", Path.cwd().resolve()))
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        places.append(("the home folder", Path.home().resolve()))
    for name, place in places:
        if output == place:
            raise FinemixError(f"{what} {output} is {name}: name a new folder")
        if output in place.parents:
            raise FinemixError(f"{what} {output} contains {name} ({place})")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(size: int) -> str:
    if size >= 1024**3:
        return f"{size / 1024**3:.2f} GiB"
    return f"{size / 1024**2:.1f} MiB" if size >= 1024**2 else f"{size} bytes"


def weights_size(folder: Path) -> int:
    """Bytes of a model folder's weight files (the size of a checkpoint written like it)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and is_weight_file(p.name))


@contextlib.contextmanager
def atomic_output_dir(output: str | os.PathLike, force: bool = False, inputs: tuple[Path, ...] = (),
                      needed_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``output`` in one rename.

    The temporary folder holds a marker file until it is complete, so a killed run
    leaves something clearly unfinished that the next run deletes. With ``--force`` the
    old output is moved aside only once the new one is complete; should a kill land
    between the two renames, the next run puts the old output back.
    """
    output = Path(output).resolve()
    check_output_dir(output, force, inputs, needed_bytes)
    output.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_output(output)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".finemix-tmp", dir=output.parent))
    (temporary / TEMP_MARKER).write_text("finemix was interrupted while writing this folder; it is safe to delete\n")
    try:
        yield temporary
        (temporary / TEMP_MARKER).unlink()
        if output.exists():
            trash = output.with_name(f".{output.name}.finemix-old-{os.getpid()}")
            os.replace(output, trash)
            os.replace(temporary, output)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def recover_interrupted_output(output: Path) -> list[str]:
    """Undo what a killed earlier run left beside ``output``; returns what was done.

    * ``.NAME.*.finemix-tmp`` folders are unfinished (or finished but never published:
      the run did not report success) and are deleted;
    * ``.NAME.finemix-old-PID`` is a previous output moved aside by ``--force``: it is
      restored when ``output`` is missing, else deleted.

    The names are matched literally (never as a glob pattern): an output called ``m*`` or
    ``run[1]`` touches only its own leftovers, not those of ``mx`` or ``run1``.
    """
    done = []
    stales, olds = _leftovers(output)
    for stale in stales:
        shutil.rmtree(stale, ignore_errors=True)
        done.append(f"deleted {stale.name}")
    for old in olds:
        if not output.exists():
            os.replace(old, output)
            done.append(f"restored {output.name} from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"deleted {old.name}")
    return done


# tempfile.mkdtemp's random part: letters, digits and "_", never a dot (so ``.a.*`` cannot reach ``.a.b.*``)
_RANDOM_PART = r"[A-Za-z0-9_]+"


def _leftovers(output: Path) -> tuple[list[Path], list[Path]]:
    """(unfinished temporary folders, moved-aside old outputs) of exactly ``output``."""
    name = re.escape(output.name)
    stale_name = re.compile(rf"\.{name}\.{_RANDOM_PART}\.finemix-tmp")
    old_name = re.compile(rf"\.{name}\.finemix-old-[0-9]+")
    stales, olds = [], []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in sorted(output.parent.iterdir()):
            if stale_name.fullmatch(entry.name):
                stales.append(entry)
            elif old_name.fullmatch(entry.name):
                olds.append(entry)
    return stales, olds
