"""Hostile mixing inputs (issue 15, defects 1, 11 and the non-finite part of 3).

* Non-float tensors must not slip past mixing, E-PUR or head re-initialisation: transformers
  loads an int32 embedding into a float parameter as it is, so a checkpoint that stores its
  embeddings as int32 × 1e5 behaves like the float model; only equal id buffers pass.
* What a report claims (kept fraction, E-PUR rows reset) is checked against the written tensors.
* NaN / inf options are refused, in every config dataclass and by the parser itself.
* A diverged repair, or a mix whose cast overflows, is refused and leaves no output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finemix.cli import build_parser, main
from finemix.errors import FinemixError
from tiny_models import load_state, write_text_csv
from cli_helpers import assert_one_line_error, run

FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--quiet"]
EMBEDDINGS = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")


def rewrite(source: Path, target: Path, change) -> Path:
    """A copy of model folder ``source`` whose tensors are ``change(state)``, as one safetensors file."""
    from safetensors.torch import save_file

    state = change(dict(load_state(source)))
    shutil.copytree(source, target)
    for item in target.iterdir():
        if item.name.endswith((".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")):
            item.unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def as_scaled_int(state: dict, suffixes=EMBEDDINGS) -> dict:
    """The issue's checkpoint: embeddings stored as int32 × 1e5 (a LayerNorm follows, so logits barely move)."""
    return {k: (v * 1e5).round().to(torch.int32) if k.endswith(suffixes) else v for k, v in state.items()}


def with_ids(state: dict, prefix: str, changed: bool = False) -> dict:
    """Add BERT's id buffers (``position_ids``, ``token_type_ids``) as older transformers saved them."""
    positions = torch.arange(64, dtype=torch.int64).unsqueeze(0)
    state = dict(state)
    state[prefix + "embeddings.position_ids"] = positions.flip(1) if changed else positions
    state[prefix + "embeddings.token_type_ids"] = torch.zeros(1, 64, dtype=torch.int64)
    return state


@pytest.fixture(scope="module")
def int_pair(bert_pair, tmp_path_factory):
    """θ_B with its three embedding matrices as int32 × 1e5; θ_Pre the ordinary float one."""
    root = tmp_path_factory.mktemp("int-embeddings")
    return rewrite(bert_pair.finetuned, root / "finetuned", as_scaled_int), bert_pair.pretrained


def test_scaled_int_embeddings_load_as_the_float_model(int_pair, bert_pair):
    """The premise of the bypass: transformers runs such a checkpoint as if it were the float one."""
    from transformers import AutoModelForSequenceClassification

    ids = torch.tensor([[2, 10, 20, 30, 40, 3]])
    logits = [AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()(ids).logits
              for folder in (int_pair[0], bert_pair.finetuned)]
    assert torch.allclose(logits[0], logits[1], atol=1e-4)


@pytest.mark.parametrize("command", [
    ["mix", "--ratio", "0"],
    ["mix", "--ratio", "0.3", "--mix", "sel", "--sel-scope", "global"],
    ["epur"],
    ["purify", "--ratio", "0", *FAST],
])
def test_integer_embeddings_are_refused_not_passed_through(tmp_path, capsys, int_pair, command):
    finetuned, pretrained = int_pair
    clean = write_text_csv(tmp_path / "clean.csv")
    extra = ["--clean-data", clean] if command[0] in ("epur", "purify") else []
    out = tmp_path / "out"
    code, _, err = run(capsys, *command, *extra, "--backdoored", finetuned, "--pretrained", pretrained, "--output", out)
    assert_one_line_error(code, err, "embeddings", "I32")
    assert not out.exists()


def _pre(name: str) -> str:
    return name.removeprefix("bert.")


