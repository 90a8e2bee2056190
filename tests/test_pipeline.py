"""Pipeline pieces: teacher calibration, distillation, pairs end to end, the defense boundary."""

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch

import finemix.pipeline as pipeline
import finemix.ratio_search as ratio_search
from finemix.config import MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig
from finemix.data import Example
from finemix.pipeline import fit_class_bias, purify
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
    assert report["timings_s"]["teacher"] >= 0


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


@pytest.mark.parametrize("function", [pipeline.purify, pipeline.mix_checkpoint, pipeline.epur_checkpoint,
                                      pipeline.plan_epur, pipeline.teacher_targets, ratio_search.choose_ratio])
def test_defense_functions_take_nothing_a_defender_lacks(function):
    assert not FORBIDDEN & set(inspect.signature(function).parameters)


@pytest.mark.parametrize("module", [pipeline, ratio_search])
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
    from finemix.ratio_search import acceptance_margin

    assert acceptance_margin(0.875, 32, 0.03) == pytest.approx((0.875 * 0.125 / 32) ** 0.5, abs=1e-6)  # ≈ 0.058
    assert acceptance_margin(0.875, 10_000, 0.03) == 0.03
    assert acceptance_margin(1.0, 32, 0.03) == 0.03


def test_api_refuses_labels_the_model_does_not_have(tmp_path, bert_pair):
    from finemix.errors import FinemixError

    with pytest.raises(FinemixError, match="outside the model's labels"):
        purify(bert_pair.finetuned, bert_pair.pretrained, [Example("good movie", 5)], tmp_path / "out", PurifyConfig(train=FAST))
    assert not (tmp_path / "out").exists()


def test_fit_prior_bias_matches_the_target_share():
    from finemix.pipeline import fit_prior_bias

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


@pytest.mark.parametrize("start, accuracies, epochs, line, expected", [
    (0.50, [0.55], 5, 0.80, True),  # 0.55 + 4 more epochs x 0.05 = 0.75 < 0.80
    (0.50, [0.60], 5, 0.80, False),  # 0.60 + 4 * 0.10 = 1.00: can still make it
    (0.50, [0.52, 0.53], 5, 0.80, True),  # best gain 0.02: 0.53 + 3 * 0.02 = 0.59
    (0.70, [0.60], 2, 0.80, True),  # got worse: no gain to project
    (0.50, [0.70], 1, 0.80, False),  # last epoch: nothing left to stop
    (0.50, [0.79, 0.78], 3, 0.80, False),  # 0.79 + 1 * 0.29
])
def test_hopeless_projects_the_best_gain_so_far(start, accuracies, epochs, line, expected):
    from finemix.ratio_search import hopeless

    assert hopeless(start, accuracies, epochs, line) is expected


def test_hopeless_candidates_stop_early_and_the_search_records_it(tmp_path, bert_pair, monkeypatch):
    # Nothing can be accepted (line above 100 %): every candidate is hopeless after its first epoch.
    monkeypatch.setattr(ratio_search, "acceptance_margin", lambda reference, rows, tolerance: -1.0)
    config = PurifyConfig(train=TrainConfig(epochs=3, batch_size=8, max_length=32, progress=False, min_eval_rows=4),
                          epur=None, search=RatioSearchConfig(candidates=(0.1, 0.5)))
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "a", config)
    candidates = report["ratio_search"]["candidates"]
    assert [c["stopped_early"] for c in candidates] == [True, True]
    assert all(c["best_epoch"] == 1 for c in candidates)
    full = dataclasses.replace(config, search=dataclasses.replace(config.search, stop_hopeless=False))
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "b", full)
    assert [c["stopped_early"] for c in report["ratio_search"]["candidates"]] == [False, False]


