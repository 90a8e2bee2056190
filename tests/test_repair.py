"""The repair (finemix/repair): teacher calibration, distillation, the ρ rule, pairs end to end, the defense boundary."""

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch

import finemix.repair.distill as distill
import finemix.repair.epur_step as epur_step
import finemix.repair.inputs as inputs
import finemix.repair.mix_step as mix_step
import finemix.repair.ratio_search as ratio_search
import finemix.repair.steps as steps
from finemix.config import MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig
from finemix.core.calibration import fit_class_bias, fit_prior_bias
from finemix.data import Example
from finemix.errors import FinemixError
from finemix.repair.steps import purify
from tiny_models import text_rows

FAST = TrainConfig(epochs=1, batch_size=8, max_length=32, progress=False)


def test_fit_class_bias_undoes_a_prior_shift():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=generator)
    clean_logits = torch.stack([-(labels * 2 - 1).float(), (labels * 2 - 1).float()], dim=1) * 2
    clean_logits += torch.randn(400, 2, generator=generator)
    shifted = clean_logits + torch.tensor([0.0, 1.5])  # a teacher pushed towards class 1
    bias = fit_class_bias(shifted, labels.tolist())
    assert bias[0] == 0 and -2.0 < float(bias[1]) < -1.0
    assert (shifted + bias).argmax(1).eq(labels).float().mean() > shifted.argmax(1).eq(labels).float().mean()


def test_fit_class_bias_is_zero_for_a_calibrated_teacher():
    labels = [0, 1] * 50
    logits = torch.tensor([[2.0, -2.0], [-2.0, 2.0]] * 50)
    assert abs(float(fit_class_bias(logits, labels)[1])) < 0.05


def test_balanced_class_bias_equalises_recall_where_the_plain_fit_follows_the_majority():
    generator = torch.Generator().manual_seed(1)
    labels = (torch.rand(2000, generator=generator) < 0.8).long()  # 80 % class 1
    margin = (labels * 2 - 1).float() + 1.5 * torch.randn(2000, generator=generator)  # class 1 minus class 0
    logits = torch.stack([torch.zeros(2000), margin], dim=1)

    def recalls(bias):
        predicted = (logits + bias).argmax(1)
        return [float(predicted[labels == c].eq(c).float().mean()) for c in (0, 1)]

    plain, balanced = recalls(fit_class_bias(logits, labels.tolist())), recalls(fit_class_bias(logits, labels.tolist(), balanced=True))
    assert plain[1] - plain[0] > 0.3  # the plain fit trades class 0's recall for accuracy on the majority
    assert abs(balanced[1] - balanced[0]) < 0.1


def rows(n_repeat=2):
    data = text_rows() * n_repeat
    return [Example(text, label) for text, label in data]


def test_purify_with_unlabelled_text_distils_and_reports(tmp_path, bert_pair):
    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config, unlabelled)
    teacher = report["unlabelled_text"]["teacher"]
    assert teacher["rows"] == len(set(unlabelled))
    assert len(teacher["class_bias"]) == 2 and teacher["class_bias"][0] == 0.0
    assert any("distillation" in use for use in report["unlabelled_text"]["used_for"])
    assert set(report["timings_s"]) == {"load", "epur", "teacher", "ratio+finetune", "calibrate", "write"}


def test_no_distill_uses_unlabelled_only_for_counts(tmp_path, bert_pair):
    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.5), train=FAST, distill=False)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config, unlabelled)
    assert report["unlabelled_text"]["used_for"] == ["E-PUR token frequencies"]
    assert report["unlabelled_text"]["teacher"] is None


