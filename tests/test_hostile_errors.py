"""Issue 15, defects 9, 10 and 13: hostile inputs end in one line (`finemix: error: ...`, exit 2) or in a
meaningful result, never a traceback, a hang or numbers computed over [UNK]s.

Each test fails on the code before the fix (run the file against /work/baseline to see it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finemix.cli import main
from tiny_models import text_rows, write_text_csv

FAST = ["--epochs", "1", "--batch-size", "8", "--quiet"]


def run(capsys, *argv) -> tuple[int, str, str]:
    """main() with argparse's exit as a return code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and one error line, the last on stderr (transformers' loading bars may come before it)."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines and lines[-1].startswith("finemix: error: "), err
    assert "Traceback" not in err and sum(line.startswith("finemix: error:") for line in lines) == 1, err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def copy_model(source: Path, target: Path, **config_changes) -> Path:
    """A copy of a model folder; ``config_changes`` replace config.json fields (``...`` deletes one)."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    for key, value in config_changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


def drop_tokenizer(folder: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def truncate_vocabulary(folder: Path, rows: int) -> Path:
    """The word embedding cut to ``rows`` rows (config too); the tokenizer keeps its larger vocabulary."""
    from safetensors.torch import load_file, save_file

    for file in folder.glob("*.safetensors"):
        state = load_file(str(file))
        state = {k: (v[:rows].clone() if k.endswith("word_embeddings.weight") else v) for k, v in state.items()}
        save_file(state, str(file), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": rows}))
    return folder


# ---------------------------------------------------------------- defect 9: evaluate's meaningless numbers

def test_evaluate_refuses_a_model_folder_without_tokenizer_files(tmp_path, capsys, bert_pair, tiny_text_csv):
    model = drop_tokenizer(copy_model(bert_pair.finetuned, tmp_path / "no-tokenizer"))
    code, out, err = run(capsys, "evaluate", "--model", model, "--data", tiny_text_csv)
    assert_one_line_error(code, err, "no tokenizer files")
    assert "accuracy" not in out


@pytest.mark.parametrize("command", ["evaluate", "purify", "defend", "attack"])
@pytest.mark.parametrize("length", ["0", "2", "7", "-5"])
def test_max_length_below_8_is_refused_by_every_command(tmp_path, capsys, bert_pair, tiny_text_csv, command, length):
    pair = ["--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained, "--output", tmp_path / "out"]
    argv = {
        "evaluate": ["evaluate", "--model", bert_pair.finetuned, "--data", tiny_text_csv],
        "purify": ["purify", *pair, "--clean-data", tiny_text_csv],
        "defend": ["defend", "--defense", "finetune", *pair, "--clean-data", tiny_text_csv],
        "attack": ["attack", "--pretrained", bert_pair.pretrained, "--data", tiny_text_csv, "--output", tmp_path / "out"],
    }[command]
    code, _, err = run(capsys, *argv, "--max-length", length)
    assert_one_line_error(code, err, "--max-length", ">= 8")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- defect 10: tracebacks instead of one line

CONFIG_CASES = {
    "array": [1, 2],
    "string": "config",
    "label2id-values-not-integers": {"label2id": {"negative": "zero", "positive": 1}},
    "label2id-a-list": {"label2id": ["negative", "positive"]},
    "label2id-boolean-id": {"label2id": {"negative": False, "positive": True}},
    "label2id-name-twice": {"label2id": {"positive": 0, " Positive ": 1}},
    "id2label-a-list": {"id2label": ["negative", "positive"]},
    "id2label-key-not-an-id": {"id2label": {"zero": "negative", "1": "positive"}},
    "num_labels-a-word": {"num_labels": "two", "id2label": ..., "label2id": ...},
    "num_labels-negative": {"num_labels": -2, "id2label": ..., "label2id": ...},
    "vocab_size-a-string": {"vocab_size": "x"},
    "hidden_size-null": {"hidden_size": None},
    "max_position_embeddings-zero": {"max_position_embeddings": 0},
    "pad_token_id-past-vocabulary": {"pad_token_id": 10**6},
    "model_type-a-number": {"model_type": 5},
    "dtype-not-a-dtype": {"dtype": "x"},
    "hidden_act-null": {"hidden_act": None},
    "layer_norm_eps-a-list": {"layer_norm_eps": [1]},
    "tie_word_embeddings-a-string": {"tie_word_embeddings": "yes"},
}


def hostile_config_model(source: Path, folder: Path, case) -> Path:
    if isinstance(case, dict):
        return copy_model(source, folder, **case)
    model = copy_model(source, folder)
    (model / "config.json").write_text(json.dumps(case))
    return model


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys, bert_pair, tiny_text_csv, case):
    model = hostile_config_model(bert_pair.finetuned, tmp_path / "model", CONFIG_CASES[case])
    code, _, err = run(capsys, "evaluate", "--model", model, "--data", tiny_text_csv, "--max-length", "32")
    assert_one_line_error(code, err, "config.json")


@pytest.mark.parametrize("command", ["mix", "epur"])
def test_config_checks_guard_the_pair_commands_too(tmp_path, capsys, bert_pair, tiny_text_csv, command):
    """A bad config was reported as missing tokenizer files (epur) or crashed (mix)."""
    model = copy_model(bert_pair.finetuned, tmp_path / "model", vocab_size="x", label2id=[1, 2])
    extra = ["--ratio", "0.5"] if command == "mix" else ["--clean-data", tiny_text_csv]
    code, _, err = run(capsys, command, "--backdoored", model, "--pretrained", bert_pair.pretrained,
                       "--output", tmp_path / "out", *extra)
    line = assert_one_line_error(code, err, "config.json")
    assert "tokenizer" not in line


def test_evaluate_refuses_tokenizer_ids_past_the_word_embedding(tmp_path, capsys, bert_pair, tiny_text_csv):
    model = truncate_vocabulary(copy_model(bert_pair.finetuned, tmp_path / "model"), 20)
    code, out, err = run(capsys, "evaluate", "--model", model, "--data", tiny_text_csv, "--max-length", "32")
    assert_one_line_error(code, err, "token ids up to", "20 rows")


@pytest.mark.parametrize("command", ["epur", "purify"])
def test_repairs_refuse_tokenizer_ids_past_the_word_embedding(tmp_path, capsys, bert_pair, tiny_text_csv, command):
    finetuned = truncate_vocabulary(copy_model(bert_pair.finetuned, tmp_path / "ft"), 20)
    pretrained = truncate_vocabulary(copy_model(bert_pair.pretrained, tmp_path / "pre"), 20)
    extra = ["--ratio", "0", *FAST, "--max-length", "32"] if command == "purify" else []
    code, _, err = run(capsys, command, "--backdoored", finetuned, "--pretrained", pretrained,
                       "--clean-data", tiny_text_csv, "--output", tmp_path / "out", *extra)
    assert_one_line_error(code, err, "token ids up to")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def long_rows_csv(tmp_path) -> Path:
    """Rows of 200+ tokens: longer than the tiny models' 64 positions."""
    return write_text_csv(tmp_path / "long.csv", [(" ".join([text] * 25), label) for text, label in text_rows()])


