"""Interrupted runs: Ctrl-C, SIGTERM and SIGKILL at random moments never leave a model
folder that looks finished but is not (docs/reliability.md, "Nothing lost").

``finemix mix`` runs in a subprocess on a ~120 MB pair so that the write phase lasts
seconds; the moments are drawn from a seeded generator (reproducible).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finemix.weights.hashing import file_sha256
from finemix.weights.output import TEMP_MARKER, recover_interrupted_output
from finemix.config import MixConfig
from finemix.repair.steps import mix_checkpoint
from tiny_models import make_bulky_pair

RATIO = "0.5"
pytestmark = pytest.mark.slow  # each test runs finemix on a ~120 MB pair in a subprocess


@pytest.fixture(scope="module")
def bulky(tmp_path_factory):
    """(pair, hash of an uninterrupted run's weights, seconds its write phase lasted): the shorter of two
    runs, since the first reads a cold page cache and a kill timed by it can land after a warm run ended."""
    root = tmp_path_factory.mktemp("bulky")
    pair = make_bulky_pair(root)
    durations = []
    for run in range(2):
        reference = root / f"reference{run}"
        process = start_mix(pair, reference)
        wait_for_write_phase(process, reference)
        started = time.monotonic()
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        durations.append(time.monotonic() - started)
    return pair, file_sha256(reference / "model.safetensors"), min(durations)


def start_mix(pair, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [sys.executable, "-m", "finemix", "mix", "--backdoored", str(pair.finetuned), "--pretrained",
            str(pair.pretrained), "--output", str(out), "--ratio", RATIO, *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so
    would the child (Python then installs no KeyboardInterrupt handler); a terminal's Ctrl-C reaches a
    process whose SIGINT is not ignored, which is what these tests are about."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*"))


def wait_for_write_phase(process: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Block until the temporary output folder exists (the run is writing)."""
    deadline = time.monotonic() + timeout
    while not temporaries(out):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)


def assert_finished_or_absent(out: Path, expected_hash: str) -> None:
    """The only allowed states: no output, or a complete output equal to an uninterrupted run's."""
    if out.exists():
        assert not (out / TEMP_MARKER).exists()
        assert file_sha256(out / "model.safetensors") == expected_hash
        assert (out / "finemix_report.json").is_file()
    for leftover in temporaries(out):  # hidden, and named as finemix's
        assert leftover.name.endswith(".finemix-tmp") or ".finemix-old-" in leftover.name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_write_cleans_up(tmp_path, bulky, signum):
    pair, _, write_seconds = bulky
    out = tmp_path / "out"
    process = start_mix(pair, out)
    wait_for_write_phase(process, out)
    time.sleep(random.Random(int(signum)).uniform(0.0, 0.1 * write_seconds))
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().endswith("finemix: interrupted; no output was written")
    assert not out.exists() and temporaries(out) == []


def test_sigkill_at_random_moments_never_leaves_a_plausible_partial_model(tmp_path, bulky):
    pair, expected, write_seconds = bulky
    rng = random.Random(20261122)
    outcomes = []
    for attempt in range(4):
        out = tmp_path / f"out{attempt}"
        process = start_mix(pair, out)
        if attempt == 3:  # anywhere, start-up included
            time.sleep(rng.uniform(0.0, 3.0 + write_seconds))
        else:  # while writing
            wait_for_write_phase(process, out)
            time.sleep(rng.uniform(0.0, 0.5 * write_seconds))
        process.kill()
        process.wait(timeout=60)
        outcomes.append("finished" if out.exists() else "killed while writing" if temporaries(out) else "killed early")
        assert_finished_or_absent(out, expected)
        # The next run cleans what the killed one left and completes.
        if out.exists():
            continue
        mix_checkpoint(pair.finetuned, pair.pretrained, out, MixConfig(ratio=float(RATIO)))
        assert file_sha256(out / "model.safetensors") == expected
        assert temporaries(out) == []
    # The test must have exercised what it is about: kills that landed mid-write.
    assert outcomes.count("killed while writing") >= 2, outcomes


def test_kill_during_force_replacement_keeps_a_complete_output(tmp_path, bulky):
    pair, new_hash, write_seconds = bulky
    out = tmp_path / "out"
    mix_checkpoint(pair.finetuned, pair.pretrained, out, MixConfig(ratio=1.0))
    old_hash = file_sha256(out / "model.safetensors")
    process = start_mix(pair, out, "--force")
    wait_for_write_phase(process, out)
    time.sleep(random.Random(7).uniform(0.0, 0.5 * write_seconds))
    process.kill()
    process.wait(timeout=60)
    assert file_sha256(out / "model.safetensors") == old_hash  # untouched until the new one is complete
    recover_interrupted_output(out)
    assert file_sha256(out / "model.safetensors") == old_hash
    assert not (out / TEMP_MARKER).exists()
    assert temporaries(out) == []
