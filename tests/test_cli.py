"""The CLI end to end on tiny models: purify, mix, epur, evaluate, and bad input."""

import json

import pytest
import torch

from finemix.weights.hashing import file_sha256
from finemix.cli import main
from tiny_models import candidates_config, load_state
from cli_helpers import run

FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--quiet"]


@pytest.fixture
def clean_csv_80(tmp_path):
    """80 rows: enough for a 20-row held-out slice, so --ratio auto really searches."""
    from tiny_models import text_rows, write_text_csv

    rows = text_rows()
    rows = rows + [(text.replace("the ", "this ", 1).replace("i think ", "", 1), label) for text, label in rows]
    return write_text_csv(tmp_path / "clean80.csv", rows)


@pytest.mark.parametrize("tiny_pair", ["bert", "roberta"], indirect=True)
def test_purify_end_to_end(tmp_path, capsys, tiny_pair, clean_csv_80):
    out = tmp_path / "purified"
    hashes = {p: file_sha256(p) for p in tiny_pair.finetuned.iterdir() if p.is_file()}
    code, stdout, stderr = run(capsys, "purify", "--backdoored", tiny_pair.finetuned, "--pretrained", tiny_pair.pretrained,
                               "--clean-data", clean_csv_80, "--output", out, "--config", candidates_config(tmp_path, 0.2, 0.5), *FAST)
    assert code == 0, stderr
    assert "purified model written" in stdout and "ρ =" in stdout
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["command"] == "purify"
    assert report["ratio_search"]["mode"] == "auto"
    assert report["ratio_search"]["chosen_ratio"] in (0.2, 0.5)
    assert report["ratio_search"]["candidates"][0]["ratio"] == 0.2
    assert len(report["epur"]["tokens"]) == 200  # default N; the tiny vocabularies have more rows
    assert {"load", "epur", "ratio+finetune", "write"} <= set(report["timings_s"])
    assert report["versions"]["torch"].startswith("2.")
    assert report["inputs"]["backdoored"]["sha256"]
    assert report["clean_data"]["rows"] == 80
    assert report["ratio_search"]["heldout_rows"] == 20
    # inputs untouched, output loads as is
    assert hashes == {p: file_sha256(p) for p in tiny_pair.finetuned.iterdir() if p.is_file()}
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    AutoModelForSequenceClassification.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)


def test_auto_ratio_with_too_few_rows_falls_back_and_says_so(tmp_path, capsys, bert_pair, tiny_text_csv):
    out = tmp_path / "p"
    code, _, stderr = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                          "--clean-data", tiny_text_csv, "--output", out, *FAST)
    assert code == 0, stderr
    search = json.loads((out / "finemix_report.json").read_text())["ratio_search"]
    assert search["mode"] == "fixed" and "too few clean rows" in search["note"] and search["heldout_rows"] == 0


def test_purify_fixed_ratio_no_epur(tmp_path, capsys, bert_pair, tiny_text_csv):
    out = tmp_path / "p"
    code, stdout, stderr = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                               "--clean-data", tiny_text_csv, "--output", out, "--ratio", "0.3", "--no-epur", "--mix", "sel", *FAST)
    assert code == 0, stderr
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["epur"] is None and "E-PUR skipped" in stdout
    assert report["ratio_search"]["mode"] == "fixed" and report["ratio_search"]["chosen_ratio"] == 0.3
    assert report["settings"]["mix"]["mode"] == "sel"


def test_mix_command_limits(tmp_path, capsys, bert_pair):
    out = tmp_path / "m"
    code, stdout, _ = run(capsys, "mix", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                          "--output", out, "--ratio", "1")
    assert code == 0 and "kept 1.0000" in stdout
    ft, mixed = load_state(bert_pair.finetuned), load_state(out)
    assert all(torch.equal(ft[n], mixed[n]) for n in ft)


def test_epur_command_resets_only_top_rows(tmp_path, capsys, bert_pair, tiny_text_csv):
    out = tmp_path / "e"
    code, stdout, stderr = run(capsys, "epur", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                               "--clean-data", tiny_text_csv, "--output", out, "--epur-top-n", "7")
    assert code == 0, stderr
    report = json.loads((out / "finemix_report.json").read_text())
    rows = [t["id"] for t in report["epur"]["tokens"]]
    assert len(rows) == 7
    ft, pre, new = load_state(bert_pair.finetuned), load_state(bert_pair.pretrained), load_state(out)
    name = "bert.embeddings.word_embeddings.weight"
    for k in range(ft[name].shape[0]):
        expected = pre["embeddings.word_embeddings.weight"][k] if k in rows else ft[name][k]
        assert torch.equal(new[name][k], expected)
    assert all(torch.equal(new[n], ft[n]) for n in ft if n != name)


