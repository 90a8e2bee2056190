"""Issue 15, defect 12 (bench names are paths) and the bench part of defect 10 (bench YAML of the wrong
shape): every bench config ends in a config or in one line (`finemix: error: ...`, exit 2), never a
traceback or a hang, and nothing a config names is written outside ``--out`` / ``--models``.

The CLI tests fail on the code before the fix (run this file against /work/baseline to see it); they
point the old code only at tmp_path folders."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import finemix
from finemix.cli import main
from finemix.errors import FinemixError
from tiny_models import text_rows, write_text_csv
from cli_helpers import assert_one_line_error, run

BASE = {"name": "grid", "seeds": [0], "datasets": {"mr": {}}, "attacks": {"badword": {}}}


def write_config(path: Path, values) -> Path:
    path.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    return path


def with_changes(**changes) -> dict:
    return {**BASE, **changes}


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- defect 12: names are names

PATH_NAMES = ["../../../x", "a/b", "..", ".", ".hidden", "", " ", " padded", "a\\b", "x\0y", "ABSOLUTE"]


@pytest.mark.parametrize("name", PATH_NAMES)
@pytest.mark.parametrize("field", ["data-set key", "attack label", "config name"])
def test_a_name_that_is_a_path_is_refused_when_the_config_loads(tmp_path, capsys, field, name):
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    values = {"data-set key": with_changes(datasets={name: {}}),
              "attack label": with_changes(attacks={name: {"attack": "badword"}}),
              "config name": with_changes(name=name)}[field]
    code, out, err = run(capsys, "bench", write_config(tmp_path / "grid.yaml", values), "--dry-run")
    line = assert_one_line_error(code, err)
    assert field in line or ("\0" in name and "NUL" in line), line
    assert out == ""


@pytest.mark.parametrize("name", ["ABSOLUTE", "../../escaped"])
def test_the_config_name_cannot_send_the_report_elsewhere(tmp_path, capsys, monkeypatch, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    config = write_config(tmp_path / "grid.yaml", with_changes(name=name))
    code, _, err = run(capsys, "bench", config, "--report-only")  # no --out: runs/bench/NAME
    assert_one_line_error(code, err, "config name")
    assert tree(tmp_path) == ["grid.yaml", "work"]  # no results.md, no plots, anywhere


def test_plain_names_still_load(tmp_path, capsys):
    values = with_changes(name="grid 2", datasets={"hf:sst2": {}, "mr-4k": {}}, attacks={"bad word": {"attack": "badword"}})
    code, out, err = run(capsys, "bench", write_config(tmp_path / "grid.yaml", values), "--dry-run")
    assert code == 0, err
    assert '"dataset": "hf:sst2"' in out and '"attack": "bad word"' in out


def test_model_folders_stay_in_the_cache_for_configs_built_in_code(tmp_path):
    """Defence in depth: a config built in code (not loaded) still cannot name a folder outside the cache."""
    from finemix.bench import BenchConfig, DatasetPlan, ModelCache
    from finemix.attacks import AttackConfig

    config = BenchConfig(name="grid", datasets={"mr": DatasetPlan()}, attacks={"badword": AttackConfig()})
    with pytest.raises(FinemixError, match="not a plain name"):
        BenchConfig(name="grid", datasets={"../x": DatasetPlan()}, attacks={"badword": AttackConfig()})
    object.__setattr__(config, "datasets", {"../x": DatasetPlan()})  # past the checks of __post_init__
    cache = ModelCache(config, tmp_path / "models", False, print)
    with pytest.raises(FinemixError, match="data-set key"):
        cache.clean_model_folder("../x", 0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mr").symlink_to(outside)  # a symlink in a shared cache
    object.__setattr__(config, "datasets", {"mr": DatasetPlan()})
    with pytest.raises(FinemixError, match="leads outside"):
        cache.clean_model_folder("mr", 0)


def local_inputs(tmp_path: Path) -> tuple[dict, Path, Path]:
    """A config with a local pre-trained folder and a local data set (neither is read by --report-only)."""
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / "config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    files = {f"{split}_file": str(write_text_csv(data / f"{split}.csv", text_rows())) for split in ("train", "dev", "test")}
    values = with_changes(pretrained=str(pretrained), datasets={"toy": {"labels": ["negative", "positive"], **files}})
    return values, pretrained, data


@pytest.mark.parametrize("option, target", [
    ("--out", "data"),  # the data set's folder
    ("--out", "data/train.csv"),  # a data file
    ("--out", "pretrained"),
    ("--out", "pretrained/bench"),  # inside the pre-trained model
    ("--out", "."),  # the current folder (tmp_path/work)
    ("--out", ".."),  # above it
    ("--models", "pretrained"),
    ("--models", "data"),
    ("--models", "data/test.csv"),
])
def test_out_and_models_must_lie_apart_from_the_inputs_report_only_too(tmp_path, capsys, monkeypatch, option, target):
    values, pretrained, data = local_inputs(tmp_path)
    config = write_config(tmp_path / "grid.yaml", values)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {folder: tree(folder) for folder in (pretrained, data, work)}
    path = work / target if target in (".", "..") else tmp_path / target
    extra = ["--out", tmp_path / "out"] if option == "--models" else []
    code, _, err = run(capsys, "bench", config, "--report-only", option, path, *extra)
    assert_one_line_error(code, err, option)
    assert {folder: tree(folder) for folder in (pretrained, data, work)} == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "results.md").exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    config = write_config(tmp_path / "grid.yaml", BASE)
    (tmp_path / "out").write_text("a file\n")
    code, _, err = run(capsys, "bench", config, "--report-only", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "not a folder")
    assert (tmp_path / "out").read_text() == "a file\n"


def test_lines_of_results_jsonl_that_are_no_records_are_ignored(tmp_path, capsys):
    config = write_config(tmp_path / "grid.yaml", BASE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_bytes(b'5\n[1]\n"text"\n{"no": "key"}\n{"key": 7}\n\xff\xfe{"key"\n' + b"[" * 100000 + b"\n")
    code, out_text, err = run(capsys, "bench", config, "--report-only", "--out", out)
    assert code == 0, err
    assert "0 of 4 measurements" in (out / "results.md").read_text()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_results_jsonl_that_is_no_regular_file_is_refused(tmp_path, capsys):
    config = write_config(tmp_path / "grid.yaml", BASE)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "results.jsonl")  # the first append would block for ever
    code, _, err = run(capsys, "bench", config, "--report-only", "--out", out)
    assert_one_line_error(code, err, "results.jsonl", "not a regular file")


# ---------------------------------------------------------------- defect 10: bench YAML of the wrong shape

WRONG_SHAPES = {
    "seeds-a-number": with_changes(seeds=5),
    "seeds-a-word": with_changes(seeds=["a"]),
    "seeds-a-boolean": with_changes(seeds=[True]),
    "seeds-negative": with_changes(seeds=[-1]),
    "seeds-past-32-bits": with_changes(seeds=[2**32]),
    "datasets-a-list": with_changes(datasets=["mr"]),
    "datasets-a-set": "name: grid\nseeds: [0]\ndatasets: !!set {mr}\nattacks: {badword: }\n",
    "attacks-a-list": with_changes(attacks=["badword"]),
    "defense-a-list": with_changes(defense=[1]),
    "victim-a-number": with_changes(victim=3),
    "defenses-a-mapping": with_changes(defenses={"finetune": 1}),
    "clean-rows-a-word": with_changes(clean_rows=["x"]),
    "clean-rows-a-number": with_changes(clean_rows=128),
    "unlabelled-rows-negative": with_changes(unlabelled_rows=-1),
    "unlabelled-rows-a-word": with_changes(unlabelled_rows="many"),
    "keep-models-maybe": with_changes(keep_models="maybe"),
    "name-missing": {k: v for k, v in BASE.items() if k != "name"},
    "name-a-number": with_changes(name=5),
    "data-set-plan-a-list": with_changes(datasets={"mr": [1]}),
    "train-rows-a-word": with_changes(datasets={"mr": {"train_rows": "x"}}),
    "train-rows-zero": with_changes(datasets={"mr": {"train_rows": 0}}),
    "train-rows-huge": with_changes(datasets={"mr": {"train_rows": 10**30}}),
    "max-length-negative": with_changes(datasets={"mr": {"max_length": -1}}),
    "target-label-a-boolean": with_changes(datasets={"mr": {"target_label": True}}),
    "victim-epochs-nan": with_changes(datasets={"mr": {"victim_epochs": float("nan")}}),
    "labels-a-mapping": with_changes(datasets={"mr": {"labels": {"a": 1}}}),
    "train-file-a-list": with_changes(datasets={"mr": {"train_file": ["a"], "dev_file": "b", "test_file": "c", "labels": ["x"]}}),
    "attack-a-number": with_changes(attacks={"badword": 3}),
    "attack-name-a-list": with_changes(attacks={"x": {"attack": ["badword"]}}),
    "triggers-nested": with_changes(attacks={"badword": {"triggers": [[1]]}}),
    "triggers-a-number": with_changes(attacks={"badword": {"triggers": 5}}),
    "insertions-a-word": with_changes(attacks={"badword": {"insertions": "x"}}),
    "poison-rate-a-list": with_changes(attacks={"badword": {"poison_rate": [0.1]}}),
    "adaptive-ratios-one": with_changes(attacks={"adaptive": {"adaptive_ratios": [0.1]}}),
    "segment-unknown": with_changes(attacks={"badword": {"segment": "middle"}}),
    "victim-epochs-true": with_changes(victim={"epochs": True}),
    "victim-lr-inf": with_changes(victim={"lr": float("inf")}),
    "victim-batch-size-zero": with_changes(victim={"batch_size": 0}),
    "defense-distill-one": with_changes(defense={"distill": 1}),
    "defense-candidates-a-number": with_changes(defense={"candidates": 0.5}),
    "defense-candidates-empty": with_changes(defense={"candidates": []}),
    "defense-tolerance-a-word": with_changes(defense={"tolerance": "x"}),
    "defense-epur-top-n-negative": with_changes(defense={"epur_top_n": -3}),
    # YAML that is no config at all
    "yaml-int-tag": "name: !!int x\n",
    "yaml-float-tag": "a: !!float x\n",
    "yaml-timestamp-tag": "a: !!timestamp x\n",
    "yaml-nested-10000-deep": "[" * 10000 + "]" * 10000,
    "yaml-seeds-refer-to-themselves": "name: grid\ndatasets: {mr: }\nattacks: {badword: }\nseeds: &s [*s]\n",
    "not-utf8": b"\xff\xfe name: grid",
}


@pytest.mark.parametrize("case", sorted(WRONG_SHAPES))
def test_bench_yaml_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys, case):
    config = tmp_path / "grid.yaml"
    value = WRONG_SHAPES[case]
    config.write_bytes(value) if isinstance(value, bytes) else write_config(config, value)
    code, out, err = run(capsys, "bench", config, "--dry-run")
    assert_one_line_error(code, err)
    assert out == ""


STILL_ONE_LINE = {  # one line before issue 15 too: kept so
    "empty": "",
    "a-string": "grid\n",
    "a-number": "5\n",
    "a-list": "[1, 2]\n",
    "invalid-yaml": "a: [\n",
    "unknown-nested-key": with_changes(datasets={"mr": {"colour": 1}}),
    "unknown-variant-option": with_changes(defense={"variant": {"colour": 1}}),
    "ratio-past-one": with_changes(ratios=["auto", 2]),
    "ratios-a-list-inside": with_changes(ratios=[["auto"]]),
    "defense-stop-hopeless-a-word": with_changes(defense={"stop_hopeless": "no"}),  # (the old code lacked the option)
    "defense-search-budget-below-one": with_changes(defense={"search_budget": 0.5}),
}


@pytest.mark.parametrize("case", sorted(STILL_ONE_LINE) + ["a-folder", "missing"])
def test_no_config_at_all_is_a_one_line_error(tmp_path, capsys, case):
    config = tmp_path / "grid.yaml"
    if case == "a-folder":
        config.mkdir()
    elif case != "missing":
        write_config(config, STILL_ONE_LINE[case])
    code, _, err = run(capsys, "bench", config, "--dry-run")
    assert_one_line_error(code, err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_the_config_is_refused_not_read(tmp_path):
    """A FIFO (or a device) would block or never end: refused as not a regular file. In a child process
    so that the old code's hang ends in a timeout, not a stuck test run."""
    fifo = tmp_path / "grid.yaml"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(Path(finemix.__file__).resolve().parents[1])}
    try:
        result = subprocess.run([sys.executable, "-m", "finemix", "bench", str(fifo), "--dry-run"], env=env,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("finemix bench hung reading a FIFO")
    assert_one_line_error(result.returncode, result.stderr, "not a regular file")


# ---------------------------------------------------------------- defect 10: every key, any value (hypothesis)

def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _key_paths() -> list[tuple]:
    from finemix.attacks import AttackConfig
    from finemix.bench import BenchConfig, DatasetPlan, DefensePlan, VictimPlan

    levels = {(): BenchConfig, ("datasets", "mr"): DatasetPlan, ("attacks", "badword"): AttackConfig,
              ("victim",): VictimPlan, ("defense",): DefensePlan, ("defense", "variant"): None}
    paths = [level + (name,) for level, cls in levels.items() for name in (_field_names(cls) if cls else ["teacher"])]
    return paths + [level + ("colour",) for level in levels] + [("datasets", "toy"), ("attacks", "ep")]


KEY_PATHS = _key_paths()
WORDS = st.sampled_from(["auto", "mr", "badword", "adaptive", "keep", "reinit", "text", "text_b", "dirty", "cf", "cross-fit",
                         "../x", "/tmp/x", ".x", "", " ", "1e400", "nan", "a\0b", "a\nb"])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-3, max_value=300) | st.integers()
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=0, max_value=1) | st.text(max_size=8) | WORDS)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6) | WORDS | st.integers(-2, 2), children, max_size=4),
    max_leaves=12)