@pytest.mark.parametrize("case, fragment", [
    ("word embedding int32 in both, changed", "word embedding must be floating point"),
    ("word embedding int32 in both, equal", "word embedding must be floating point"),
    ("pre-trained position embedding int32", "floating point in both"),
    ("position_ids changed", "differs from the pre-trained"),
    ("bool attention weight in both", "differs from the pre-trained"),
])
def test_every_non_float_weight_is_refused(tmp_path, capsys, bert_pair, case, fragment):
    word = "embeddings.word_embeddings.weight"

    def finetuned(state):
        if case.startswith("word embedding"):
            base = load_state(bert_pair.pretrained)[word] if case.endswith("equal") else state["bert." + word]
            state["bert." + word] = (base * 1e5).round().to(torch.int32)
        if case == "position_ids changed":
            state = with_ids(state, "bert.", changed=True)
        if case == "bool attention weight in both":
            state["bert.encoder.layer.0.attention.self.query.weight"] = state[
                "bert.encoder.layer.0.attention.self.query.weight"] > 0
        return state

    def pretrained(state):
        if case.startswith("word embedding"):
            state[word] = (state[word] * 1e5).round().to(torch.int32)
        if case == "pre-trained position embedding int32":
            state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"].to(torch.int32)
        if case == "position_ids changed":
            state = with_ids(state, "")
        if case == "bool attention weight in both":
            state["encoder.layer.0.attention.self.query.weight"] = state["encoder.layer.0.attention.self.query.weight"] < 0
        return state

    ft = rewrite(bert_pair.finetuned, tmp_path / "ft", finetuned)
    pre = rewrite(bert_pair.pretrained, tmp_path / "pre", pretrained)
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--ratio", "0.5", "--backdoored", ft, "--pretrained", pre, "--output", out)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_equal_id_buffers_pass_through(tmp_path, capsys, bert_pair):
    ft = rewrite(bert_pair.finetuned, tmp_path / "ft", lambda s: with_ids(s, "bert."))
    pre = rewrite(bert_pair.pretrained, tmp_path / "pre", lambda s: with_ids(s, ""))
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--ratio", "0", "--backdoored", ft, "--pretrained", pre, "--output", out)
    assert code == 0, err
    written, source = load_state(out), load_state(ft)
    for name in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids"):
        assert written[name].dtype == torch.int64 and torch.equal(written[name], source[name])


def test_head_reinit_refuses_an_integer_head(tmp_path, capsys, bert_pair):
    ft = rewrite(bert_pair.finetuned, tmp_path / "ft",
                 lambda s: {**s, "classifier.weight": (s["classifier.weight"] * 1e5).round().to(torch.int32)})
    out = tmp_path / "out"
    argv = ["mix", "--ratio", "0.5", "--backdoored", ft, "--pretrained", bert_pair.pretrained, "--output", out]
    code, _, err = run(capsys, *argv, "--head", "reinit")
    assert_one_line_error(code, err, "classifier.weight", "reinit")
    assert not out.exists()
    code, _, err = run(capsys, *argv, "--head", "keep")  # kept as θ_B: what the report says
    assert code == 0, err


# --------------------------------------------------------------------------- the report's claims


def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float64)


def check_mix_claims(report: dict, written: dict, finetuned: dict, pretrained: dict) -> None:
    """Every paired entry is θ_B's or θ_Pre's, and the claimed kept fraction matches the count."""
    only_ft = both = total = 0
    for name, value in written.items():
        if _pre(name) not in pretrained:
            continue
        out, ft = _as_float(value), _as_float(finetuned[name])
        pre = _as_float(pretrained[_pre(name)].to(finetuned[name].dtype))
        is_ft, is_pre = out == ft, out == pre
        assert bool((is_ft | is_pre).all()), f"{name}: entries that are neither θ_B nor θ_Pre"
        only_ft += int((is_ft & ~is_pre).sum())
        both += int((is_ft & is_pre).sum())
        total += out.numel()
    claimed = report["mixing"]["kept_fraction"] * total
    slack = total * 1e-6 + 1
    assert only_ft - slack <= claimed <= only_ft + both + slack, (report["mixing"]["kept_fraction"], only_ft, both, total)


def check_epur_claims(report: dict, written: dict, finetuned: dict, pretrained: dict) -> None:
    """The rows the report says were reset equal θ_Pre's; every other value is θ_B's."""
    plan = report["epur"]
    rows = torch.as_tensor(plan["rows"], dtype=torch.long)
    assert len(plan["rows"]) > 0
    for name, value in written.items():
        expected = _as_float(finetuned[name]).clone()
        if name == plan["tensor"]:
            expected[rows] = _as_float(pretrained[_pre(name)].to(finetuned[name].dtype))[rows]
        assert torch.equal(_as_float(value), expected), f"{name}: not what the E-PUR report says"


