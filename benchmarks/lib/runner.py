"""Running one measurement in its own child process: the parent side (``run_job``, warm page cache)
and the child side (``child_main``, started through ``benchmarks/child.py``)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from finemix.cli import ALLOCATOR_ENV
from lib.constants import BENCH_DIR, MB, REPO
from lib.machine import record_src_seen, src_sha256
from lib.probe import Probe


# =========================================================================== child side

def _preimport(threads: Optional[int]) -> dict:
    """Same imports in every child, outside the timed region."""
    import torch  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

    import finemix.repair.steps  # noqa: F401
    import finemix.train  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


def child_main(module: str, func: str, params_path: str, result_path: str) -> None:
    params = json.loads(Path(params_path).read_text())
    sys.path.insert(0, str(BENCH_DIR))
    info = _preimport(params.get("threads"))
    info["src_sha256"] = src_sha256()
    job = getattr(importlib.import_module(module), func)
    probe = Probe(profile=bool(params.get("profile")))
    extra = job(params, probe) or {}
    out = {**probe.result, **info, "extra": extra, "pid": os.getpid()}
    Path(result_path).write_text(json.dumps(out, default=str))


# =========================================================================== parent side

def warm_files(paths: Iterable[Path]) -> dict:
    """Read every byte once so the page cache is warm for the next child."""
    total, start = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while True:
                block = handle.read(16 * MB)
                if not block:
                    break
                total += len(block)
    return {"bytes": total, "seconds": round(time.perf_counter() - start, 3)}


def prepare_run(clean: Sequence[Path] = (), warm: Sequence[Path] = ()) -> Optional[dict]:
    """Before a measured run: remove ``clean`` (earlier outputs), ``os.sync()`` so no earlier write-back
    overlaps, read the ``warm`` files; returns ``warm_files``' record (None without files)."""
    for path in clean:
        shutil.rmtree(path, ignore_errors=True)
    os.sync()
    return warm_files(warm) if warm else None


def _exit_on_sigterm() -> None:
    """SIGTERM becomes SystemExit in the parent, so run_job kills its child and temporary files go."""
    import signal

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _wait_for_child(proc: subprocess.Popen, deadline: float) -> tuple[int, Any]:
    """Poll the child until it exits, killing it once ``deadline`` passes; its wait status and rusage."""
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                return status, rusage
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, rusage = os.wait4(proc.pid, 0)
                return status, rusage
            time.sleep(0.05)
    except BaseException:  # Ctrl-C or SIGTERM: never leave the child running
        proc.kill()
        os.wait4(proc.pid, 0)
        raise


def run_job(module: str, func: str, params: dict, *, warm: Sequence[Path] = (), clean: Sequence[Path] = (),
            timeout: float = 3600, label: str = "") -> dict:
    """Run ``module.func(params, probe)`` in a fresh Python process; return its measurements.

    Before starting it: remove ``clean`` paths (earlier outputs), ``os.sync()`` so no earlier
    write-back overlaps, and read the ``warm`` files. The child's stdout/stderr go to a log file
    (kept on failure).
    """
    warmed = prepare_run(clean, warm)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="finemix-bench-job-") as tmp:
        params_path, result_path, log_path = Path(tmp) / "params.json", Path(tmp) / "result.json", Path(tmp) / "log.txt"
        params_path.write_text(json.dumps(params, default=str))
        # every child (floor, finemix, the peer) gets the allocator setting the finemix CLI makes for itself
        env = {**ALLOCATOR_ENV, **os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, str(BENCH_DIR / "child.py"), "--child", module, func, str(params_path), str(result_path)]
        start = time.perf_counter()
        _exit_on_sigterm()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
            status, rusage = _wait_for_child(proc, start + timeout)
            proc.returncode = os.waitstatus_to_exitcode(status)
        process_wall = time.perf_counter() - start
        if proc.returncode != 0 or not result_path.is_file():
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"job {module}.{func} ({label}) failed with exit status {proc.returncode}:\n{tail}")
        result = json.loads(result_path.read_text())
    result["process_wall_s"] = process_wall
    result["child_lifetime_maxrss_bytes"] = rusage.ru_maxrss * 1024  # Linux: kB; lifetime of that child only
    result["warm_read"] = warmed
    result["label"] = label
    if result.get("src_sha256"):
        record_src_seen(result["src_sha256"])
    result["loadavg_before"] = load_before  # another user's load shows here: the machine is shared
    return result