def _changed(changes: list) -> dict:
    values = yaml.safe_load(yaml.safe_dump(BASE))  # a deep copy
    for path, value in changes:
        where = values
        for step in path[:-1]:
            if not isinstance(where.get(step), dict):
                where[step] = {}
            where = where[step]
        where[path[-1]] = value
    return values


# values of the right shape often enough that configs also load (and then must be sound)
PLAUSIBLE = st.lists(st.integers(0, 300) | st.floats(0, 1) | WORDS, min_size=1, max_size=3)
CHANGES = st.lists(st.tuples(st.sampled_from(KEY_PATHS), YAML_VALUES | PLAUSIBLE), min_size=1, max_size=3)


def _loads_or_one_line(values) -> None:
    from finemix.bench import BenchConfig, bench_config_from_mapping, iter_grid
    from finemix.weights.output import plain_name

    try:
        config = bench_config_from_mapping(values)
    except FinemixError as error:
        assert str(error) and "\n" not in str(error), repr(str(error))
        return
    assert isinstance(config, BenchConfig)
    for name in (config.name, *config.datasets, *config.attacks):
        assert plain_name(name) == name
    assert all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in config.seeds)
    assert all(isinstance(n, int) and n >= 2 for n in config.clean_rows)
    list(iter_grid(config))  # the dry run's plan


@given(changes=CHANGES)
@settings(max_examples=400, deadline=None)
def test_any_value_of_any_key_loads_or_is_one_line(changes):
    _loads_or_one_line(_changed(changes))


@given(document=YAML_VALUES | CHANGES.map(_changed))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_yaml_document_dry_runs_or_is_one_line(tmp_path_factory, document):
    config = tmp_path_factory.getbasetemp() / "fuzzed-bench.yaml"
    config.write_text(yaml.safe_dump(document))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", str(config), "--dry-run"])
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert_one_line_error(code, err.getvalue())
