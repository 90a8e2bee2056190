"""Memory and time of one region of a child process (``Probe``), and the cProfile summaries of it."""

from __future__ import annotations

import contextlib
import gc
import re
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from lib.stats import table

_STATUS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")


def proc_status() -> dict[str, int]:
    """Selected /proc/self/status fields in bytes."""
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M) if k in _STATUS_KEYS}


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``/proc/self/clear_refs`` ← 5); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


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

    def _start_profilers(self) -> tuple[Any, list]:
        """With ``profile``: a cProfile for this thread, enabled, and the list that collects one per thread
        started from now on; else (None, [])."""
        thread_profilers: list = []
        if not self.profile:
            return None, thread_profilers
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
        return profiler, thread_profilers

    def _finish(self, base: dict[str, int], reset: bool, wall: float, cpu: float) -> None:
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

    @contextlib.contextmanager
    def region(self):
        if self._regions:
            raise RuntimeError("one timed region per child")
        self._regions += 1
        gc.collect()
        reset = _reset_peak_rss()
        base = proc_status()
        self._peaks = dict(base)
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        profiler, thread_profilers = self._start_profilers()
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
            self._finish(base, reset, wall, cpu)
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