def test_rows_longer_than_the_model_positions_are_clipped_in_evaluate(capsys, bert_pair, long_rows_csv):
    """The default --max-length (128) is clipped to the model's 64 positions; before, a traceback."""
    code, out, err = run(capsys, "evaluate", "--model", bert_pair.finetuned, "--data", long_rows_csv, "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 40


@pytest.mark.parametrize("tiny_pair", ["roberta"], indirect=True)
def test_rows_longer_than_the_model_positions_are_clipped_in_purify(tmp_path, capsys, tiny_pair, long_rows_csv):
    """RoBERTa's positions start after the padding id: 66 position rows hold 64 tokens."""
    out = tmp_path / "out"
    code, _, err = run(capsys, "purify", "--backdoored", tiny_pair.finetuned, "--pretrained", tiny_pair.pretrained,
                       "--clean-data", long_rows_csv, "--output", out, "--ratio", "0", "--no-epur", *FAST)
    assert code == 0, err
    assert json.loads((out / "finemix_report.json").read_text())["settings"]["train"]["max_length"] == 64


def _seed_commands(bert_pair, data: Path, out: Path) -> dict[str, list]:
    pair = ["--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained, "--output", out]
    return {
        "purify": ["purify", *pair, "--clean-data", data],
        "mix": ["mix", *pair, "--ratio", "0.5"],
        "evaluate": ["evaluate", "--model", bert_pair.finetuned, "--data", data, "--trigger", "cf", "--target-label", "1"],
        "attack": ["attack", "--pretrained", bert_pair.pretrained, "--data", data, "--output", out],
        "defend": ["defend", "--defense", "finemix", *pair, "--clean-data", data],
        "demo": ["demo", "--out", out],
    }


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64), "1e3", "²", " 7"])
@pytest.mark.parametrize("command", ["purify", "mix", "evaluate", "attack", "defend", "demo"])
def test_seeds_outside_the_32_bit_range_are_refused(tmp_path, capsys, bert_pair, tiny_text_csv, command, seed):
    argv = _seed_commands(bert_pair, tiny_text_csv, tmp_path / "out")[command]
    code, _, err = run(capsys, *argv, "--seed", seed)
    assert_one_line_error(code, err, "--seed")
    assert not (tmp_path / "out").exists()


