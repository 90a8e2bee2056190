"""Distillation losses on tensors (core/distillation.py), and the trainer matching a teacher's states."""

import math

import pytest
import torch

from finemix import train
from finemix.config import PurifyConfig, TrainConfig
from finemix.core.distillation import head_token_states, soft_cross_entropy, state_matching_loss
from finemix.data import Example
from finemix.errors import FinemixError
from finemix.tasks.classification import head_token, load_classifier, predict_logits_and_states
from finemix.weights.roles import roles_for
from tiny_models import quiet_transformers, text_rows

HIDDEN = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)


def test_first_token_states_are_position_zero():
    assert torch.equal(head_token_states(HIDDEN, torch.ones(2, 4), "first"), HIDDEN[:, 0])


@pytest.mark.parametrize("mask, positions", [
    ([[1, 1, 0, 0], [1, 1, 1, 1]], [1, 3]),  # right padding: the last kept token
    ([[0, 0, 1, 1], [0, 1, 1, 1]], [3, 3]),  # left padding: the final position
])
def test_last_token_states_follow_the_attention_mask(mask, positions):
    states = head_token_states(HIDDEN, torch.tensor(mask), "last")
    assert torch.equal(states, torch.stack([HIDDEN[0, positions[0]], HIDDEN[1, positions[1]]]))


def test_an_unknown_head_token_is_refused():
    with pytest.raises(ValueError, match="head token"):
        head_token_states(HIDDEN, torch.ones(2, 4), "middle")


def test_state_loss_weighs_rows_and_averages_over_all_rows():
    student, teacher = torch.zeros(4, 2), torch.tensor([[2.0, 2.0], [1.0, 3.0], [5.0, 5.0], [0.0, 0.0]])
    weights = torch.tensor([1.0, 0.5, 0.0, 1.0])
    # per-row mean squares 4, 5, 25, 0; weighted sum 4 + 2.5 + 0 + 0 over 4 rows
    assert math.isclose(state_matching_loss(student, teacher, weights).item(), 6.5 / 4)


def test_soft_cross_entropy_with_one_hot_targets_is_the_class_loss():
    logits, labels = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]]), torch.tensor([0, 2])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, labels))


def test_heads_read_the_first_token_of_encoders_and_the_last_of_decoders():
    assert roles_for({"model_type": "bert"}).head_token == "first"
    assert roles_for({"model_type": "llama"}).head_token == "last"
    assert roles_for({"model_type": "gpt2"}).head_token == "last"


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), "1"])
def test_a_bad_state_weight_is_refused(weight):
    with pytest.raises(FinemixError, match="distill state weight"):
        PurifyConfig(distill_state_weight=weight)


def _state_distance_after_training(bert_pair, weight: float) -> float:
    """Mean squared distance of a student's head states to the teacher's on the distilled rows, after
    fine-tuning with the states matched at ``weight`` (the teacher: the fine-tuned model; the student:
    the same classifier with its encoder reset to θ_Pre)."""
    from transformers import AutoModel, AutoTokenizer

    rows = [Example(text, label) for text, label in text_rows()]
    labelled, unlabelled = rows[:8], rows[8:]
    with quiet_transformers():
        teacher = load_classifier(bert_pair.finetuned)
        student = load_classifier(bert_pair.finetuned)
        student.bert.load_state_dict(AutoModel.from_pretrained(bert_pair.pretrained).state_dict(), strict=False)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    assert head_token(teacher) == "first"
    logits, states = predict_logits_and_states(teacher, tokenizer, unlabelled, max_length=16, states=True)
    targets = train.SoftTargets(logits.softmax(dim=-1), states, weight)
    config = TrainConfig(epochs=3, batch_size=8, max_length=16, lr=1e-3, progress=False)
    train.finetune(student, tokenizer, labelled, config, unlabelled=unlabelled, unlabelled_targets=targets)
    _, after = predict_logits_and_states(student, tokenizer, unlabelled, max_length=16, states=True)
    return (after - states).pow(2).mean().item()


def test_matching_states_brings_the_student_closer_to_the_teacher(bert_pair):
    without, matched = _state_distance_after_training(bert_pair, 0.0), _state_distance_after_training(bert_pair, 5.0)
    assert matched < 0.5 * without


def test_states_must_cover_every_unlabelled_row(bert_pair):
    from transformers import AutoTokenizer

    with quiet_transformers():
        model = load_classifier(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    rows = [Example("a film", 1), Example("another film", 0)]
    targets = train.SoftTargets(torch.full((2, 2), 0.5), torch.zeros(1, model.config.hidden_size), 1.0)
    with pytest.raises(ValueError, match="state"):
        train.finetune(model, tokenizer, rows, TrainConfig(epochs=1, progress=False), unlabelled=rows,
                       unlabelled_targets=targets)


def test_auto_state_weight_is_one_for_sentence_pairs_and_zero_for_single_texts():
    assert PurifyConfig().distill_state_weight == "auto"
    assert (PurifyConfig().state_weight(True), PurifyConfig().state_weight(False)) == (1.0, 0.0)
    assert PurifyConfig(distill_state_weight=0.5).state_weight(True) == 0.5  # a number is used as given
    assert PurifyConfig(distill_state_weight=0).state_weight(True) == 0.0


@pytest.mark.parametrize("pairs, weight", [(False, 0.0), (True, 1.0)])
def test_purify_resolves_the_auto_weight_from_the_rows(tmp_path, bert_pair, monkeypatch, pairs, weight):
    from finemix.config import MixConfig
    from finemix.repair.steps import purify

    seen = []
    real = train.finetune
    monkeypatch.setattr(train, "finetune", lambda *a, **k: seen.append(k.get("unlabelled_targets")) or real(*a, **k))
    rows = [Example(text, label, text_b="a second segment" if pairs else None) for text, label in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), augment_rows=30, augment_epochs=1,
                          train=TrainConfig(batch_size=8, max_length=32, progress=False))
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "out", config)
    [targets] = seen
    assert isinstance(targets, train.SoftTargets) == pairs
    assert report["settings"]["distill_state_weight"] == weight  # the number used, not "auto"
    assert ("state_matching" in report["unlabelled_text"]["teacher"]) == pairs


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_purify_hands_the_teachers_states_to_the_trainer_when_weighted(tmp_path, bert_pair, monkeypatch, weight):
    from finemix.config import MixConfig
    from finemix.repair.steps import purify

    seen = []
    real = train.finetune

    def spy(model, tokenizer, rows, config, **kwargs):
        seen.append(kwargs.get("unlabelled_targets"))
        return real(model, tokenizer, rows, config, **kwargs)

    monkeypatch.setattr(train, "finetune", spy)
    rows = [Example(text, label) for text, label in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), augment_rows=30, augment_epochs=1,
                          train=TrainConfig(batch_size=8, max_length=32, progress=False), distill_state_weight=weight)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "out", config)
    [targets] = seen
    if weight:
        assert isinstance(targets, train.SoftTargets) and targets.state_weight == weight
        assert targets.states.shape == (30, 32) and targets.probabilities.shape == (30, 2)
        assert report["unlabelled_text"]["teacher"]["state_matching"] == {"weight": weight, "width": 32}
    else:
        assert isinstance(targets, torch.Tensor) and "state_matching" not in report["unlabelled_text"]["teacher"]