@pytest.mark.parametrize("variant", ["float", "int32 embeddings"])
@pytest.mark.parametrize("command", [
    ["mix", "--ratio", "0"],
    ["mix", "--ratio", "0.3"],
    ["mix", "--ratio", "0.5", "--mix", "sel"],
    ["mix", "--ratio", "0.2", "--mix", "sel", "--sel-scope", "global"],
    ["epur", "--epur-top-n", "7"],
])
def test_report_claims_match_the_written_tensors(tmp_path, capsys, bert_pair, int_pair, variant, command):
    finetuned = bert_pair.finetuned if variant == "float" else int_pair[0]
    extra = ["--clean-data", write_text_csv(tmp_path / "clean.csv")] if command[0] == "epur" else []
    out = tmp_path / "out"
    code, _, err = run(capsys, *command, *extra, "--backdoored", finetuned, "--pretrained", bert_pair.pretrained,
                       "--output", out)
    if variant != "float" and code == 2:  # refusing is the other honest answer
        assert_one_line_error(code, err, "embeddings")
        assert not out.exists()
        return
    assert code == 0, err
    report = json.loads((out / "finemix_report.json").read_text())
    written, ft, pre = load_state(out), load_state(finetuned), load_state(bert_pair.pretrained)
    assert sorted(written) == sorted(ft)
    (check_epur_claims if command[0] == "epur" else check_mix_claims)(report, written, ft, pre)


# --------------------------------------------------------------------------- non-finite options


def _float_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.type in ("float", float)]


def _config_classes():
    from finemix.attacks import AttackConfig
    from finemix.config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig

    return [MixConfig, EpurConfig, TrainConfig, RatioSearchConfig, PurifyConfig, AttackConfig]


def test_every_config_has_its_float_options_listed():
    fields = {cls.__name__: _float_fields(cls) for cls in _config_classes()}
    assert fields["EpurConfig"] == ["min_frequency"] and "lr" in fields["TrainConfig"]
    assert "distill_epochs" in fields["PurifyConfig"] and "ep_lr" in fields["AttackConfig"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "0.5", None, True])
def test_no_config_accepts_a_non_finite_or_non_number_float(bad):
    for cls in _config_classes():
        for name in _float_fields(cls):
            with pytest.raises(FinemixError, match=r".") as caught:
                cls(**{name: bad})
            assert "\n" not in str(caught.value)
    from finemix.attacks import AttackConfig
    from finemix.config import RatioSearchConfig

    for values in [{"candidates": (0.1, bad)}, {"tolerance": bad}]:
        with pytest.raises(FinemixError):
            RatioSearchConfig(**values)
    with pytest.raises(FinemixError):
        AttackConfig(adaptive_ratios=(0.0, bad))


@settings(max_examples=150, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)))
def test_float_options_are_finite_and_in_range_or_refused(value):
    """Any number: the config is built (and the value then finite) or refused in one line; never another error."""
    for cls in _config_classes():
        for name in _float_fields(cls):
            try:
                config = cls(**{name: value})
            except FinemixError as error:
                assert "\n" not in str(error)
                continue
            assert math.isfinite(getattr(config, name))


def _float_actions():
    """(command, option, type) for every option whose type turns '0.5' into a float."""
    parser = build_parser()
    found = []
    for action in parser._subparsers._group_actions[0].choices.items():
        command, sub = action
        for option in sub._actions:
            if option.type is None or not option.option_strings:
                continue
            try:
                value = option.type("0.5")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                continue
            if isinstance(value, float):
                found.append((command, option.option_strings[-1], option.type))
    return found


