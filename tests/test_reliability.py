"""Hostile checkpoints, bad data and options, interruptions, determinism (docs/reliability.md).

Every case here must end in one of two ways: a one-line ``finemix: error:`` naming the
file and the problem (exit 2) with no output folder, or a documented handling. None may
leave a partial or silently wrong model.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tiny_models import candidates_config

from finemix.weights.hashing import file_sha256
from finemix.weights.output import TEMP_MARKER, recover_interrupted_output
from finemix.weights.reader import TensorReader
from finemix.cli import main
from finemix.errors import FinemixError
from cli_helpers import assert_one_line_error, run, tree_hashes

FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--quiet"]


def copy_of(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def mix(capsys, finetuned, pretrained, out, *extra):
    return run(capsys, "mix", "--backdoored", finetuned, "--pretrained", pretrained, "--output", out, "--ratio", "0.5", *extra)


def rewrite_header(file: Path, edit) -> None:
    """Rewrite a safetensors header through ``edit(header_dict)``, keeping the data bytes."""
    raw = file.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    file.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + size :])


# ---------------------------------------------------------------- hostile and broken checkpoints


def _lie_about_offsets(header: dict) -> None:
    name = next(k for k in header if k != "__metadata__")
    start, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [start, end + 4096]


def _lie_about_shape(header: dict) -> None:
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [dim * 2 for dim in header[name]["shape"]]


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda f: rewrite_header(f, _lie_about_offsets), "model.safetensors: unreadable safetensors file"),
        (lambda f: rewrite_header(f, _lie_about_shape), "model.safetensors: unreadable safetensors file"),
        (lambda f: f.write_bytes(struct.pack("<Q", 10**12) + f.read_bytes()[8:]), "header too large"),
        (lambda f: f.write_bytes(f.read_bytes()[:8] + b"{" * 64 + f.read_bytes()[72:]), "invalid JSON in header"),
        (lambda f: f.write_bytes(b""), "model.safetensors: unreadable safetensors file"),
        (lambda f: f.write_bytes(f.read_bytes() + b"trailing"), "not fully covered"),
    ],
    ids=["header-lies-about-offsets", "header-lies-about-shape", "header-length-huge", "header-garbled", "empty-file",
         "trailing-bytes"],
)
def test_corrupt_safetensors_is_a_one_line_error(tmp_path, capsys, bert_pair, damage, fragment):
    broken = copy_of(bert_pair.finetuned, tmp_path / "broken")
    damage(broken / "model.safetensors")
    code, _, err = mix(capsys, broken, bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("side, value", [("finetuned", float("nan")), ("pretrained", float("inf"))])
def test_nan_or_inf_weights_are_refused(tmp_path, capsys, bert_pair, side, value):
    folders = {"finetuned": bert_pair.finetuned, "pretrained": bert_pair.pretrained}
    broken = copy_of(folders[side], tmp_path / side)
    state = load_file(broken / "model.safetensors")
    name = sorted(n for n in state if "encoder.layer.1" in n and n.endswith("weight"))[0]
    state[name].view(-1)[3] = value
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    folders[side] = broken
    code, _, err = mix(capsys, folders["finetuned"], folders["pretrained"], tmp_path / "out")
    assert_one_line_error(code, err, "contains NaN or Inf values", name.split(".")[-3])
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == [side]


def test_nan_weights_refused_before_training(tmp_path, capsys, bert_pair, tiny_text_csv):
    broken = copy_of(bert_pair.finetuned, tmp_path / "broken")
    state = load_file(broken / "model.safetensors")
    state["classifier.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run(capsys, "purify", "--backdoored", broken, "--pretrained", bert_pair.pretrained,
                       "--clean-data", tiny_text_csv, "--output", tmp_path / "out", "--ratio", "0.5", *FAST)
    assert_one_line_error(code, err, "classifier.weight contains NaN or Inf")


def test_shard_index_naming_a_missing_file(tmp_path, capsys, tiny_pair_factory):
    sharded = tiny_pair_factory("bert", sharded=True)  # the pre-trained side is sharded
    broken = copy_of(sharded.pretrained, tmp_path / "broken")
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (broken / victim).unlink()
    code, _, err = mix(capsys, sharded.finetuned, broken, tmp_path / "out")
    assert_one_line_error(code, err, "model.safetensors.index.json", victim, "do not exist")


def test_shard_index_without_weight_map(tmp_path, capsys, tiny_pair_factory):
    sharded = tiny_pair_factory("bert", sharded=True)
    broken = copy_of(sharded.pretrained, tmp_path / "broken")
    (broken / "model.safetensors.index.json").write_text('{"metadata": {}}')
    code, _, err = mix(capsys, sharded.finetuned, broken, tmp_path / "out")
    assert_one_line_error(code, err, "not a valid shard index")


@pytest.mark.parametrize("command", ["mix", "purify"])
def test_swapped_models_are_refused(tmp_path, capsys, bert_pair, tiny_text_csv, command):
    extra = ["--clean-data", tiny_text_csv, *FAST] if command == "purify" else []
    code, _, err = run(capsys, command, "--backdoored", bert_pair.pretrained, "--pretrained", bert_pair.finetuned,
                       "--output", tmp_path / "out", "--ratio", "0.5", *extra)
    assert_one_line_error(code, err, "classification head (classifier.", "swapped?")
    assert not (tmp_path / "out").exists()


def test_folder_that_is_not_a_model(tmp_path, capsys, bert_pair):
    junk = tmp_path / "photos"
    junk.mkdir()
    (junk / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    code, _, err = mix(capsys, junk, bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, "photos: no config.json")


def test_config_that_is_not_json(tmp_path, capsys, bert_pair):
    broken = copy_of(bert_pair.finetuned, tmp_path / "broken")
    (broken / "config.json").write_text("{model_type: bert")
    code, _, err = mix(capsys, broken, bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, "config.json: invalid JSON")


def test_a_file_passed_as_model_folder(tmp_path, capsys, bert_pair):
    code, _, err = mix(capsys, bert_pair.finetuned / "model.safetensors", bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, "not a folder")


def test_different_hidden_sizes(tmp_path, capsys, bert_pair):
    other = copy_of(bert_pair.pretrained, tmp_path / "wider")
    config = json.loads((other / "config.json").read_text())
    config["hidden_size"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = mix(capsys, bert_pair.finetuned, other, tmp_path / "out")
    assert_one_line_error(code, err, "architectures differ: hidden_size")


def test_config_that_lies_about_shapes_is_caught_by_tensor_shapes(tmp_path, capsys, bert_pair):
    """Configs agree, tensors do not (e.g. a hand-edited config): the shape check names the tensor."""
    other = copy_of(bert_pair.pretrained, tmp_path / "other")
    state = load_file(other / "model.safetensors")
    name = next(n for n in state if n.endswith("attention.output.dense.weight"))
    state[name] = torch.zeros(state[name].shape[0], state[name].shape[1] + 1)
    save_file(state, other / "model.safetensors", metadata={"format": "pt"})
    code, _, err = mix(capsys, bert_pair.finetuned, other, tmp_path / "out")
    assert_one_line_error(code, err, "attention.output.dense.weight has shape")


def test_different_tokenizers_are_refused(tmp_path, capsys, bert_pair, tiny_text_csv):
    other = copy_of(bert_pair.pretrained, tmp_path / "other")
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two tokens swapped: rows no longer line up
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    words = (other / "vocab.txt").read_text().splitlines()
    words[vocab[a]], words[vocab[b]] = a, b
    (other / "vocab.txt").write_text("\n".join(words) + "\n")
    code, _, err = run(capsys, "epur", "--backdoored", bert_pair.finetuned, "--pretrained", other,
                       "--frequency-text", tiny_text_csv, "--output", tmp_path / "out")
    assert_one_line_error(code, err, "different vocabularies")


def test_remote_code_is_never_run(tmp_path, capsys, bert_pair, tiny_text_csv):
    """A config pointing at custom modelling code: transformers refuses it (trust_remote_code=False)."""
    evil = copy_of(bert_pair.finetuned, tmp_path / "evil")
    marker = tmp_path / "pwned"
    (evil / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel",
                          "AutoConfig": "modeling_evil.EvilConfig"}
    (evil / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "evaluate", "--model", evil, "--data", tiny_text_csv)
    assert not marker.exists()
    # transformers falls back to the built-in BERT class when model_type is known; either way no code ran
    assert code in (0, 2), err
    if code == 2:
        assert_one_line_error(code, err)
    # Control: the same folder does run its code when remote code is trusted, so the check above can fail.
    from transformers import AutoModelForSequenceClassification

    try:
        AutoModelForSequenceClassification.from_pretrained(evil, trust_remote_code=True)
    except Exception:
        pass  # the module has no EvilModel class; importing it was enough
    assert marker.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), keep_prefix=st.booleans())
def test_fuzzed_safetensors_load_or_fail_in_one_line(tmp_path_factory, bert_pair, data, keep_prefix):
    folder = tmp_path_factory.mktemp("fuzz")
    original = (bert_pair.finetuned / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes((original[:64] if keep_prefix else b"") + data)
    try:
        reader = TensorReader(folder)
        for name in reader.names():
            reader.get(name)
    except FinemixError as error:
        assert "\n" not in str(error) and "model.safetensors" in str(error)


# ---------------------------------------------------------------- bad options and places


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--ratio", "-0.1"], "ratio must be in"),
        (["--ratio", "one"], "expected 'auto' or a number"),
        (["--mix", "median"], "invalid choice"),
        (["--head", "drop"], "invalid choice"),
        (["--config", "search: {candidates: [0.1, 2]}"], "ratio candidate must be in [0, 1]"),
        (["--config", "epur: {min_frequency: 0}"], "minimum frequency"),
        (["--config", "search: {candidats: [0.1]}"], "unknown RatioSearchConfig option(s): candidats"),
        (["--config", "teacher: cross-fit"], "unknown PurifyConfig option(s): teacher"),
        (["--lr", "-1"], "learning rate must be"),
        (["--batch-size", "0"], "batch-size"),
        (["--max-length", "1"], "max length must be >= 8"),
    ],
)
def test_more_bad_options(tmp_path, capsys, bert_pair, tiny_text_csv, argv, fragment):
    out = tmp_path / "never"
    if argv[0] == "--config":  # settings that live in a --config YAML file
        (tmp_path / "config.yaml").write_text(argv[1] + "\n")
        argv = ["--config", str(tmp_path / "config.yaml")]
    try:
        code = main(["purify", "--backdoored", str(bert_pair.finetuned), "--pretrained", str(bert_pair.pretrained),
                     "--clean-data", str(tiny_text_csv), "--output", str(out), *FAST, *argv])
    except SystemExit as exit_:  # argparse rejects before main's handler
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err, err
    assert not out.exists()


def test_config_mappings_reject_unknown_keys_and_values():
    from finemix.config import MixConfig, TrainConfig, from_mapping

    with pytest.raises(FinemixError, match="unknown MixConfig option"):
        from_mapping(MixConfig, {"ratio": 0.3, "rato": 0.5})
    with pytest.raises(FinemixError, match="mode"):
        MixConfig(mode="median")
    with pytest.raises(FinemixError, match="ratio must be in"):
        from_mapping(MixConfig, {"ratio": 2.0})
    assert from_mapping(TrainConfig, {"epochs": 2}).epochs == 2


def test_output_that_is_a_file_or_under_a_file(tmp_path, capsys, bert_pair):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = mix(capsys, bert_pair.finetuned, bert_pair.pretrained, blocker)
    assert_one_line_error(code, err, "exists and is not a folder")
    code, _, err = mix(capsys, bert_pair.finetuned, bert_pair.pretrained, blocker / "sub" / "out")
    assert_one_line_error(code, err, "is not a folder")
    assert blocker.read_text() == "x"


def test_pretrained_inside_output_is_refused(tmp_path, capsys, bert_pair):
    code, _, err = mix(capsys, bert_pair.finetuned, bert_pair.pretrained, bert_pair.pretrained.parent, "--force")
    assert_one_line_error(code, err, "overlaps the input folder")
    assert (bert_pair.pretrained / "model.safetensors").exists()


def test_unwritable_output_is_refused_before_work(tmp_path, capsys, bert_pair, monkeypatch):
    import os

    # Tests may run as root, for whom permission bits do not bind; so the access check is stubbed.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    code, _, err = mix(capsys, bert_pair.finetuned, bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, f"cannot write in {tmp_path}")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_refused_before_work(tmp_path, capsys, bert_pair, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code, _, err = mix(capsys, bert_pair.finetuned, bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, "not enough disk space", "1000 bytes free")
    assert list(tmp_path.iterdir()) == []


def test_disk_filling_up_during_the_write(tmp_path, capsys, bert_pair, monkeypatch):
    import errno

    from finemix.weights.writer import ShardedWriter

    real_add = ShardedWriter.add
    calls = []

    def add_until_full(self, name, tensor):
        calls.append(name)
        if len(calls) == 5:  # a few tensors are on disk, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / "model.safetensors"))
        real_add(self, name, tensor)

    monkeypatch.setattr(ShardedWriter, "add", add_until_full)
    code, _, err = mix(capsys, bert_pair.finetuned, bert_pair.pretrained, tmp_path / "out")
    assert_one_line_error(code, err, "No space left on device", ".safetensors")
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary folder


# ---------------------------------------------------------------- nothing lost


def test_inputs_are_never_modified(tmp_path, capsys, bert_pair, tiny_text_csv):
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("the movie was good .\nthe plot was dull .\n" * 10)
    before = tree_hashes(bert_pair.finetuned, bert_pair.pretrained, tiny_text_csv, unlabelled)
    pair = ["--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained]
    assert run(capsys, "purify", *pair, "--clean-data", tiny_text_csv, "--unlabelled-text", unlabelled,
               "--output", tmp_path / "p", "--config", candidates_config(tmp_path, 0, 0.5), *FAST)[0] == 0
    assert run(capsys, "mix", *pair, "--output", tmp_path / "m", "--ratio", "0.3", "--mix", "sel")[0] == 0
    assert run(capsys, "epur", *pair, "--frequency-text", tiny_text_csv, "--output", tmp_path / "e")[0] == 0
    assert run(capsys, "evaluate", "--model", bert_pair.finetuned, "--data", tiny_text_csv,
               "--trigger", "cf", "--target-label", "1")[0] == 0
    assert tree_hashes(bert_pair.finetuned, bert_pair.pretrained, tiny_text_csv, unlabelled) == before


def test_kill_between_the_two_renames_of_force_is_recovered(tmp_path):
    """State a kill can leave with --force: old output moved aside, new one complete but unpublished."""
    out = tmp_path / "out"
    old = tmp_path / ".out.finemix-old-123"
    old.mkdir()
    (old / "model.safetensors").write_text("old")
    unpublished = tmp_path / ".out.x1.finemix-tmp"
    unpublished.mkdir()
    (unpublished / "model.safetensors").write_text("new")
    actions = recover_interrupted_output(out)
    assert (out / "model.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert any("restored" in a for a in actions)


def test_leftover_old_output_is_deleted_when_output_exists(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").write_text("current")
    old = tmp_path / ".out.finemix-old-9"
    old.mkdir()
    recover_interrupted_output(out)
    assert not old.exists() and (out / "f").read_text() == "current"


# ---------------------------------------------------------------- determinism


def test_purify_is_bit_identical_for_the_same_seed(tmp_path, capsys, bert_pair, tiny_text_csv):
    unlabelled = tmp_path / "u.txt"
    unlabelled.write_text("\n".join(f"the film was {w} ." for w in ("good", "bad", "dull", "great", "fun", "poor") * 4))
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, _, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                           "--clean-data", tiny_text_csv, "--unlabelled-text", unlabelled, "--output", out,
                           "--config", candidates_config(tmp_path, 0.2, 0.6), "--seed", "3", *FAST)
        assert code == 0, err
        outputs.append(out)
    assert file_sha256(outputs[0] / "model.safetensors") == file_sha256(outputs[1] / "model.safetensors")
    third = tmp_path / "c"
    assert run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
               "--clean-data", tiny_text_csv, "--unlabelled-text", unlabelled, "--output", third,
               "--config", candidates_config(tmp_path, 0.2, 0.6), "--seed", "4", *FAST)[0] == 0
    assert file_sha256(third / "model.safetensors") != file_sha256(outputs[0] / "model.safetensors")


@pytest.mark.parametrize("command", ["mix-random", "mix-sel-global", "epur"])
def test_single_steps_are_bit_identical(tmp_path, capsys, bert_pair, tiny_text_csv, command):
    argv = {"mix-random": ["mix", "--ratio", "0.4", "--seed", "5"],
            "mix-sel-global": ["mix", "--ratio", "0.4", "--mix", "sel", "--sel-scope", "global"],
            "epur": ["epur", "--frequency-text", str(tiny_text_csv), "--epur-top-n", "7"]}[command]
    hashes = []
    for name in ("a", "b"):
        code, _, err = run(capsys, argv[0], "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                           "--output", tmp_path / name, *argv[1:])
        assert code == 0, err
        hashes.append(file_sha256(tmp_path / name / "model.safetensors"))
    assert hashes[0] == hashes[1]


# ---------------------------------------------------------------- awkward clean data


def purify_with(capsys, tmp_path, bert_pair, content: str, *extra):
    data = tmp_path / "clean.csv"
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                            "--clean-data", data, "--output", out, "--ratio", "0.5", *FAST, *extra)
    return code, err, out


def test_one_class_only_is_refused(tmp_path, capsys, bert_pair):
    code, err, out = purify_with(capsys, tmp_path, bert_pair, "text,label\n" + "the film was good .,1\n" * 3
                                 + "the plot was fun .,1\n")
    assert_one_line_error(code, err, "only one class (label 1)")
    assert not out.exists()


def test_fewer_rows_than_a_batch_still_trains(tmp_path, capsys, bert_pair):
    code, err, out = purify_with(capsys, tmp_path, bert_pair, "text,label\nthe film was good .,1\nthe plot was dull .,0\n"
                                 "the cast was great .,1\n", "--batch-size", "16")
    assert code == 0, err
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["clean_data"]["rows"] == 3


def test_duplicate_rows_are_dropped_and_counted(tmp_path, capsys, bert_pair):
    rows = "the film was good .,1\nthe plot was dull .,0\n" * 5 + "the film was good .,0\n"
    code, err, out = purify_with(capsys, tmp_path, bert_pair, "text,label\n" + rows)
    assert code == 0, err
    clean = json.loads((out / "finemix_report.json").read_text())["clean_data"]
    assert clean["rows"] == 3 and clean["duplicates_dropped"] == 8 and clean["texts_with_conflicting_labels"] == 1


def test_enormous_row_is_truncated_not_fatal(tmp_path, capsys, bert_pair):
    huge = "the film was good . " * 20_000  # 400 kB of text in one field
    code, err, out = purify_with(capsys, tmp_path, bert_pair, f"text,label\n\"{huge}\",1\nthe plot was dull .,0\n"
                                 "the cast was great .,1\nthe story was poor .,0\n")
    assert code == 0, err
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('text,label\n"unterminated quote,1\nthe plot was dull .,0\n', "line 3 has 1 fields"),
        ('text,label\n"closed" then text,1,2\n', "line 2 has 3 fields"),
    ],
    ids=["unterminated-quote", "delimiter-after-closing-quote"],
)
def test_csv_quoting_traps(tmp_path, capsys, bert_pair, content, fragment):
    code, err, out = purify_with(capsys, tmp_path, bert_pair, content)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_stray_quotes_follow_the_csv_module(tmp_path):
    """Documented handling: quotes inside an unquoted field are literal; text after a closing
    quote is appended (Python's csv, as Excel reads it)."""
    from finemix.data import load_examples

    path = tmp_path / "q.csv"
    path.write_text('text,label\nthe "film" was good,1\n"a, b" c,0\n', encoding="utf-8")
    assert [e.text for e in load_examples(path, None, 2)] == ['the "film" was good', "a, b c"]


def test_quoted_delimiters_and_newlines_are_data(tmp_path, capsys, bert_pair):
    content = 'text,label\n"the film, sadly, was dull .",0\n"the cast\nwas great .",1\n"he said ""good"" .",1\n' \
              'the plot was poor .,0\n'
    code, err, out = purify_with(capsys, tmp_path, bert_pair, content)
    assert code == 0, err
    assert json.loads((out / "finemix_report.json").read_text())["clean_data"]["rows"] == 4


def test_stale_temporary_marker_name_is_stable():
    # docs/reliability.md and users' clean-up scripts name this file
    assert TEMP_MARKER == ".finemix-incomplete"
