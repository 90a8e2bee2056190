"""Shared helpers for the finemix benchmarks (plain scripts, not pytest).

* ``machine_info`` — CPU model, cores, library versions, git commit, load, the exact command.
* ``run_job`` — runs one measurement in its OWN child process (``python common.py --child …``),
  so peak RSS is per method. The child resets its peak-RSS counter (``/proc/self/clear_refs`` 5)
  at the start of the timed region, samples ``RssAnon`` / ``RssFile`` every few ms on a thread,
  and reports ``VmHWM``; the parent also records the child's lifetime ``ru_maxrss`` via ``os.wait4``.
* ``build_synthetic_pair`` / ``build_minilm_pair`` — "pre-trained" and "fine-tuned" checkpoint pairs.
* Jobs used by more than one script (finemix mix / E-PUR / fine-tune / purify, the victim builder).
* Small table / verdict / JSON helpers.

Every child pre-imports torch, safetensors, transformers and finemix before its timed region,
so import cost is outside every timing and inside every RSS baseline alike.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_WORKDIR = Path(os.environ.get("FINEMIX_BENCH_WORKDIR", "/tmp/finemix-bench"))
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MB = 1024**2
GB = 1024**3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


# =========================================================================== machine info

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
    """SHA-256 over src/finemix/*.py: pins the exact finemix sources a measurement ran on."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "finemix").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


_SRC_SEEN: dict[str, int] = {}  # src_sha256 -> children that ran on it (this process's run_job calls)


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
    }


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


# =========================================================================== memory probe (child side)

_STATUS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")


def proc_status() -> dict[str, int]:
    """Selected /proc/self/status fields in bytes."""
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M) if k in _STATUS_KEYS}


class Probe:
    """Times one region of a child process and tracks its memory.

    ``with probe.region(): …`` — at entry: gc, reset of the kernel's peak-RSS counter
    (``/proc/self/clear_refs`` ← 5), baseline snapshot; during: a thread samples RssAnon /
    RssFile every ``interval`` s; at exit: wall time, ``VmHWM`` (exact peak since the reset)
    and the sampled peaks (RssAnon and RssFile peaks are sampled, so short spikes can be missed).
    """

    def __init__(self, interval: float = 0.005, profile: bool = False) -> None:
        self.interval = interval
        self.profile = profile
        self.result: dict[str, Any] = {}
        self._peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._regions = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                status = proc_status()
            except OSError:
                return
            for key in ("RssAnon", "RssFile", "VmRSS"):
                if status.get(key, 0) > self._peaks.get(key, 0):
                    self._peaks[key] = status[key]
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def region(self):
        if self._regions:
            raise RuntimeError("one timed region per child")
        self._regions += 1
        gc.collect()
        reset = True
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            reset = False
        base = proc_status()
        self._peaks = dict(base)
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        profiler = None
        thread_profilers: list = []
        if self.profile:
            import cProfile

            def start_thread_profiler(frame, event, arg):
                # Runs once in every thread started during the region (finemix mixes in a thread pool):
                # cProfile only sees the thread it is enabled in, so each thread gets its own profiler.
                thread_profiler = cProfile.Profile()
                thread_profilers.append(thread_profiler)
                thread_profiler.enable()

            threading.setprofile(start_thread_profiler)
            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        cpu_start = time.process_time()
        try:
            yield self
        finally:
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            if profiler is not None:
                profiler.disable()
                threading.setprofile(None)
            self._stop.set()
            thread.join()
            end = proc_status()
            for key in ("RssAnon", "RssFile", "VmRSS"):
                self._peaks[key] = max(self._peaks.get(key, 0), end.get(key, 0))
            self.result = {
                "wall_s": wall,
                "cpu_s": cpu,
                "hwm_reset": reset,
                "baseline_rss_bytes": base.get("VmRSS", 0),
                "baseline_anon_bytes": base.get("RssAnon", 0),
                "baseline_file_bytes": base.get("RssFile", 0),
                # VmHWM after the reset = exact peak RSS during the region (process-lifetime peak if no reset).
                "peak_rss_bytes": end.get("VmHWM", 0),
                "peak_anon_bytes_sampled": self._peaks.get("RssAnon", 0),
                "peak_file_bytes_sampled": self._peaks.get("RssFile", 0),
                "end_rss_bytes": end.get("VmRSS", 0),
            }
            if profiler is not None:
                self.result["profile"] = profile_entries(profiler, thread_profilers)


def _short_path(path: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def profile_entries(profiler, thread_profilers: Sequence = (), top: int = 25) -> dict:
    """Top entries of a cProfile run by own time and by cumulative time; the main thread's and those of
    threads started during the region are summed (so times can add up to more than the wall time)."""
    import pstats

    merged = pstats.Stats(profiler)
    for extra in thread_profilers:
        with contextlib.suppress(TypeError, ValueError):  # a thread that recorded nothing
            merged.add(extra)
    stats = merged.stats
    rows = [{"function": f"{_short_path(f)}:{line}({name})", "ncalls": nc, "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)}
            for (f, line, name), (cc, nc, tt, ct, callers) in stats.items()]
    return {"threads_profiled": 1 + len(thread_profilers),
            "by_tottime": sorted(rows, key=lambda r: -r["tottime_s"])[:top],
            "by_cumtime": sorted(rows, key=lambda r: -r["cumtime_s"])[:top]}


def profile_record(result: dict) -> dict:
    """What a profiled run stores in the results JSON."""
    return {"wall_s_with_profiler": result["wall_s"], **result["profile"]}


def print_profile(label: str, result: dict, top: int = 12) -> None:
    profile = result.get("profile")
    if not profile:
        return
    print(f"\nprofile of {label} (cProfile, separate run; wall {result['wall_s']:.3f} s with profiler on; "
          f"{profile.get('threads_profiled', 1)} thread(s) summed), top by own time:")
    waits = ("acquire' of '_thread.lock", "SimpleQueue", "threading.py", "<method 'poll'")
    rows = [r for r in profile["by_tottime"] if not any(w in r["function"] for w in waits)]
    print("(threads waiting on each other — lock acquire, queue get — left out here; they are in the JSON)")
    print(table(["function", "ncalls", "tottime s", "cumtime s"],
                [[r["function"], r["ncalls"], r["tottime_s"], r["cumtime_s"]] for r in rows[:top]]))


def _preimport(threads: Optional[int]) -> dict:
    """Same imports in every child, outside the timed region."""
    import torch  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

    import finemix.pipeline  # noqa: F401
    import finemix.finetune  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


def _child_main(module: str, func: str, params_path: str, result_path: str) -> None:
    params = json.loads(Path(params_path).read_text())
    sys.path.insert(0, str(BENCH_DIR))
    info = _preimport(params.get("threads"))
    info["src_sha256"] = src_sha256()
    job = getattr(importlib.import_module(module), func)
    probe = Probe(profile=bool(params.get("profile")))
    extra = job(params, probe) or {}
    out = {**probe.result, **info, "extra": extra, "pid": os.getpid()}
    Path(result_path).write_text(json.dumps(out, default=str))


# =========================================================================== running jobs (parent side)

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


def _exit_on_sigterm() -> None:
    """SIGTERM becomes SystemExit in the parent, so run_job kills its child and temporary files go."""
    import signal

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_job(module: str, func: str, params: dict, *, warm: Sequence[Path] = (), clean: Sequence[Path] = (),
            timeout: float = 3600, label: str = "") -> dict:
    """Run ``module.func(params, probe)`` in a fresh Python process; return its measurements.

    Before starting it: remove ``clean`` paths (earlier outputs), ``os.sync()`` so no earlier
    write-back overlaps, and read the ``warm`` files. The child's stdout/stderr go to a log file
    (kept on failure).
    """
    for path in clean:
        shutil.rmtree(path, ignore_errors=True)
    os.sync()
    warmed = warm_files(warm) if warm else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="finemix-bench-job-") as tmp:
        params_path, result_path, log_path = Path(tmp) / "params.json", Path(tmp) / "result.json", Path(tmp) / "log.txt"
        params_path.write_text(json.dumps(params, default=str))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(BENCH_DIR / "common.py"), "--child", module, func, str(params_path), str(result_path)]
        start = time.perf_counter()
        _exit_on_sigterm()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
            deadline = start + timeout
            try:
                while True:
                    pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        break
                    if time.perf_counter() > deadline:
                        proc.kill()
                        pid, status, rusage = os.wait4(proc.pid, 0)
                        break
                    time.sleep(0.05)
            except BaseException:  # Ctrl-C or SIGTERM: never leave the child running
                proc.kill()
                os.wait4(proc.pid, 0)
                raise
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
        _SRC_SEEN[result["src_sha256"]] = _SRC_SEEN.get(result["src_sha256"], 0) + 1
    result["loadavg_before"] = load_before  # another user's load shows here: the machine is shared
    return result


# =========================================================================== numbers and tables

def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "OK" if ok else "MISS"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def fit_linear(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least-squares y = a + b·x with R² (plain Python, no numpy needed)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    return {"intercept": a, "slope": b, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0, "points": n}


def folder_weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix == ".safetensors")


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder_weight_files(folder))




# =========================================================================== models and data

def minilm_dir() -> Path:
    from finemix.checkpoint import resolve_model_dir

    return resolve_model_dir(MINILM_NAME)


def mr_splits() -> dict:
    from finemix.data import load_builtin

    return load_builtin("mr")


def _complete(folder: Path, spec: dict) -> bool:
    marker = folder / ".bench-spec.json"
    return marker.is_file() and json.loads(marker.read_text()) == spec


def _mark_complete(folder: Path, spec: dict) -> None:
    (folder / ".bench-spec.json").write_text(json.dumps(spec))


def _write_shards(folder: Path, tensors: Iterable[tuple[str, "Any"]], shard_bytes: int) -> None:
    """Write (name, tensor) pairs as safetensors shards of at most ``shard_bytes`` (+ index)."""
    from safetensors.torch import save_file

    pending: dict = {}
    size = 0
    names: list[tuple[str, list[str]]] = []

    def flush() -> None:
        nonlocal pending, size
        name = f"part-{len(names)}.safetensors"
        save_file(pending, str(folder / name), metadata={"format": "pt"})
        names.append((name, list(pending)))
        pending, size = {}, 0

    total = 0
    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if pending and size + nbytes > shard_bytes:
            flush()
        pending[key] = tensor.contiguous()
        size += nbytes
        total += nbytes
    if pending or not names:
        flush()
    if len(names) == 1:
        os.replace(folder / names[0][0], folder / "model.safetensors")
        return
    weight_map = {}
    for i, (old, keys) in enumerate(names, start=1):
        new = f"model-{i:05d}-of-{len(names):05d}.safetensors"
        os.replace(folder / old, folder / new)
        weight_map.update({k: new for k in keys})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def bert_shapes(hidden: int, layers: int, vocab: int = 30522, intermediate: Optional[int] = None,
                positions: int = 512) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names (bare BertModel naming) and shapes of a BERT encoder with pooler."""
    inter = intermediate or 4 * hidden
    shapes = [
        ("embeddings.word_embeddings.weight", (vocab, hidden)),
        ("embeddings.position_embeddings.weight", (positions, hidden)),
        ("embeddings.token_type_embeddings.weight", (2, hidden)),
        ("embeddings.LayerNorm.weight", (hidden,)),
        ("embeddings.LayerNorm.bias", (hidden,)),
    ]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            shapes += [(p + f"attention.self.{part}.weight", (hidden, hidden)), (p + f"attention.self.{part}.bias", (hidden,))]
        shapes += [
            (p + "attention.output.dense.weight", (hidden, hidden)), (p + "attention.output.dense.bias", (hidden,)),
            (p + "attention.output.LayerNorm.weight", (hidden,)), (p + "attention.output.LayerNorm.bias", (hidden,)),
            (p + "intermediate.dense.weight", (inter, hidden)), (p + "intermediate.dense.bias", (inter,)),
            (p + "output.dense.weight", (hidden, inter)), (p + "output.dense.bias", (hidden,)),
            (p + "output.LayerNorm.weight", (hidden,)), (p + "output.LayerNorm.bias", (hidden,)),
        ]
    shapes += [("pooler.dense.weight", (hidden, hidden)), ("pooler.dense.bias", (hidden,))]
    return shapes




def _bert_config(hidden: int, layers: int, vocab: int, classifier: bool) -> dict:
    config = {
        "architectures": ["BertForSequenceClassification" if classifier else "BertModel"],
        "model_type": "bert", "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64), "intermediate_size": 4 * hidden, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "dtype": "float32",
    }
    if classifier:
        config.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    return config


def _copy_tokenizer(target: Path) -> None:
    source = minilm_dir()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def build_synthetic_pair(workdir: Path, hidden: int, layers: int, vocab: int = 30522,
                         shard_bytes: int = 1_000_000_000, seed: int = 0, noise: float = 1e-3) -> tuple[Path, Path]:
    """Random fp32 BERT-like pair: θ_Pre (bare ``BertModel`` names) and θ_B = θ_Pre + noise with a
    ``bert.`` prefix and a 2-class head (``BertForSequenceClassification`` config), both in ~1 GB
    safetensors shards, with the bert-base-uncased (MiniLM) tokenizer, vocab 30522. Cached by spec."""
    import torch

    spec = {"hidden": hidden, "layers": layers, "vocab": vocab, "shard_bytes": shard_bytes, "seed": seed, "noise": noise, "v": 1}
    root = Path(workdir) / f"synth-h{hidden}-l{layers}-v{vocab}"
    pre_dir, ft_dir = root / "pretrained", root / "finetuned"
    if _complete(root, spec):
        return ft_dir, pre_dir
    shutil.rmtree(root, ignore_errors=True)
    pre_dir.mkdir(parents=True)
    ft_dir.mkdir(parents=True)
    shapes = bert_shapes(hidden, layers, vocab)
    noise_gen = torch.Generator().manual_seed(seed + 1)

    def pre_tensors():
        gen = torch.Generator().manual_seed(seed)
        for name, shape in shapes:
            yield name, torch.randn(shape, generator=gen) * 0.02

    def ft_tensors():
        gen = torch.Generator().manual_seed(seed)
        for name, shape in shapes:
            base = torch.randn(shape, generator=gen) * 0.02
            yield "bert." + name, base.add_(torch.randn(shape, generator=noise_gen), alpha=noise)
        head = torch.Generator().manual_seed(seed + 2)
        yield "classifier.weight", torch.randn((2, hidden), generator=head) * 0.02
        yield "classifier.bias", torch.zeros(2)

    _write_shards(pre_dir, pre_tensors(), shard_bytes)
    _write_shards(ft_dir, ft_tensors(), shard_bytes)
    (pre_dir / "config.json").write_text(json.dumps(_bert_config(hidden, layers, vocab, False), indent=2))
    (ft_dir / "config.json").write_text(json.dumps(_bert_config(hidden, layers, vocab, True), indent=2))
    _copy_tokenizer(pre_dir)
    _copy_tokenizer(ft_dir)
    _mark_complete(root, spec)
    return ft_dir, pre_dir


def build_minilm_pair(workdir: Path, seed: int = 0, noise: float = 1e-3) -> tuple[Path, Path]:
    """θ_Pre = the packaged MiniLM folder as is; θ_B = MiniLM + N(0, noise²) with a ``bert.`` prefix and a
    2-class head, ``BertForSequenceClassification`` config, MiniLM tokenizer (written to ``workdir``)."""
    import torch
    from safetensors import safe_open

    pre_dir = minilm_dir()
    spec = {"seed": seed, "noise": noise, "source": str(pre_dir), "v": 1}
    root = Path(workdir) / "minilm-pair"
    ft_dir = root / "finetuned"
    if _complete(root, spec):
        return ft_dir, pre_dir
    shutil.rmtree(root, ignore_errors=True)
    ft_dir.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    with safe_open(str(pre_dir / "model.safetensors"), framework="pt") as handle:
        for name in handle.keys():
            tensor = handle.get_tensor(name)
            if not torch.is_floating_point(tensor):
                continue  # position_ids: a buffer save_pretrained no longer writes
            tensors["bert." + name] = tensor.clone().add_(torch.randn(tensor.shape, generator=gen), alpha=noise)
    config = json.loads((pre_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    tensors["classifier.weight"] = torch.randn((2, hidden), generator=gen) * 0.02
    tensors["classifier.bias"] = torch.zeros(2)
    _write_shards(ft_dir, tensors.items(), 10 * GB)
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "negative", "1": "positive"},
                  label2id={"negative": 0, "positive": 1})
    (ft_dir / "config.json").write_text(json.dumps(config, indent=2))
    _copy_tokenizer(ft_dir)
    _mark_complete(root, spec)
    return ft_dir, pre_dir


def mr_texts(n: int, split: str = "test", offset: int = 0) -> list[str]:
    return [e.text for e in mr_splits()[split][offset : offset + n]]


# =========================================================================== shared jobs (run in children)

def job_build_minilm_pair(params: dict, probe: Probe) -> dict:
    ft, pre = build_minilm_pair(Path(params["workdir"]))
    return {"finetuned": str(ft), "pretrained": str(pre)}


def job_build_synthetic(params: dict, probe: Probe) -> dict:
    ft, pre = build_synthetic_pair(Path(params["workdir"]), params["hidden"], params["layers"])
    return {"finetuned": str(ft), "pretrained": str(pre)}


def job_mix_finemix(params: dict, probe: Probe) -> dict:
    """``finemix mix`` through the Python API (``mix_checkpoint``)."""
    from finemix.config import MixConfig
    from finemix.pipeline import mix_checkpoint

    config = MixConfig(ratio=params.get("ratio", 0.3), mode=params.get("mode", "random"), seed=0)
    with probe.region():
        report = mix_checkpoint(params["finetuned"], params["pretrained"], params["output"], config, force=True)
    return {"finemix_timings_s": report.get("timings_s"), "kept_fraction": report["mixing"]["kept_fraction"],
            "output_bytes": checkpoint_bytes(Path(params["output"]))}


def job_epur_finemix(params: dict, probe: Probe) -> dict:
    """``finemix epur`` through the Python API (``epur_checkpoint``); frequency texts loaded untimed."""
    from finemix.config import EpurConfig
    from finemix.pipeline import epur_checkpoint

    texts = mr_texts(params.get("texts", 500))
    with probe.region():
        report = epur_checkpoint(params["finetuned"], params["pretrained"], params["output"], texts, EpurConfig(), force=True)
    return {"finemix_timings_s": report.get("timings_s"), "reset_rows": len(report["epur"]["rows"]),
            "output_bytes": checkpoint_bytes(Path(params["output"]))}


def load_minilm_classifier(seed: int = 0):
    """MiniLM with a fresh 2-class head (seeded), and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    folder = minilm_dir()
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    return model, AutoTokenizer.from_pretrained(folder)


def train_rows(n: int, seed: int = 0) -> list:
    from finemix.data import stratified_sample

    return stratified_sample(mr_splits()["train"], n, seed=seed)


def job_finetune_finemix(params: dict, probe: Probe) -> dict:
    """finemix's trainer (``finemix.finetune.finetune``), called as ``ratio_search`` calls it (no held-out set
    here: that would add evaluation time). ``no_grouping`` monkeypatches ``length_grouped_batches`` to plain
    shuffled batches (finemix has no switch for it)."""
    from finemix import finetune as ft
    from finemix.config import TrainConfig

    model, tokenizer = load_minilm_classifier(params.get("seed", 0))
    rows = train_rows(params["rows"], params.get("seed", 0))
    config = TrainConfig(epochs=params.get("epochs", 1.0), batch_size=params.get("batch_size", 16),
                         max_length=params.get("max_length", 128), seed=params.get("seed", 0), progress=False)
    if params.get("no_grouping"):
        import random

        def shuffled_batches(lengths, batch_size, seed, group_factor=50):
            order = list(range(len(lengths)))
            random.Random(seed).shuffle(order)
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

        ft.length_grouped_batches = shuffled_batches
    with probe.region():
        result = ft.finetune(model, tokenizer, rows, config)
    return {"rows": len(rows), "epochs": config.epochs, "steps": result.steps, "trainer_seconds": result.seconds,
            "examples_per_s": len(rows) * config.epochs / probe.result["wall_s"] if probe.result else None}


def build_victim(workdir: Path, rows: int = 1000, seed: int = 0) -> Path:
    """A MiniLM classifier backdoored with the rare word "cf" (10 % dirty label) on ``rows`` MR rows, 1 epoch,
    as experiments/victims.py does but smaller. Cached in ``workdir``."""
    from finemix.attacks import AttackConfig, poison
    from finemix.config import TrainConfig
    from finemix.finetune import finetune

    spec = {"rows": rows, "seed": seed, "v": 1}
    folder = Path(workdir) / f"victim-r{rows}-s{seed}"
    if _complete(folder, spec):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    train, _, _ = poison(train_rows(rows, seed), AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.1, seed=seed))
    model, tokenizer = load_minilm_classifier(seed)
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    finetune(model, tokenizer, train, TrainConfig(epochs=1.0, batch_size=32, max_length=64, seed=seed, progress=False))
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _mark_complete(folder, spec)
    return folder


def job_build_victim(params: dict, probe: Probe) -> dict:
    return {"victim": str(build_victim(Path(params["workdir"]), params.get("rows", 1000), params.get("seed", 0)))}


def purify_inputs(clean_rows: int, unlabelled_rows: int, seed: int = 0) -> tuple[list, list[str]]:
    """Clean rows from MR's dev split (disjoint from the victim's train rows), unlabelled texts from its test split."""
    from finemix.data import stratified_sample

    splits = mr_splits()
    clean = stratified_sample(splits["dev"], clean_rows, seed=seed)
    return clean, [e.text for e in splits["test"][:unlabelled_rows]]


def job_purify(params: dict, probe: Probe) -> dict:
    """``finemix.pipeline.purify`` with a ``PurifyConfig`` built as cli._purify builds it.

    ``force_all_candidates``: monkeypatch ``ratio_search.acceptance_margin`` to -1 so no candidate is
    accepted early and every candidate is trained (the search's worst case); a benchmark-only device.
    """
    from finemix import ratio_search
    from finemix.config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig
    from finemix.pipeline import purify

    clean, unlabelled = purify_inputs(params["clean_rows"], params["unlabelled_rows"], params.get("seed", 0))
    train = TrainConfig(seed=0, progress=False, **({"epochs": params["epochs"]} if params.get("epochs") else {}))
    search = RatioSearchConfig(stop_hopeless=params.get("stop_hopeless", True),
                               **({"candidates": tuple(params["candidates"])} if params.get("candidates") else {}))
    auto = params["ratio"] == "auto"
    config = PurifyConfig(
        mix=MixConfig(ratio=0.3 if auto else float(params["ratio"]), mode="random", seed=0),
        ratio_auto=auto,
        search=search,
        epur=EpurConfig(),
        train=train,
        distill=True,
        # 2: finemix purify's default when benchmarks/results were measured (3 since); kept so they reproduce
        distill_epochs=params.get("distill_epochs") or params.get("epochs") or 2.0,
    )
    if params.get("force_all_candidates"):
        ratio_search.acceptance_margin = lambda reference, rows, tolerance: -1.0
    with probe.region():
        report = purify(params["backdoored"], MINILM_NAME, clean, params["output"], config, unlabelled_texts=unlabelled, force=True)
    search_record = report["ratio_search"]
    return {
        "timings_s": report["timings_s"],
        "mode": search_record["mode"],
        "candidates_trained": [c["ratio"] for c in search_record["candidates"]],
        "candidate_train_seconds": [c["train_seconds"] for c in search_record["candidates"]],
        "candidates_stopped_early": [c.get("stopped_early", False) for c in search_record["candidates"]],
        "chosen_ratio": search_record["chosen_ratio"],
        "reason": search_record["reason"],
        "reference_heldout_accuracy": search_record["reference_heldout_accuracy"],
        "heldout_accuracy": [c["heldout_accuracy"] for c in search_record["candidates"]],
        "clean_rows": len(clean), "unlabelled_rows": len(unlabelled),
    }


# =========================================================================== CLI helpers

def add_common_args(parser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"where inputs are built and outputs written (default {DEFAULT_WORKDIR}; env FINEMIX_BENCH_WORKDIR)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every child (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the median is reported")
    parser.add_argument("--results-name", default=None,
                        help="write benchmarks/results/<NAME>.json instead of the script's default name")
    parser.add_argument("--profile", action="store_true",
                        help="also run each finemix method once more under cProfile (not timed) and report its top entries")




if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child_main(*sys.argv[2:])
    else:
        print("common.py is a helper module; run one of the bench_*.py scripts", file=sys.stderr)
        sys.exit(2)