def test_the_parser_refuses_nan_and_inf_for_every_float_option():
    actions = _float_actions()
    names = {(command, option) for command, option, _ in actions}
    assert {("epur", "--epur-min-frequency"), ("purify", "--lr"), ("attack", "--poison-rate"),
            ("defend", "--prune-ratio"), ("purify", "--ratio")} <= names
    for command, option, kind in actions:
        for text in ("nan", "inf", "-inf", "NaN", "1e999"):
            with pytest.raises((argparse.ArgumentTypeError, ValueError)):
                kind(text)


@pytest.mark.parametrize("argv", [
    ["epur", "--epur-min-frequency", "nan"],
    ["purify", "--clean-data", "c", "--lr", "inf"],
    ["purify", "--clean-data", "c", "--epochs", "nan"],
    ["defend", "--defense", "fineprune", "--clean-data", "c", "--prune-ratio", "nan"],
    ["attack", "--data", "d", "--poison-rate", "nan"],
    ["attack", "--data", "d", "--ep-lr=-inf"],
])
def test_nan_options_exit_2_at_parse_time(tmp_path, capsys, argv):
    pair = ["--pretrained", "b", "--output", str(tmp_path / "o")] + (["--backdoored", "a"] if argv[0] != "attack" else [])
    with pytest.raises(SystemExit) as exited:
        main([*argv, *pair])
    assert exited.value.code == 2
    assert "finite" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_epur_nan_min_frequency_in_a_config_file_is_refused(tmp_path, capsys, bert_pair):
    config = tmp_path / "c.yaml"
    clean = write_text_csv(tmp_path / "clean.csv")
    out = tmp_path / "out"
    for text in ("epur: {min_frequency: .nan}", "train: {weight_decay: .inf}", "search: {candidates: [0.1, .nan]}",
                 "distill_epochs: .inf", "search: {tolerance: .nan}"):
        config.write_text(text + "\n")
        code, _, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                           "--clean-data", clean, "--output", out, "--config", config, *FAST)
        assert_one_line_error(code, err, "finite")
        assert not out.exists()


# --------------------------------------------------------------------------- non-finite outputs


def test_a_diverged_purify_is_refused_and_writes_nothing(tmp_path, capsys, bert_pair):
    """lr 1e4 drives every weight of the tiny model to NaN/Inf within five epochs (the old code wrote it, exit 0)."""
    clean = write_text_csv(tmp_path / "clean.csv")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                            "--clean-data", clean, "--output", out, "--lr", "1e4", "--ratio", "0.3", "--no-epur",
                            "--batch-size", "8", "--max-length", "32", "--quiet")
    assert_one_line_error(code, err, "NaN or Inf", "diverged")
    assert "written" not in stdout
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "clean.csv"]  # no temporary folder left either


def test_a_diverged_purify_leaves_an_existing_output_untouched(tmp_path, capsys, bert_pair, monkeypatch):
    """Training made to produce NaN (whatever the tiny model does at a large lr): --force keeps the old output."""
    import importlib

    try:
        training = importlib.import_module("finemix.train")
    except ImportError:  # the code before the reorganisation
        training = importlib.import_module("finemix.finetune")
    real = training.finetune

    def poisoned(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)
        return result

    monkeypatch.setattr(training, "finetune", poisoned)
    clean = write_text_csv(tmp_path / "clean.csv")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    code, _, err = run(capsys, "purify", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--clean-data", clean, "--output", out, "--ratio", "0.3", "--no-epur", "--force", *FAST)
    assert_one_line_error(code, err, "NaN or Inf")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_mix_whose_cast_overflows_is_refused(tmp_path, capsys, bert_pair):
    """θ_B in float16, θ_Pre with a finite value beyond float16's range: θ_Pre's entry cast to θ_B's dtype is inf."""
    name = "encoder.layer.0.output.dense.weight"
    ft = rewrite(bert_pair.finetuned, tmp_path / "ft", lambda s: {k: v.half() for k, v in s.items()})

    def huge(state):
        state[name] = state[name].clone()
        state[name][0, 0] = 1e6
        return state

    pre = rewrite(bert_pair.pretrained, tmp_path / "pre", huge)
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--ratio", "0", "--backdoored", ft, "--pretrained", pre, "--output", out)
    assert_one_line_error(code, err, "bert." + name, "NaN or Inf")
    assert not out.exists()