def test_sentence_pairs_end_to_end(tmp_path, capsys, bert_pair):
    from finemix.cli import main

    data = tmp_path / "pairs.jsonl"
    with data.open("w") as handle:
        for i, (text, label) in enumerate(text_rows() * 2):
            handle.write(json.dumps({"text": f"question {i % 7}", "text_b": text, "label": label}) + "\n")
    out = tmp_path / "purified"
    code = main(["purify", "--backdoored", str(bert_pair.finetuned), "--pretrained", str(bert_pair.pretrained),
                 "--clean-data", str(data), "--output", str(out), "--epochs", "1", "--batch-size", "8", "--quiet",
                 "--unlabelled-text", str(data)])
    assert code == 0, capsys.readouterr().err
    code = main(["evaluate", "--model", str(out), "--data", str(data), "--trigger", "cf", "--target-label", "1", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["n"] == 80 and result["n_attack"] == 40


FORBIDDEN = {"trigger", "target_label", "target", "poison", "poisoned", "attack_card", "card"}


@pytest.mark.parametrize("function", [steps.purify, steps.mix_checkpoint, steps.epur_checkpoint,
                                      epur_step.plan_epur, distill.teacher_targets, ratio_search.choose_ratio])
def test_defense_functions_take_nothing_a_defender_lacks(function):
    assert not FORBIDDEN & set(inspect.signature(function).parameters)


@pytest.mark.parametrize("module", [steps, ratio_search, distill, epur_step, inputs, mix_step])
def test_defense_modules_never_import_attacks_or_trigger_evaluation(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    assert not any("attacks" in name for name in imported)
    assert not any(name.endswith(("evaluate", "with_trigger", "insert_trigger")) for name in imported)


def test_acceptance_margin_is_tolerance_or_standard_error():
    from finemix.core.ratio_rule import acceptance_margin

    assert acceptance_margin(0.875, 32, 0.03) == pytest.approx((0.875 * 0.125 / 32) ** 0.5, abs=1e-6)  # ≈ 0.058
    assert acceptance_margin(0.875, 10_000, 0.03) == 0.03
    assert acceptance_margin(1.0, 32, 0.03) == 0.03


def test_api_refuses_labels_the_model_does_not_have(tmp_path, bert_pair):
    from finemix.errors import FinemixError

    with pytest.raises(FinemixError, match="outside the model's labels"):
        purify(bert_pair.finetuned, bert_pair.pretrained, [Example("good movie", 5)], tmp_path / "out", PurifyConfig(train=FAST))
    assert not (tmp_path / "out").exists()


def test_fit_prior_bias_matches_the_target_share():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2000, 2, generator=generator) + torch.tensor([0.0, 1.0])  # over-predicts class 1
    bias = fit_prior_bias(logits, torch.tensor([0.5, 0.5]))
    share = (logits + bias).softmax(-1).mean(0)
    assert abs(float(share[1]) - 0.5) < 0.01 and float(bias[1]) < 0


@pytest.mark.parametrize("tiny_pair", ["bert", "roberta"], indirect=True)
def test_output_calibration_shifts_the_head_bias_only(tmp_path, tiny_pair):
    from tiny_models import load_state

    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=1.0), epur=None, train=FAST, distill_epochs=1)
    report = purify(tiny_pair.finetuned, tiny_pair.pretrained, rows(), tmp_path / "on", config, unlabelled)
    record = report["unlabelled_text"]["repaired_model_calibration"]
    assert record["tensor"] in ("classifier.bias", "classifier.out_proj.bias")
    share = record["predicted_class_share_calibrated"]
    assert abs(share[1] - 0.5) < 0.01  # the labelled rows are half positive
    off = purify(tiny_pair.finetuned, tiny_pair.pretrained, rows(), tmp_path / "off", 
                 PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=1.0), epur=None, train=FAST, distill_epochs=1,
                              calibrate_student="none"), unlabelled)
    assert off["unlabelled_text"]["repaired_model_calibration"] is None
    on_state, off_state = load_state(tmp_path / "on"), load_state(tmp_path / "off")
    differing = [n for n in on_state if not torch.equal(on_state[n], off_state[n])]
    assert differing == [record["tensor"]]


