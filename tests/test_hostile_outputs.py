"""Hostile outputs (issue 15, defects 2, 6 and 8): no command may write over, into or around
its own inputs, the current or home folder, or another run's leftovers.

Every test points the commands at folders under ``tmp_path`` only: on the old code some
of these commands really delete what they are pointed at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finemix.cli import build_parser
from cli_helpers import assert_one_line_error, run, tree_hashes

ATTACK_FAST = ["--epochs", "0.1", "--batch-size", "8", "--max-length", "16"]


def mix(capsys, pair, out, *extra):
    return run(capsys, "mix", "--backdoored", pair.finetuned, "--pretrained", pair.pretrained, "--output", out,
               "--ratio", "0.5", *extra)


# --------------------------------------------------------------------------- defect 2: outputs over inputs

@pytest.fixture
def workspace(tmp_path, bert_pair, tiny_text_csv):
    """W holding a copy of the pre-trained model, a data file and another file."""
    work = tmp_path / "W"
    shutil.copytree(bert_pair.pretrained, work / "pretrained")
    shutil.copy(tiny_text_csv, work / "train.csv")
    (work / "notes.txt").write_text("the user's own notes\n")
    return work


def test_attack_output_equal_to_pretrained_is_refused(capsys, workspace):
    pretrained = workspace / "pretrained"
    before = tree_hashes(workspace)
    code, _, err = run(capsys, "attack", "--pretrained", pretrained, "--data", workspace / "train.csv",
                       "--output", pretrained, "--force", *ATTACK_FAST)
    assert_one_line_error(code, err, "overlaps the input")
    assert tree_hashes(workspace) == before


def test_attack_output_holding_its_inputs_is_refused_with_force(capsys, workspace):
    before = tree_hashes(workspace)
    code, _, err = run(capsys, "attack", "--pretrained", workspace / "pretrained", "--data", workspace / "train.csv",
                       "--output", workspace, "--force", *ATTACK_FAST)
    assert_one_line_error(code, err, "overlaps the input")
    assert tree_hashes(workspace) == before


def test_attack_output_holding_only_the_data_file_is_refused(capsys, tmp_path, bert_pair, workspace):
    data_only = tmp_path / "D"
    data_only.mkdir()
    shutil.copy(workspace / "train.csv", data_only / "train.csv")
    before = tree_hashes(data_only)
    code, _, err = run(capsys, "attack", "--pretrained", bert_pair.pretrained, "--data", data_only / "train.csv",
                       "--output", data_only, "--force", *ATTACK_FAST)
    assert_one_line_error(code, err, "overlaps the input file")
    assert tree_hashes(data_only) == before


def test_attack_refuses_a_non_empty_output_before_training(capsys, monkeypatch, tmp_path, bert_pair, tiny_text_csv):
    import transformers

    def no_training(*args, **kwargs):
        raise RuntimeError("the model was loaded for training before the output was checked")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", no_training)
    out = tmp_path / "victim"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, _, err = run(capsys, "attack", "--pretrained", bert_pair.pretrained, "--data", tiny_text_csv,
                       "--output", out, *ATTACK_FAST)
    assert_one_line_error(code, err, "not empty")
    assert (out / "keep.txt").read_text() == "x"


def test_defend_output_holding_the_clean_data_is_refused(capsys, tmp_path, bert_pair, tiny_text_csv):
    out = tmp_path / "out"
    out.mkdir()
    clean = shutil.copy(tiny_text_csv, out / "clean.csv")
    before = tree_hashes(out)
    code, _, err = run(capsys, "defend", "--defense", "mix", "--ratio", "0.5", "--backdoored", bert_pair.finetuned,
                       "--pretrained", bert_pair.pretrained, "--output", out, "--clean-data", clean, "--force",
                       "--epochs", "0.1", "--batch-size", "8", "--max-length", "16")
    assert_one_line_error(code, err, "overlaps the input file")
    assert tree_hashes(out) == before


def test_purify_output_holding_its_data_files_is_refused(capsys, tmp_path, bert_pair, tiny_text_csv):
    out = tmp_path / "out"
    out.mkdir()
    clean = shutil.copy(tiny_text_csv, out / "clean.csv")
    before = tree_hashes(out)
    code, _, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--output", out, "--clean-data", clean, "--force", "--ratio", "0.5", "--no-epur",
                       "--epochs", "0.1", "--batch-size", "8", "--max-length", "16", "--quiet")
    assert_one_line_error(code, err, "overlaps the input file")
    assert tree_hashes(out) == before


def test_epur_output_holding_the_frequency_text_is_refused(capsys, tmp_path, bert_pair):
    out = tmp_path / "out"
    out.mkdir()
    texts = out / "texts.txt"
    texts.write_text("a good movie\nthe worst film\n" * 10)
    before = tree_hashes(out)
    code, _, err = run(capsys, "epur", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--output", out, "--frequency-text", texts, "--force", "--epur-top-n", "3")
    assert_one_line_error(code, err, "overlaps the input file")
    assert tree_hashes(out) == before


# --------------------------------------------------------------------------- defect 6: empty paths, special places

BASE_ARGV = {
    "purify": ["purify", "--backdoored", "b", "--pretrained", "p", "--output", "o", "--clean-data", "c.csv"],
    "mix": ["mix", "--backdoored", "b", "--pretrained", "p", "--output", "o", "--ratio", "0.5"],
    "epur": ["epur", "--backdoored", "b", "--pretrained", "p", "--output", "o"],
    "evaluate": ["evaluate", "--model", "m", "--data", "d.csv"],
    "attack": ["attack", "--pretrained", "p", "--data", "d.csv", "--output", "o"],
    "defend": ["defend", "--defense", "finemix", "--backdoored", "b", "--pretrained", "p", "--output", "o",
               "--clean-data", "c.csv"],
    "bench": ["bench", "c.yaml"],
    "demo": ["demo"],
}
PATH_OPTIONS = [
    ("purify", "--backdoored"), ("purify", "--pretrained"), ("purify", "--output"), ("purify", "--clean-data"),
    ("purify", "--unlabelled-text"), ("purify", "--config"),
    ("mix", "--backdoored"), ("mix", "--pretrained"), ("mix", "--output"),
    ("epur", "--backdoored"), ("epur", "--pretrained"), ("epur", "--output"), ("epur", "--clean-data"),
    ("epur", "--frequency-text"),
    ("evaluate", "--model"), ("evaluate", "--data"),
    ("attack", "--pretrained"), ("attack", "--data"), ("attack", "--output"), ("attack", "--clean-model"),
    ("defend", "--backdoored"), ("defend", "--pretrained"), ("defend", "--output"), ("defend", "--clean-data"),
    ("defend", "--unlabelled-text"),
    ("bench", "config"), ("bench", "--out"), ("bench", "--models"),
    ("demo", "--out"),
]


@pytest.mark.parametrize("command", sorted(BASE_ARGV))
def test_base_argv_parse(command):
    build_parser().parse_args(BASE_ARGV[command])


@pytest.mark.parametrize("value", ["", " ", "\t \n", "a\0b"], ids=["empty", "space", "whitespace", "nul"])
@pytest.mark.parametrize("command,option", PATH_OPTIONS, ids=[f"{c}{o}" for c, o in PATH_OPTIONS])
def test_empty_or_blank_path_options_are_refused_at_parse_time(capsys, command, option, value):
    argv = list(BASE_ARGV[command])
    if option.startswith("--"):
        argv += [option, value]
    else:  # the positional argument (bench's config file)
        argv[argv.index("c.yaml")] = value
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert option.lstrip("-") in capsys.readouterr().err


def test_output_that_is_the_current_folder_is_refused_with_force(capsys, monkeypatch, tmp_path, bert_pair):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    for out in (".", "./", str(work)):
        code, _, err = mix(capsys, bert_pair, out, "--force")
        assert_one_line_error(code, err, "current folder")
    assert (work / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_output_above_the_current_folder_is_refused(capsys, monkeypatch, tmp_path, bert_pair):
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    (tmp_path / "work" / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    code, _, err = mix(capsys, bert_pair, "..", "--force")
    assert_one_line_error(code, err, "current folder")
    assert (tmp_path / "work" / "keep.txt").read_text() == "x"


def test_output_that_is_the_home_folder_is_refused(capsys, monkeypatch, tmp_path, bert_pair):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    code, _, err = mix(capsys, bert_pair, home, "--force")
    assert_one_line_error(code, err, "home folder")
    assert (home / ".profile").read_text() == "x"


def test_output_that_is_a_filesystem_root_is_refused(capsys, bert_pair):
    # Without --force on purpose: the old code, refusing the non-empty root, never wrote there either.
    code, _, err = mix(capsys, bert_pair, "/")
    assert_one_line_error(code, err, "filesystem root")


def test_demo_out_that_is_the_current_folder_is_refused_before_work(capsys, monkeypatch, tmp_path):
    import finemix.bench

    calls = []
    monkeypatch.setattr(finemix.bench, "demo", lambda *args, **kwargs: calls.append(args) or "ran")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "demo", "--out", ".")
    assert_one_line_error(code, err, "current folder")
    assert calls == []


def test_attack_output_that_is_the_current_folder_is_refused(capsys, monkeypatch, tmp_path, bert_pair, tiny_text_csv):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    code, _, err = run(capsys, "attack", "--pretrained", bert_pair.pretrained, "--data", tiny_text_csv,
                       "--output", ".", "--force", *ATTACK_FAST)
    assert_one_line_error(code, err, "current folder")
    assert (work / "keep.txt").read_text() == "x"


# --------------------------------------------------------------------------- defect 8: names are not patterns

def _leftover(folder: Path, name: str) -> Path:
    leftover = folder / name
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_text("another run's model")
    return leftover


@pytest.mark.parametrize("name,other", [
    ("m*", ".mx.finemix-old-12345"),  # another output's backup, restored and then deleted by the old code
    ("m?", ".mx.finemix-old-12345"),
    ("run[1]", ".run1.abcd1234.finemix-tmp"),  # another run's temporary folder
    ("run[1]", ".run1.finemix-old-777"),
    ("a", ".a.b.abcd1234.finemix-tmp"),  # the temporary folder of the output "a.b"
])
def test_leftovers_of_other_outputs_are_never_touched(capsys, tmp_path, bert_pair, name, other):
    folder = tmp_path / "g"
    leftover = _leftover(folder, other)
    code, _, err = mix(capsys, bert_pair, folder / name)
    assert code == 0, err
    assert (leftover / "model.safetensors").read_text() == "another run's model"
    assert (folder / name / "config.json").is_file()


def test_own_leftovers_are_still_cleaned_with_a_glob_character_in_the_name(capsys, tmp_path, bert_pair):
    folder = tmp_path / "g"
    stale = _leftover(folder, ".m*.abcd1234.finemix-tmp")
    code, _, err = mix(capsys, bert_pair, folder / "m*")
    assert code == 0, err
    assert not stale.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["m*"]


# --------------------------------------------------------------------------- helpers for commands that add to an output

@pytest.mark.parametrize("name", ["../../../x", "/abs/name", "a/b", "a\\b", "", "  ", ".hidden", "..", "x\0y", 5, None])
def test_names_that_become_file_names_are_names(tmp_path, name):
    from finemix.errors import FinemixError
    from finemix.weights.output import child_path

    with pytest.raises(FinemixError):
        child_path(tmp_path, name, "data-set key")
    assert child_path(tmp_path, "mr-addsent") == tmp_path / "mr-addsent"


def test_a_name_that_is_a_symlink_out_of_its_root_is_refused(tmp_path):
    from finemix.errors import FinemixError
    from finemix.weights.output import child_path

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(FinemixError, match="outside"):
        child_path(tmp_path / "root", "link")


def test_an_output_that_is_added_to_must_stay_apart_from_the_inputs(tmp_path):
    from finemix.errors import FinemixError
    from finemix.weights.output import check_output_apart

    data = tmp_path / "data" / "train.csv"
    data.parent.mkdir()
    data.write_text("text,label\n")
    for out in (tmp_path / "data", data, tmp_path / "data" / "train.csv" / "out", tmp_path):
        with pytest.raises(FinemixError, match="overlaps the input"):
            check_output_apart(out, [data], what="--out")
    check_output_apart(tmp_path / "runs", [data], what="--out")
