"""``flagged_word_guard``: words confirmed as triggers on the suspect are probed on every ρ
candidate; a candidate they still move is never accepted and ends the search (repair/ratio_search.py)."""

import pytest
import torch

import finemix.repair.epur_check as epur_check
import finemix.repair.ratio_search as ratio_search
from finemix.config import EpurConfig, PurifyConfig, RatioSearchConfig, TrainConfig
from finemix.data import Example
from finemix.repair.steps import purify
from finemix.repair.verdict import repair_verdict
from tiny_models import load_state, text_rows

FAST = TrainConfig(epochs=1, batch_size=8, max_length=32, progress=False, min_eval_rows=4)
SEARCH = RatioSearchConfig(candidates=(0.1, 0.2, 0.3))


def rows():
    return [Example(text, label) for text, label in text_rows() * 2]


def scripted(on_candidates):
    """word_flip_rates stand-in: on the suspect (the first call) the first word moves every row and the others
    none; on the n-th candidate probed every confirmed word moves ``on_candidates[n]`` of them."""
    calls = []

    def rates(model, tokenizer, rows, words, max_length, seed):
        calls.append(list(words))
        if len(calls) == 1:
            return {w: (1.0 if i == 0 else 0.0) for i, w in enumerate(words)}
        return {w: on_candidates[len(calls) - 2] for w in words}
    return rates, calls


def run(tmp_path, bert_pair, name, guard=True):
    config = PurifyConfig(train=FAST, epur=EpurConfig(top_n=50), search=SEARCH, augment_rows=0,
                          stop_when_epur_clears=False, flagged_word_guard=guard)
    return purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / name, config)


def test_a_candidate_a_confirmed_trigger_still_moves_ends_the_search_and_the_verdict_warns(tmp_path, bert_pair,
                                                                                         monkeypatch):
    rates, calls = scripted([0.9])
    monkeypatch.setattr(epur_check, "word_flip_rates", rates)
    report = run(tmp_path, bert_pair, "out")
    search = report["ratio_search"]
    assert [row["ratio"] for row in search["candidates"]] == [0.1] and len(calls) == 2
    assert calls[1] == report["epur_check"]["confirmed"] == [calls[0][0]]
    assert search["not_tried_trigger_survived"] == [0.2, 0.3] and search["accepted"] is False
    assert search["candidates"][0]["trigger_probe"]["surviving"] == calls[1]
    assert "still acted as one on every candidate tried" in search["reason"]
    assert report["verdict"]["status"] == "warning"
    assert any("very likely survives" in warning for warning in report["verdict"]["warnings"])


def test_when_none_is_accepted_the_fallback_prefers_a_candidate_that_passed_the_probe(tmp_path, bert_pair,
                                                                                      monkeypatch):
    monkeypatch.setattr(epur_check, "word_flip_rates", scripted([0.0, 0.9])[0])
    monkeypatch.setattr(ratio_search, "accepted", lambda *args: False)  # no candidate is accurate enough
    heldout = iter([0.5, 0.9])  # the surviving candidate is the more accurate one
    monkeypatch.setattr(ratio_search, "_try_candidate", lambda search, ratio, epochs: {
        "ratio": ratio, "kept_fraction": ratio, "heldout_accuracy": next(heldout), "stopped_early": False,
        "epochs_trained": epochs, "train_seconds": 0.0})
    search = run(tmp_path, bert_pair, "out")["ratio_search"]
    assert [row["ratio"] for row in search["candidates"]] == [0.1, 0.2]
    assert search["chosen_ratio"] == 0.1 and search["not_tried_trigger_survived"] == [0.3]
    assert "the most accurate that passed the trigger probe (0.500)" in search["reason"]


def test_a_probe_every_candidate_passes_changes_nothing_but_the_record(tmp_path, bert_pair, monkeypatch):
    monkeypatch.setattr(epur_check, "word_flip_rates", scripted([0.0, 0.0, 0.0])[0])
    guarded, plain = run(tmp_path, bert_pair, "guarded"), run(tmp_path, bert_pair, "plain", guard=False)
    assert guarded["ratio_search"]["chosen_ratio"] == plain["ratio_search"]["chosen_ratio"]
    assert all(row["trigger_probe"]["surviving"] == [] for row in guarded["ratio_search"]["candidates"])
    assert plain["epur_check"] is None and guarded["verdict"]["status"] == plain["verdict"]["status"]
    first, second = load_state(tmp_path / "guarded"), load_state(tmp_path / "plain")
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_no_guard_without_a_confirmed_word():
    assert epur_check.trigger_guard(None, None, [], 32, 0) is None
    assert epur_check.trigger_guard({"confirmed": []}, None, rows(), 32, 0) is None


def test_the_verdict_names_the_surviving_words_of_the_chosen_candidate():
    probe = {"flip": {"cf": 0.86}, "surviving": ["cf"]}
    search = {"mode": "auto", "chosen_ratio": 0.1, "accepted": True, "heldout_rows": 32,
              "reference_heldout_accuracy": 0.9, "accepted_drop": 0.05,
              "candidates": [{"ratio": 0.1, "heldout_accuracy": 0.9, "trigger_probe": probe}]}
    verdict = repair_verdict(search, 0.03)
    assert verdict["status"] == "warning" and "'cf' 86 %" in verdict["warnings"][0]
    probe.update(flip={"cf": 0.02}, surviving=[])
    assert repair_verdict(search, 0.03)["status"] == "ok"


def test_flagged_word_guard_must_be_a_boolean():
    from finemix.errors import FinemixError

    with pytest.raises(FinemixError, match="flagged_word_guard"):
        PurifyConfig(flagged_word_guard=1)