def test_hidden_tokens_are_unseen_by_the_model(bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.evaluation import predict_logits

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


def test_epur_masked_teacher_hides_the_flagged_tokens_and_says_so(tmp_path, bert_pair):
    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1,
                          teacher_input="epur-masked", epur=pipeline.EpurConfig(top_n=5))
    from transformers import AutoTokenizer

    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config, unlabelled)
    teacher = report["unlabelled_text"]["teacher"]
    specials = set(AutoTokenizer.from_pretrained(bert_pair.finetuned).all_special_ids)
    flagged = {t["id"] for t in report["epur"]["tokens"]}
    assert len(flagged) == 5
    assert teacher["input"] == "epur-masked" and teacher["hidden_tokens"] == len(flagged - specials) >= 1
    assert 0 <= teacher["rows_with_hidden_tokens"] <= teacher["rows"]
    assert "teacher_clean_accuracy_raw_input" in teacher
    # without E-PUR there is nothing flagged: the teacher reads raw texts
    no_epur = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "raw",
                     dataclasses.replace(config, epur=None), unlabelled)
    assert no_epur["unlabelled_text"]["teacher"]["input"] == "raw"


def test_teacher_hidden_tokens_never_include_special_tokens(bert_pair):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    plan = pipeline.EpurPlan(tensor="e", rows=[tokenizer.cls_token_id, 7], tokens=[], frequency_rows=0)
    masked = PurifyConfig(teacher_input="epur-masked")
    assert pipeline.teacher_hidden_tokens(tokenizer, plan, masked) == {7}
    assert pipeline.teacher_hidden_tokens(tokenizer, plan, PurifyConfig(teacher_input="raw")) == frozenset()
    assert pipeline.teacher_hidden_tokens(tokenizer, None, masked) == frozenset()


@pytest.mark.parametrize("field,value,message", [("teacher_input", "masked", "teacher input"),
                                                   ("distill_labels", "onehot", "distillation labels"),
                                                   ("teacher", "victim", "distillation teacher")])
def test_unknown_distillation_settings_are_refused(field, value, message):
    from finemix.errors import FinemixError

    with pytest.raises(FinemixError, match=message):
        PurifyConfig(**{field: value})


def test_hard_distillation_labels_are_the_calibrated_teachers_argmax(bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    texts = [text for text, _ in text_rows()]
    soft_config = PurifyConfig(train=FAST)
    _, soft, _ = pipeline.teacher_targets(model, tokenizer, texts, rows(), soft_config)
    _, hard, record = pipeline.teacher_targets(model, tokenizer, texts, rows(),
                                              dataclasses.replace(soft_config, distill_labels="hard"))
    assert record["labels"] == "hard"
    assert torch.equal(hard.sum(dim=1), torch.ones(len(hard)))
    assert set(hard.flatten().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.argmax(dim=1), soft.argmax(dim=1))



def test_frozen_embedding_rows_keep_their_values_through_training(bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.finetune import finetune

    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    start = model.get_input_embeddings().weight.detach().clone()
    data = rows()
    used = sorted({i for e in data for i in tokenizer(e.text)["input_ids"]})
    frozen, free = used[: len(used) // 2], used[len(used) // 2:]
    finetune(model, tokenizer, data, dataclasses.replace(FAST, weight_decay=0.1), frozen_embedding_rows=frozen)
    after = model.get_input_embeddings().weight.detach()
    assert torch.equal(after[frozen], start[frozen])  # read by the batches, decayed by AdamW: still put back
    assert not torch.equal(after[free], start[free])


def test_freeze_epur_rows_leaves_the_reset_rows_pretrained(tmp_path, bert_pair):
    from safetensors.torch import load_file

    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.5), train=dataclasses.replace(FAST, weight_decay=0.1),
                          distill_epochs=1, epur=pipeline.EpurConfig(top_n=5))
    name = "bert.embeddings.word_embeddings.weight"
    pretrained = load_file(Path(bert_pair.pretrained) / "model.safetensors")["embeddings.word_embeddings.weight"]
    outputs = {}
    for freeze in (True, False):
        report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / str(freeze),
                        dataclasses.replace(config, freeze_epur_rows=freeze), unlabelled)
        assert report["settings"]["freeze_epur_rows"] is freeze
        outputs[freeze] = load_file(tmp_path / str(freeze) / "model.safetensors")[name]
    flagged = report["epur"]["rows"]
    assert torch.equal(outputs[True][flagged], pretrained[flagged])
    assert not torch.equal(outputs[False][flagged], pretrained[flagged])