def test_a_balanced_teacher_is_fitted_on_the_labelled_rows_and_the_student_keeps_its_balance(tmp_path, tiny_pair):
    from finemix.repair.distill import teacher_bias

    clean_logits = torch.tensor([[0.0, 1.0]] * 6 + [[0.0, -1.0]] * 2 + [[0.0, 0.5]] * 2)  # two class 0 rows read as 1
    labels = [1] * 6 + [0] * 4
    balanced = teacher_bias(torch.zeros(3, 2), clean_logits, labels, "balanced")
    assert torch.allclose(balanced, fit_class_bias(clean_logits, labels, balanced=True))
    assert float(balanced[1]) < float(fit_class_bias(clean_logits, labels)[1]) < 0
    assert PurifyConfig(calibrate_teacher="balanced").student_calibration(2) == "none"
    assert PurifyConfig(calibrate_teacher="prior").student_calibration(2) == "prior"
    assert PurifyConfig(calibrate_teacher="balanced", calibrate_student="prior").student_calibration(2) == "prior"
    auto = PurifyConfig(calibrate_teacher="auto")
    assert [auto.teacher_calibration(n) for n in (2, 3, 6)] == ["balanced", "prior", "prior"]
    assert [auto.student_calibration(n) for n in (2, 6)] == ["none", "prior"]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=1.0), epur=None, train=FAST, distill_epochs=1,
                          calibrate_teacher="balanced")
    report = purify(tiny_pair.finetuned, tiny_pair.pretrained, rows(), tmp_path / "out", config,
                    [text for text, _ in text_rows()])
    teacher = report["unlabelled_text"]["teacher"]
    assert teacher["calibration"] == "balanced" and report["unlabelled_text"]["repaired_model_calibration"] is None


@pytest.mark.parametrize("values, message", [({"calibrate_teacher": "labelled"}, "auto, prior, balanced or none"),
                                             ({"calibrate_student": "balanced"}, "auto, prior or none")])
def test_unknown_calibrations_are_refused(values, message):
    with pytest.raises(FinemixError, match=message):
        PurifyConfig(**values)


@pytest.mark.parametrize("start, accuracies, epochs, line, expected", [
    (0.50, [0.55], 5, 0.80, True),  # 0.55 + 4 more epochs x 0.05 = 0.75 < 0.80
    (0.50, [0.60], 5, 0.80, False),  # 0.60 + 4 * 0.10 = 1.00: can still make it
    (0.50, [0.52, 0.53], 5, 0.80, True),  # best gain 0.02: 0.53 + 3 * 0.02 = 0.59
    (0.70, [0.60], 2, 0.80, True),  # got worse: no gain to project
    (0.50, [0.70], 1, 0.80, False),  # last epoch: nothing left to stop
    (0.50, [0.79, 0.78], 3, 0.80, False),  # 0.79 + 1 * 0.29
])
def test_hopeless_projects_the_best_gain_so_far(start, accuracies, epochs, line, expected):
    from finemix.core.ratio_rule import hopeless

    assert hopeless(start, accuracies, epochs, line) is expected


def test_hopeless_candidates_stop_early_and_the_search_records_it(tmp_path, bert_pair, monkeypatch):
    # Nothing can be accepted (line above 100 %): every candidate is hopeless after its first epoch.
    from finemix.tasks.classification import ClassificationTask

    monkeypatch.setattr(ClassificationTask, "acceptance_margin", lambda self, reference, rows, tolerance: -1.0)
    config = PurifyConfig(train=TrainConfig(epochs=3, batch_size=8, max_length=32, progress=False, min_eval_rows=4),
                          epur=None, search=RatioSearchConfig(candidates=(0.1, 0.5)))
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "a", config)
    candidates = report["ratio_search"]["candidates"]
    assert [c["stopped_early"] for c in candidates] == [True, True]
    assert all(c["best_epoch"] == 1 for c in candidates)
    full = dataclasses.replace(config, search=dataclasses.replace(config.search, stop_hopeless=False))
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "b", full)
    assert [c["stopped_early"] for c in report["ratio_search"]["candidates"]] == [False, False]