def test_bench_seed_filter_is_checked_too(tmp_path, capsys):
    code, _, err = run(capsys, "bench", tmp_path / "none.yaml", "--seeds", "0", "-3")
    assert_one_line_error(code, err, "--seeds")


NEGATIVE_COUNTS = [
    ("mix", "--shard-size-mb", "0"), ("mix", "--shard-size-mb", "-1"),
    ("epur", "--epur-top-n", "-1"), ("purify", "--epur-top-n", "-1"), ("defend", "--epur-top-n", "-1"),
    ("purify", "--batch-size", "0"), ("defend", "--batch-size", "-4"), ("evaluate", "--batch-size", "0"),
    ("attack", "--batch-size", "0"), ("attack", "--insertions", "0"), ("attack", "--train-rows", "-1"),
    ("attack", "--train-rows", "0"), ("attack", "--target-label", "-1"), ("attack", "--target-label", "²"),
    ("evaluate", "--batch-size", "1_0"), ("bench", "--threads", "0"),
]


@pytest.mark.parametrize("command, option, value", NEGATIVE_COUNTS, ids=lambda v: str(v))
def test_negative_counts_and_sizes_are_refused_at_parse_time(tmp_path, capsys, bert_pair, tiny_text_csv,
                                                             command, option, value):
    out = tmp_path / "out"
    pair = ["--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained, "--output", out]
    argv = {
        "mix": ["mix", *pair, "--ratio", "0.5"],
        "epur": ["epur", *pair, "--clean-data", tiny_text_csv],
        "purify": ["purify", *pair, "--clean-data", tiny_text_csv],
        "defend": ["defend", "--defense", "finemix", *pair, "--clean-data", tiny_text_csv],
        "evaluate": ["evaluate", "--model", bert_pair.finetuned, "--data", tiny_text_csv],
        "attack": ["attack", "--pretrained", bert_pair.pretrained, "--data", tiny_text_csv, "--output", out],
        "bench": ["bench", tmp_path / "none.yaml"],
    }[command]
    code, _, err = run(capsys, *argv, option, value)
    assert_one_line_error(code, err, option)
    assert len(err.strip().splitlines()) == 1, err  # refused by the parser: nothing was loaded
    assert not out.exists()


@pytest.mark.parametrize("label", ["²", "¹", "٣", "1_0", "-", "+"])
def test_target_label_that_only_looks_like_a_number_is_a_one_line_error(capsys, bert_pair, tiny_text_csv, label):
    code, _, err = run(capsys, "evaluate", "--model", bert_pair.finetuned, "--data", tiny_text_csv,
                       "--trigger", "cf", "--target-label", label)
    assert_one_line_error(code, err, "--target-label")


# Reads one data file in a child process under a memory cap, so that the old code's endless read of
# /dev/zero fails instead of filling the machine, and a FIFO's hang ends at the timeout.
_READER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from finemix.data import load_examples, read_texts
from finemix.errors import FinemixError
try:
    (load_examples if sys.argv[1] == "examples" else read_texts)(sys.argv[2])
except FinemixError as error:
    print("finemix: error:", error, file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.parametrize("reader", ["examples", "texts"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_data_file_that_is_not_a_regular_file_is_refused_without_reading(tmp_path, reader, kind):
    path = tmp_path / ("data.txt" if reader == "texts" else "data.csv")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    try:
        result = subprocess.run([sys.executable, "-c", _READER, reader, str(path)], capture_output=True, text=True,
                                timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading a {kind} hung")
    assert_one_line_error(result.returncode, result.stderr, "not a regular file")


def test_data_file_over_the_size_cap_is_a_one_line_error(tmp_path, monkeypatch):
    from finemix.data import files, load_examples
    from finemix.errors import FinemixError

    path = write_text_csv(tmp_path / "rows.csv")
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(FinemixError, match="larger than 100 bytes"):
        load_examples(path)


# ---------------------------------------------------------------- defect 13: misleading messages, names, the bar

def test_missing_tokenizer_is_not_reported_as_different_vocabularies(tmp_path, capsys, bert_pair, tiny_text_csv):
    model = drop_tokenizer(copy_model(bert_pair.finetuned, tmp_path / "model"))
    code, _, err = run(capsys, "epur", "--backdoored", model, "--pretrained", bert_pair.pretrained,
                       "--clean-data", tiny_text_csv, "--output", tmp_path / "out")
    line = assert_one_line_error(code, err, "no tokenizer files")
    assert "vocabularies" not in line


def test_label_names_with_spaces_in_the_config_match_the_data(tmp_path, capsys, bert_pair):
    model = copy_model(bert_pair.finetuned, tmp_path / "model", label2id={" negative ": 0, "positive  ": 1},
                       id2label={"0": " negative ", "1": "positive  "})
    names = write_text_csv(tmp_path / "names.csv", [(t, ["negative", "positive"][y]) for t, y in text_rows()])
    code, out, err = run(capsys, "evaluate", "--model", model, "--data", names, "--max-length", "32", "--json",
                         "--trigger", "cf", "--target-label", "positive")
    assert code == 0, err
    assert json.loads(out)["n"] == 40


def test_label_lookup_strips_both_sides():
    from finemix.data.examples import label_by_name

    assert label_by_name(" Positive", {"positive ": 1, " negative": 0}) == 1
    assert label_by_name("negative", {"positive ": 1, " negative": 0}) == 0
    assert label_by_name("neutral", {"positive ": 1}) is None


def test_progress_bar_is_closed_when_training_is_interrupted(bert_pair, capsys):
    """The bar used to stay open and redraw itself at exit, after "finemix: interrupted"."""
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.config import TrainConfig
    from finemix.data import Example
    from finemix.train import finetune

    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    rows = [Example(text, label) for text, label in text_rows()]

    def interrupt_after_a_step(_model):
        def after_step():
            raise KeyboardInterrupt

        return after_step

    config = TrainConfig(epochs=1, batch_size=4, max_length=16, progress=True)
    with pytest.raises(KeyboardInterrupt):
        finetune(model, tokenizer, rows, config, step_hook=interrupt_after_a_step)
    assert not [bar for bar in list(tqdm._instances) if bar.desc == "fine-tuning"]


def test_usage_errors_are_one_line(capsys):
    code, _, err = run(capsys, "mix", "--ratio", "2")
    assert_one_line_error(code, err, "--ratio", "see finemix mix --help")
    code, _, err = run(capsys, "nonsense")
    assert_one_line_error(code, err, "invalid choice")


def test_control_characters_in_a_path_stay_on_one_line(tmp_path, capsys, bert_pair):
    code, _, err = run(capsys, "evaluate", "--model", bert_pair.finetuned, "--data", tmp_path / "a\nb\u2028c.csv")
    assert_one_line_error(code, err, "file not found", "\\n")


@pytest.mark.parametrize("kind", ["device", "fifo", "folder", "huge", "deep", "binary"])
def test_a_purify_config_file_that_is_no_yaml_config_is_refused_without_endless_reading(tmp_path, capsys, bert_pair,
                                                                                         tiny_text_csv, kind):
    """`purify --config /dev/zero` used to read forever (memory grew until the machine ran out)."""
    config = {"device": Path("/dev/zero"), "fifo": tmp_path / "fifo", "folder": tmp_path,
              "huge": tmp_path / "huge.yaml", "deep": tmp_path / "deep.yaml", "binary": tmp_path / "binary.yaml"}[kind]
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "huge":
        config.write_text("# padding\n" * 200_000)
    elif kind == "deep":
        config.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "binary":
        config.write_bytes(b"\xff\xfe\x00 search: 1")
    code, _, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--clean-data", tiny_text_csv, "--output", tmp_path / "out", "--config", config, "--quiet")
    assert_one_line_error(code, err)
    assert not (tmp_path / "out").exists()