def test_cross_fitted_targets_label_each_text_by_a_student_that_never_trained_on_it(monkeypatch, bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import finemix.evaluation as evaluation
    from finemix.checkpoint import open_pair

    trained_on, labelled_by = [], {}

    def fake_choose_ratio(pair, model, tokenizer, clean, config, plan, distill, after_mix=None):
        model.student_id = len(trained_on)
        trained_on.append({e.text for e in distill[0]})
        return {"chosen_ratio": 0.0}

    real_predict_logits = evaluation.predict_logits

    def recording_predict_logits(model, tokenizer, examples, **kwargs):
        if len(examples) != len(clean):
            labelled_by.update({e.text: model.student_id for e in examples})
        return real_predict_logits(model, tokenizer, examples, **kwargs)

    monkeypatch.setattr(ratio_search, "choose_ratio", fake_choose_ratio)
    monkeypatch.setattr(evaluation, "predict_logits", recording_predict_logits)
    clean = rows(1)
    unlabelled = [Example(f"unlabelled text number {i} about a film", 0) for i in range(9)]
    suspect = torch.tensor([[0.9, 0.1]] * 9)
    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    targets, record = pipeline.cross_fitted_targets(open_pair(bert_pair.finetuned, bert_pair.pretrained), model,
                                                    AutoTokenizer.from_pretrained(bert_pair.finetuned), clean,
                                                    PurifyConfig(train=FAST), None, unlabelled, suspect)
    assert not hasattr(model, "student_id")  # the students were copies; the suspect is left as it was
    assert record["rows_per_half"] == [5, 4] and record["first_round_ratios"] == [0.0, 0.0]
    assert trained_on[0].isdisjoint(trained_on[1]) and len(trained_on[0] | trained_on[1]) == 9
    assert set(labelled_by) == {e.text for e in unlabelled}
    assert all(text not in trained_on[student] for text, student in labelled_by.items())
    assert targets.shape == (9, 2) and torch.allclose(targets.sum(dim=1), torch.ones(9))


def test_a_cross_fitted_repair_keeps_the_first_rounds_smallest_ratio():
    config = pipeline.second_round_config(PurifyConfig(), [0.2, 0.1])
    assert config.ratio_auto is False and config.mix.ratio == 0.1
    assert config.search == PurifyConfig().search and config.mix.mode == PurifyConfig().mix.mode


def test_purify_with_a_cross_fitted_teacher_reports_it(tmp_path, bert_pair):
    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1, teacher="cross-fit")
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config, unlabelled)
    cross = report["unlabelled_text"]["teacher"]["cross_fit"]
    assert sum(cross["rows_per_half"]) == report["unlabelled_text"]["teacher"]["rows"]
    assert cross["first_round_ratios"] == [0.0, 0.0] and len(cross["student_clean_accuracy"]) == 2
    assert report["timings_s"]["cross-fit teacher"] > 0
    assert report["settings"]["teacher"] == "cross-fit"
    # ρ searched in the first round, then kept: the report shows the user's setting and a fixed final ρ
    searched = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "auto",
                      dataclasses.replace(config, ratio_auto=True), unlabelled)
    assert searched["settings"]["ratio_auto"] is True
    assert searched["ratio_search"]["mode"] == "fixed"
    assert searched["ratio_search"]["chosen_ratio"] == min(searched["unlabelled_text"]["teacher"]["cross_fit"]["first_round_ratios"])