@pytest.mark.parametrize("budget, epochs, used, expected", [
    (None, 2.0, 99.0, 2.0),  # no bound
    (3.0, 2.0, 0.0, 2.0), (3.0, 2.0, 4.0, 2.0), (3.0, 2.0, 5.0, 1.0), (3.0, 2.0, 6.0, 0.0),
    (1.5, 1.5, 1.5, 0.75), (3.0, 1.5, 4.5, 0.0),
])
def test_epochs_allowed_spends_a_budget_of_whole_candidates(budget, epochs, used, expected):
    from finemix.core.ratio_rule import epochs_allowed

    assert epochs_allowed(budget, epochs, used) == expected


def test_the_search_budget_bounds_a_search_that_accepts_nothing(tmp_path, bert_pair, monkeypatch):
    # Nothing can be accepted (line above 100 %) and no candidate is stopped: the budget alone bounds the search.
    from finemix.tasks.classification import ClassificationTask

    monkeypatch.setattr(ClassificationTask, "acceptance_margin", lambda self, reference, rows, tolerance: -1.0)
    train = TrainConfig(epochs=2, batch_size=8, max_length=32, progress=False, min_eval_rows=4)
    search = RatioSearchConfig(candidates=(0.1, 0.3, 0.5, 0.7), stop_hopeless=False, budget=1.5)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "a",
                    PurifyConfig(train=train, epur=None, search=search, augment_rows=0))
    record = report["ratio_search"]
    assert [(c["ratio"], c["epochs_trained"]) for c in record["candidates"]] == [(0.1, 2.0), (0.3, 1.0)]
    assert record["not_tried_budget_spent"] == [0.5, 0.7] and "search budget" in record["reason"]
    assert record["chosen_ratio"] in (0.1, 0.3) and record["accepted"] is False
    # hopeless candidates stop after an epoch and leave budget for the rest: all four are tried
    stopping = dataclasses.replace(search, stop_hopeless=True, budget=2.0)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "b",
                    PurifyConfig(train=train, epur=None, search=stopping, augment_rows=0))
    assert [c["epochs_trained"] for c in report["ratio_search"]["candidates"]] == [1.0, 1.0, 1.0, 1.0]
    assert "not_tried_budget_spent" not in report["ratio_search"]


@pytest.mark.parametrize("budget", [0.5, 0, -1, float("nan"), "3", True])
def test_a_search_budget_below_one_candidate_is_refused(budget):
    from finemix.errors import FinemixError

    with pytest.raises(FinemixError, match="budget"):
        RatioSearchConfig(budget=budget)


def test_hidden_tokens_are_unseen_by_the_model(bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.tasks.classification import predict_logits

    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    texts = [text for text, _ in text_rows()]
    hidden = frozenset(tokenizer.convert_tokens_to_ids(["movie", "great"]))
    masked = predict_logits(model, tokenizer, [Example(t, 0) for t in texts], hidden_tokens=hidden)
    removed = [" ".join(w for w in t.split() if w not in ("movie", "great")) for t in texts]
    expected = predict_logits(model, tokenizer, [Example(t, 0) for t in removed])
    assert torch.allclose(masked, expected, atol=1e-5)
    raw = predict_logits(model, tokenizer, [Example(t, 0) for t in texts])
    changed = [i for i, t in enumerate(texts) if "movie" in t.split() or "great" in t.split()]
    assert changed and not torch.allclose(raw[changed], masked[changed])


def test_mixing_shares_torch_threads_among_its_workers_and_gives_them_back(bert_pair):
    from finemix.weights.pair import open_pair

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stream = mix_step.mixed_tensors(open_pair(bert_pair.finetuned, bert_pair.pretrained), MixConfig(ratio=0.5), workers=2)
        next(stream)
        assert torch.get_num_threads() == 1  # two workers on two threads' worth: one each
        stream.close()  # a consumer that stops early (an error while writing) still restores them
        assert torch.get_num_threads() == 2
        list(mix_step.mixed_tensors(open_pair(bert_pair.finetuned, bert_pair.pretrained), MixConfig(ratio=0.5), workers=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
