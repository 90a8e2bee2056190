"""E-PUR's flagged words tested as triggers (core/trigger_check.py, repair/epur_check.py) and purify's
stop when the reset clears one (``stop_when_epur_clears``)."""

import pytest
import torch

import finemix.repair.epur_check as epur_check
from finemix.config import EpurConfig, PurifyConfig, TrainConfig
from finemix.core.trigger_check import flip_rate, ordinary_line, reset_cleared
from finemix.data import Example
from finemix.data.augment import with_word
from finemix.repair.epur_step import plan_epur
from finemix.repair.inputs import load_tokenizer
from finemix.repair.steps import epur_checkpoint, purify
from finemix.tasks.classification import load_classifier
from finemix.weights.pair import open_pair
from tiny_models import load_state, text_rows

FAST = TrainConfig(epochs=1, batch_size=8, max_length=32, progress=False, min_eval_rows=4)


def rows():
    return [Example(text, label) for text, label in text_rows() * 2]


def test_flip_rate_counts_moves_to_one_class_among_rows_not_already_there():
    # 3 rows not in class 1 before; 2 of them move there; the row already in 1 cannot count
    assert flip_rate([0, 0, 0, 1], [1, 1, 0, 1], classes=2) == pytest.approx(2 / 3)
    # moves spread over two classes: the larger share counts
    assert flip_rate([0, 0, 0, 0], [1, 2, 2, 0], classes=3) == 0.5
    assert flip_rate([1, 1], [1, 1], classes=2) == 0.0
    with pytest.raises(ValueError):
        flip_rate([0], [0, 1], classes=2)


def test_a_reset_clears_a_confirmed_trigger_that_then_moves_no_more_than_an_ordinary_word():
    before = {"cf": 1.0, "the": 0.02, "film": 0.04, "plot": 0.06}
    assert ordinary_line(before, ["cf"]) == 0.1  # 2 × median 0.04 is under the floor
    verdict = reset_cleared(before, {"cf": 0.03})
    assert verdict.cleared and verdict.confirmed == ["cf"]
    assert not reset_cleared(before, {"cf": 0.9}).cleared  # still a trigger after the reset
    assert not reset_cleared({"the": 0.02, "film": 0.3}, {}).cleared  # nothing confirmed: nothing to clear


def test_a_fragile_model_raises_the_ordinary_line_to_twice_the_median():
    before = {"cf": 1.0, "a": 0.2, "b": 0.3, "c": 0.4}
    assert ordinary_line(before, ["cf"]) == pytest.approx(0.6)
    assert reset_cleared(before, {"cf": 0.45}).cleared and not reset_cleared(before, {"cf": 0.7}).cleared
    # a word that still moves half the rows is not cleared, however high the line
    assert ordinary_line({"bad": 0.5, "a": 0.3, "b": 0.4, "c": 0.45}, ["bad"]) > 0.5
    assert not reset_cleared({"bad": 0.5, "a": 0.3, "b": 0.4, "c": 0.45}, {"bad": 0.5}).cleared
    # two confirmed words: both must be cleared
    assert not reset_cleared({"x": 0.9, "y": 0.8, "a": 0.0}, {"x": 0.0, "y": 0.5}).cleared


def test_with_word_inserts_once_per_row_into_the_named_segment_seeded():
    pairs = [Example("a question", 0, text_b="one two three"), Example("another", 1, text_b="four")]
    out = with_word(pairs, "cf", seed=3, segment="text_b")
    assert [row.text for row in out] == ["a question", "another"]
    assert all(row.text_b.split().count("cf") == 1 for row in out)
    assert out == with_word(pairs, "cf", seed=3, segment="text_b")


def test_probe_words_are_whole_words_of_one_token(bert_pair):
    pair = open_pair(bert_pair.finetuned, bert_pair.pretrained)
    tokenizer = load_tokenizer(pair)
    plan = plan_epur(pair, tokenizer, [text for text, _ in text_rows()], EpurConfig(top_n=50))
    words = epur_check.probe_words(plan, tokenizer)
    assert 0 < len(words) <= epur_check.PROBE_WORDS
    for word in words:
        assert word.isalnum() and len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1


