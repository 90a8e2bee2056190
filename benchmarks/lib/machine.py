"""The machine a measurement ran on (CPU, memory, versions, git, load, command) and results writing."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

from lib.constants import GB, REPO, RESULTS_DIR


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("finemix", "torch", "transformers", "safetensors", "accelerate", "tokenizers", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def src_sha256() -> str:
    """SHA-256 over src/finemix/**/*.py: pins the exact finemix sources a measurement ran on (records made
    before the package got sub-folders hashed only the top-level modules)."""
    import hashlib

    digest = hashlib.sha256()
    root = REPO / "src" / "finemix"
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


_SRC_SEEN: dict[str, int] = {}  # src_sha256 -> children that ran on it (this process's run_job calls)


def record_src_seen(sha256: str) -> None:
    """Count one child that ran on sources with this ``src_sha256`` (called by ``run_job``)."""
    _SRC_SEEN[sha256] = _SRC_SEEN.get(sha256, 0) + 1


def _git() -> dict:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    status = run("status", "--porcelain", "--", "src")
    # The working tree is measured as it is: src_sha256 pins the exact finemix sources of this run.
    return {"commit": run("rev-parse", "HEAD"), "src_dirty": bool(status), "src_files_dirty": status.splitlines(),
            "src_sha256": src_sha256()}


def machine_info() -> dict:
    mem_total = 0
    with contextlib.suppress(OSError):
        mem_total = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_gib": round(mem_total / GB, 1),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "versions": _versions(),
        "git": _git(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "page_cache": "not dropped (no root); every input file is read once by the parent right before each "
                      "child starts, so all methods see a warm cache",
        "transparent_hugepages": _read_first_line("/sys/kernel/mm/transparent_hugepage/enabled"),
        "child_allocator_env": {name: os.environ.get(name, value) for name, value in _allocator_env().items()},
    }


def _read_first_line(path: str) -> Optional[str]:
    with contextlib.suppress(OSError):
        return Path(path).read_text().splitlines()[0]
    return None


def _allocator_env() -> dict:
    from finemix.cli import ALLOCATOR_ENV

    return ALLOCATOR_ENV


def write_results(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = payload.setdefault("machine", {})
    machine["load_average_at_end"] = os.getloadavg()
    machine["src_sha256_seen_by_children"] = dict(_SRC_SEEN)
    if len(_SRC_SEEN) > 1:
        print(f"WARNING: finemix's sources changed during this run ({len(_SRC_SEEN)} versions seen by the children); "
              "ratios may compare different code. Re-run.", file=sys.stderr)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path