def test_evaluate_command(tmp_path, capsys, bert_pair, tiny_text_csv):
    code, stdout, stderr = run(capsys, "evaluate", "--model", bert_pair.finetuned, "--data", tiny_text_csv,
                               "--trigger", "cf", "--target-label", "positive", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert 0 <= result["accuracy"] <= 1 and result["n"] == 40 and result["n_attack"] == 20


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ratio", "1.5"], "ratio must be in"),
        (["--epur-top-n", "-1"], "epur-top-n"),
        (["--epochs", "0"], "epochs must be"),
    ],
)
def test_bad_options_exit_nonzero_with_one_line(tmp_path, capsys, bert_pair, tiny_text_csv, argv, message):
    out = tmp_path / "never"
    try:
        code = main(["purify", "--backdoored", str(bert_pair.finetuned), "--pretrained", str(bert_pair.pretrained),
                     "--clean-data", str(tiny_text_csv), "--output", str(out), *FAST, *argv])
    except SystemExit as exit_:  # argparse type errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "content, message",
    [("", "no rows"), ("text\nhello\n", "label"), ("text,label\nhello,7\n", "label")],
)
def test_bad_clean_data_is_one_line_error(tmp_path, capsys, bert_pair, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    out = tmp_path / "never"
    code, _, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--clean-data", data, "--output", out, *FAST)
    assert code == 2
    assert err.startswith("finemix: error:") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_existing_output_refused_without_force(tmp_path, capsys, bert_pair, tiny_text_csv):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep").write_text("x")
    code, _, err = run(capsys, "mix", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--output", out, "--ratio", "0.5")
    assert code == 2 and "--force" in err
    assert (out / "keep").read_text() == "x"
    code, _, _ = run(capsys, "mix", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                     "--output", out, "--ratio", "0.5", "--force")
    assert code == 0 and not (out / "keep").exists()


def test_swapped_or_mismatched_models_are_refused(tmp_path, capsys, bert_pair, roberta_pair):
    code, _, err = run(capsys, "mix", "--backdoored", bert_pair.finetuned, "--pretrained", roberta_pair.pretrained,
                       "--output", tmp_path / "x", "--ratio", "0.5")
    assert code == 2 and "architectures differ" in err
    code, _, err = run(capsys, "mix", "--backdoored", tmp_path / "missing", "--pretrained", bert_pair.pretrained,
                       "--output", tmp_path / "y", "--ratio", "0.5")
    assert code == 2 and "missing" in err


def test_help_explains_every_option(capsys):
    for command in ("purify", "mix", "epur", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--output" in text or command == "evaluate"
        # every option has a help string
        assert "None" not in text


def test_unloadable_model_is_a_one_line_error(tmp_path, capsys, bert_pair, tiny_text_csv):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bert_pair.finetuned, broken)
    config = json.loads((broken / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (broken / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "evaluate", "--model", broken, "--data", tiny_text_csv)
    assert code == 2 and err.startswith("finemix: error:") and err.count("\n") == 1


def test_every_option_of_every_command_has_help():
    from finemix.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"purify", "mix", "epur", "evaluate", "attack", "defend", "bench", "demo"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if action.option_strings and "-h" not in action.option_strings:
                assert action.help, (name, action.option_strings)


def test_purify_config_file_sets_what_the_command_line_leaves_out(tmp_path, capsys, bert_pair, tiny_text_csv):
    config = tmp_path / "purify.yaml"
    config.write_text("search:\n  candidates: [0.4]\nepur:\n  top_n: 7\ntrain:\n  epochs: 2\ncalibrate_student: none\n")
    out = tmp_path / "c"
    code, _, stderr = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                          "--clean-data", tiny_text_csv, "--output", out, "--config", config, "--epochs", "1",
                          "--batch-size", "8", "--quiet")
    assert code == 0, stderr
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["settings"]["search"]["candidates"] == [0.4] and report["settings"]["epur"]["top_n"] == 7
    assert report["settings"]["train"]["epochs"] == 1.0  # the command line wins over the file
    assert report["settings"]["calibrate_student"] == "none"
    assert report["clean_data"]["config_file"]["sha256"] == file_sha256(config)


def test_purify_lists_only_what_a_defender_needs(capsys):
    from finemix.cli import build_parser

    purify = next(a for a in build_parser()._actions if a.dest == "command").choices["purify"]
    options = [a for a in purify._actions if a.option_strings and "-h" not in a.option_strings]
    assert len(options) <= 20, [a.option_strings for a in options]  # --task (classifier or chat model) included
    names = {s for a in options for s in a.option_strings}
    for research in ("--teacher", "--teacher-input", "--distill-labels", "--freeze-epur-rows", "--teacher-calibration"):
        assert research not in names


def test_every_output_gets_a_model_card_the_hub_tools_read(tmp_path, capsys, bert_pair, tiny_text_csv):
    from huggingface_hub import ModelCard

    out = tmp_path / "carded"
    code, _, stderr = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                          "--clean-data", tiny_text_csv, "--output", out, "--epochs", "1", "--batch-size", "8", "--quiet")
    assert code == 0, stderr
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == str(bert_pair.pretrained)
    assert {"finemix", "backdoor-defense"} <= set(card.data.tags)
    assert card.data.to_dict()["finemix"]["versions"]["torch"]
    assert "E-PUR reset" in card.text and "finemix_report.json" in card.text


def test_the_cli_asks_torch_for_huge_pages_unless_the_user_chose(monkeypatch):
    """Set before torch is imported (the allocator reads it once); a user's own value is kept."""
    import os

    from finemix.cli import main

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