def scripted_rates(before: float, after: float):
    """word_flip_rates stand-in: the first call (the suspect) gives ``before`` for the first word and 0 for
    the rest; later calls (after the reset) give ``after``."""
    calls = []

    def rates(model, tokenizer, rows, words, max_length, seed):
        calls.append(list(words))
        first = len(calls) == 1
        return {w: (before if first and i == 0 else 0.0 if first else after) for i, w in enumerate(words)}
    return rates, calls


def test_a_reset_that_clears_nothing_leaves_the_model_as_it_was(bert_pair, monkeypatch):
    rates, calls = scripted_rates(before=1.0, after=0.9)
    monkeypatch.setattr(epur_check, "word_flip_rates", rates)
    pair = open_pair(bert_pair.finetuned, bert_pair.pretrained)
    tokenizer = load_tokenizer(pair)
    plan = plan_epur(pair, tokenizer, [text for text, _ in text_rows()], EpurConfig(top_n=50))
    model = load_classifier(pair.finetuned_dir)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    record = epur_check.check_epur_reset(model, tokenizer, pair, rows(), plan, 32, 0, 0.03)
    assert record["confirmed"] == calls[1] == [calls[0][0]] and not record["cleared"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_purify_stops_after_e_pur_when_its_reset_clears_a_confirmed_trigger(tmp_path, bert_pair, monkeypatch):
    monkeypatch.setattr(epur_check, "word_flip_rates", scripted_rates(before=1.0, after=0.0)[0])
    monkeypatch.setattr(epur_check, "clean_accuracy", lambda *args: 0.9)  # the reset kept clean accuracy
    config = PurifyConfig(train=FAST, epur=EpurConfig(top_n=50), stop_when_epur_clears=True)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config)
    search = report["ratio_search"]
    assert search["mode"] == "epur-cleared" and search["chosen_ratio"] == 1.0 and search["candidates"] == []
    assert report["epur_check"]["cleared"] and "ratio+finetune" not in report["timings_s"]
    assert report["verdict"]["status"] == "ok" and "would survive" in report["verdict"]["summary"]
    # the output is exactly E-PUR alone on the same texts: the suspect with the flagged rows reset
    alone = epur_checkpoint(bert_pair.finetuned, bert_pair.pretrained, tmp_path / "epur",
                            [text for text, _ in text_rows()], EpurConfig(top_n=50))  # purify drops repeated rows
    assert report["epur"]["rows"] == alone["epur"]["rows"]
    repaired, epur_only = load_state(tmp_path / "out"), load_state(tmp_path / "epur")
    assert repaired.keys() == epur_only.keys()
    for name in repaired:
        assert torch.equal(repaired[name], epur_only[name]), name


@pytest.mark.parametrize("setting,after,accuracy_drop", [(False, 0.0, 0.0), (True, 0.9, 0.0), (True, 0.0, 0.2)])
def test_purify_mixes_when_the_check_is_off_fails_or_costs_accuracy(tmp_path, bert_pair, monkeypatch, setting, after,
                                                                 accuracy_drop):
    monkeypatch.setattr(epur_check, "word_flip_rates", scripted_rates(before=1.0, after=after)[0])
    accuracies = iter([0.9, 0.9 - accuracy_drop])
    monkeypatch.setattr(epur_check, "clean_accuracy", lambda *args: next(accuracies))
    config = PurifyConfig(train=FAST, epur=EpurConfig(top_n=50), stop_when_epur_clears=setting, augment_rows=0)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config)
    assert report["ratio_search"]["mode"] == "auto" and report["ratio_search"]["candidates"]
    # with the check off, the probe still runs for flagged_word_guard (on by default), but nothing is reset
    assert ("flip_after" in report["epur_check"]) == setting
    if setting:
        assert not report["epur_check"]["cleared"]


def test_stop_when_epur_clears_must_be_a_boolean():
    from finemix.errors import FinemixError

    with pytest.raises(FinemixError, match="stop_when_epur_clears"):
        PurifyConfig(stop_when_epur_clears="yes")
