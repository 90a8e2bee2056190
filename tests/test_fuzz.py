"""Fuzzing (issue 15): every command's options and every data-file reader, driven with random values and
shapes, end in success or a one-line error — never a traceback, a hang, or a write outside the output.

Commands run in-process on the tiny models of conftest.py. An example is: a command, its required
options (valid, or now and then replaced by a random value), and a random subset of its other options
with random values of every kind (numbers with NaN/inf and huge magnitudes, empty and odd strings, paths
to the test's files, folders and devices). A SIGALRM bounds each run, so a hang fails the test.
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import tree_hashes
from finemix.cli import build_parser, main
from finemix.data import load_examples, read_texts
from finemix.errors import FinemixError
from tiny_models import text_rows, write_text_csv

TIME_LIMIT_S = 60
COMMANDS = ("purify", "mix", "epur", "evaluate", "attack", "defend")
# Options that only change how long a run takes are held small, so a run cannot take minutes.
BOUNDED = {"--epochs": ["1", "0.5"], "--max-length": ["16", "32"],
           "--train-rows": ["24", "40"], "--shard-size-mb": ["1", "64"]}


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no result after {TIME_LIMIT_S} s")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_pair_factory):
    """Inputs every fuzzed command may point at, hashed before and after each run."""
    root = tmp_path_factory.mktemp("fuzz")
    pair = tiny_pair_factory("bert")
    inputs = root / "inputs"
    inputs.mkdir()
    clean = write_text_csv(inputs / "clean.csv", text_rows() + [(t + " , really", label) for t, label in text_rows()])
    (inputs / "texts.txt").write_text("\n".join(t for t, _ in text_rows()) + "\n")
    (inputs / "config.yaml").write_text("search: {candidates: [0.0]}\n")
    (inputs / "bad.yaml").write_text("search: [1, 2\n")
    (inputs / "rows.jsonl").write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in text_rows()))
    return {"root": root, "pair": pair, "inputs": inputs, "clean": clean}


def valid_values(world) -> dict[str, list[str]]:
    pair, inputs = world["pair"], world["inputs"]
    return {
        "--backdoored": [str(pair.finetuned)], "--pretrained": [str(pair.pretrained)], "--model": [str(pair.finetuned)],
        "--clean-data": [str(world["clean"])], "--data": [str(world["clean"]), str(inputs / "rows.jsonl")],
        "--unlabelled-text": [str(inputs / "texts.txt")], "--frequency-text": [str(inputs / "texts.txt")],
        "--config": [str(inputs / "config.yaml"), str(inputs / "bad.yaml")], "--ratio": ["0.3", "auto", "0"],
        "--defense": ["finemix+epur", "none", "epur", "fineprune"], "--batch-size": ["8", "64"], "--clean-model": [str(pair.finetuned)],
        "--trigger": ["cf", "I watched this 3D movie"], "--target-label": ["1", "0", "positive"], **BOUNDED,
        "--epur-top-n": ["5", "200"], "--epur-min-frequency": ["20", "2.5"], "--seed": ["0", "7"], "--lr": ["5e-5", "1e-3"],
        "--prune-ratio": ["0.3"], "--insertions": ["1", "2"], "--poison-rate": ["0.1", "0.3"], "--ep-lr": ["0.05"],
        "--segment": ["auto", "text"],
    }


def odd_values(world) -> st.SearchStrategy[str]:
    inputs = world["inputs"]
    places = [str(inputs), str(inputs / "clean.csv"), str(inputs / "missing"), "/dev/null", "/dev/zero", ".", "",
              " ", "~", "/", "..", "a\x01b", "m*", "run[1]"]
    numbers = st.one_of(st.integers(-10, 10**19).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str))
    return st.one_of(numbers, st.sampled_from(places), st.text(max_size=12))


@st.composite
def argv_for(draw, world, command: str):
    parser = subparsers()[command]
    valid, odd = valid_values(world), odd_values(world)
    argv = [command]
    for action in parser._actions:
        if not action.option_strings or "-h" in action.option_strings:
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if flag in ("--output", "--out", "--force"):
            continue  # the output is the test's own folder
        if not (action.required or draw(st.integers(0, 3)) == 0):
            continue
        if action.nargs == 0:  # a switch
            argv.append(flag)
            continue
        if action.choices and draw(st.integers(0, 3)) > 0:
            value = str(draw(st.sampled_from(sorted(map(str, action.choices)))))
        elif flag in BOUNDED or (flag in valid and draw(st.integers(0, 5)) > 0):
            value = draw(st.sampled_from(valid[flag]))
        else:
            value = draw(odd)
        argv += [flag, value]
    return argv


def run_bounded(argv: list[str], capsys) -> tuple[int, str]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


def check_outcome(code: int, err: str, argv: list[str]) -> None:
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        return
    lines = [line for line in err.strip().splitlines() if line.startswith("finemix: error:") or line.startswith("usage:")]
    assert code in (2, 3), (argv, code, err)  # 3: --strict with a warning, the output written
    if code == 2:
        errors = [line for line in err.strip().splitlines() if line.startswith("finemix: error:")]
        assert len(errors) == 1 or any(line.startswith("usage:") for line in lines), (argv, err)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_end_in_success_or_one_line_never_a_traceback_hang_or_stray_write(command, world, capsys):
    watched = (world["inputs"], world["pair"].pretrained, world["pair"].finetuned)
    before = tree_hashes(*watched)
    outputs = world["root"] / f"out-{command}"
    outputs.mkdir(exist_ok=True)
    counter = iter(range(10**6))
    outcomes: list[int] = []

    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argv=argv_for(world, command))
    def fuzz(argv):
        writes = command != "evaluate"  # evaluate writes nothing
        full = argv + (["--output", str(outputs / f"run{next(counter)}")] if writes else [])
        code, err = run_bounded(full, capsys)
        outcomes.append(code)
        check_outcome(code, err, full)
        assert tree_hashes(*watched) == before, ("an input changed", full)
        strays = [p for p in world["root"].iterdir() if p.name not in ("inputs", f"out-{command}") and not p.name.startswith("out-")]
        assert not strays, ("written outside the output", full, strays)

    fuzz()
    # the fuzzer reached real runs, not only refusals (its valid values make most runs start)
    assert 0 in outcomes and 2 in outcomes, outcomes


# ---------------------------------------------------------------- data-file readers

CELLS = st.one_of(st.text(max_size=20), st.integers(-3, 3).map(str), st.sampled_from(["", "positive", "1.5", "nan", "\x00"]))
SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt")


@st.composite
def data_files(draw):
    suffix = draw(st.sampled_from(SUFFIXES))
    if draw(st.integers(0, 5)) == 0:  # raw bytes of any kind
        return suffix, draw(st.binary(max_size=200))
    header = draw(st.lists(st.sampled_from(["text", "label", "text_b", "x", ""]), min_size=0, max_size=4))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=6))
    if suffix.startswith(".json"):
        records = [dict(zip(header, row)) if draw(st.booleans()) else row for row in rows]
        return suffix, "\n".join(json.dumps(r) for r in records).encode()
    separator = "\t" if suffix == ".tsv" else ","
    return suffix, "\n".join(separator.join(r) for r in [header, *rows]).encode()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(file=data_files(), labels=st.sampled_from([None, {"negative": 0, "positive": 1}, {"a b": 0, " c": 1}]))
def test_data_readers_return_rows_or_raise_one_line(tmp_path_factory, file, labels):
    suffix, content = file
    path = tmp_path_factory.mktemp("data") / f"rows{suffix}"
    path.write_bytes(content)
    for read in (lambda: load_examples(path, label2id=labels, num_labels=2), lambda: read_texts(path)):
        try:
            result = read()
        except FinemixError as error:
            assert "\n" not in str(error), str(error)
        else:
            assert isinstance(result, list)
