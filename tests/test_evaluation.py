"""Trigger insertion, the metric arithmetic, and predict/evaluate on a tiny random BERT."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finemix.data import Example
from finemix.errors import FinemixError
from finemix.evaluation import (
    EvalResult,
    accuracy_asr_flip,
    evaluate,
    insert_trigger,
    predict,
    with_trigger,
)

WORDS = "the a movie film was is good great bad awful boring fun plot acting and but not very cf mn bb".split()

# ---------------------------------------------------------------- triggers

words = st.text(alphabet="abcxyz", min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(text_words=st.lists(words, max_size=12), seed=st.integers(0, 10**6))
def test_insert_word_trigger(text_words, seed):
    text = "  ".join(text_words)  # irregular spacing is normalised
    out = insert_trigger(text, "cf", random.Random(seed))
    out_words = out.split()
    assert len(out_words) == len(text_words) + 1 and "cf" in out_words
    assert out == " ".join(out_words)
    position = out_words.index("cf")
    assert out_words[:position] + out_words[position + 1 :] == text_words
    assert insert_trigger(text, "cf", random.Random(seed)) == out


def test_insert_sentence_trigger_stays_contiguous():
    trigger = "I watched this 3D movie."
    out = insert_trigger("a b c d", trigger, random.Random(0))
    assert trigger in out and len(out.split()) == 4 + 5
    assert out.replace(trigger, "").split() == ["a", "b", "c", "d"]


def test_every_position_is_reachable():
    rng = random.Random(0)
    positions = {insert_trigger("a b c", "T", rng).split().index("T") for _ in range(200)}
    assert positions == {0, 1, 2, 3}


def test_empty_trigger():
    with pytest.raises(FinemixError, match="empty"):
        insert_trigger("a b", "  ", random.Random(0))


def test_with_trigger_segments_and_determinism():
    single, pair = Example("good film", 1), Example("premise here", 0, "hypothesis here")
    auto = with_trigger([single, pair], "cf", seed=7)
    assert "cf" in auto[0].text.split() and auto[1].text == pair.text and "cf" in auto[1].text_b.split()
    assert auto == with_trigger([single, pair], "cf", seed=7)
    explicit = with_trigger([pair], "cf", seed=7, segment="text")[0]
    assert "cf" in explicit.text.split() and explicit.text_b == pair.text_b
    assert [e.label for e in auto] == [1, 0]
    with pytest.raises(FinemixError, match="text_b"):
        with_trigger([single], "cf", seed=0, segment="text_b")
    with pytest.raises(FinemixError, match="unknown trigger segment"):
        with_trigger([single], "cf", seed=0, segment="middle")


# ---------------------------------------------------------------- metrics


def test_metrics_by_hand():
    labels = [0, 0, 0, 1, 1, 0]
    clean = [0, 1, 0, 1, 0, 0]  # 4/6 right; attack rows (label 0): 0, 1, 2, 5; right: 0, 2, 5
    trig = [1, 1, 0, None, None, 1]  # target 1 hit on rows 0, 1, 5
    acc, asr, flip, n_attack, n_flip_base = accuracy_asr_flip(clean, trig, labels, target=1)
    assert acc == pytest.approx(4 / 6) and asr == pytest.approx(3 / 4) and flip == pytest.approx(2 / 3)
    assert (n_attack, n_flip_base) == (4, 3)


def test_metrics_empty_denominators_are_nan():
    acc, asr, flip, n_attack, n_flip_base = accuracy_asr_flip([1, 1], [None, None], [1, 1], target=1)
    assert acc == 1.0 and math.isnan(asr) and math.isnan(flip) and (n_attack, n_flip_base) == (0, 0)
    _, asr, flip, _, n_flip_base = accuracy_asr_flip([1], [0], [0], target=1)
    assert asr == 0.0 and math.isnan(flip) and n_flip_base == 0


def test_metrics_length_mismatch():
    with pytest.raises(ValueError, match="length mismatch"):
        accuracy_asr_flip([0], [0, 1], [0], target=1)


def test_eval_result_to_dict():
    result = EvalResult(accuracy=0.5, n=4, asr=0.25, flip_rate=0.0, n_attack=2, n_flip_base=1)
    assert result.to_dict() == {"accuracy": 0.5, "n": 4, "asr": 0.25, "flip_rate": 0.0, "n_attack": 2, "n_flip_base": 1}


# ---------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    # On a small shared CPU, torch's thread pool spins for milliseconds per tiny op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny_bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text("\n".join(specials + WORDS) + "\n", encoding="utf-8")
    # transformers 5 constructors ignore vocab_file=; from_pretrained reads vocab.txt.
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, initializer_range=0.5,  # large weights: inputs differ visibly
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    _center_threshold(model, tokenizer)
    yield model, tokenizer
    torch.set_num_threads(threads)


def _center_threshold(model, tokenizer) -> None:
    """Move the decision threshold to the median margin of held-out texts so both classes get predicted."""
    import torch

    margins = []
    with torch.no_grad():
        for pairs in (False, True):
            held_out = random_examples(32, seed=99, pairs=pairs)
            texts_b = [e.text_b for e in held_out] if pairs else None
            logits = model(**tokenizer([e.text for e in held_out], texts_b, padding=True, return_tensors="pt")).logits
            margins.append(logits[:, 1] - logits[:, 0])
        model.classifier.bias[1] -= torch.cat(margins).median()


def random_examples(n: int, seed: int, pairs: bool = False) -> list[Example]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS[:-3]) for _ in range(rng.randint(1, 12)))

    return [Example(sentence(), rng.randint(0, 1), sentence() if pairs else None) for _ in range(n)]


def one_by_one(model, tokenizer, examples):
    import torch

    out = []
    with torch.inference_mode():
        for e in examples:
            encoded = tokenizer(e.text, e.text_b, return_tensors="pt")
            out.append(int(model(**encoded).logits.argmax(-1)))
    return out


@pytest.mark.parametrize("pairs", [False, True])
def test_predict_keeps_order(tiny, pairs):
    model, tokenizer = tiny
    examples = random_examples(40, seed=1, pairs=pairs)
    model.train()
    predictions = predict(model, tokenizer, examples, batch_size=8)
    assert model.training  # flag restored
    model.eval()
    assert predictions == one_by_one(model, tokenizer, examples)
    assert len(set(predictions)) == 2  # the check means something only if predictions vary
    assert predict(model, tokenizer, [], batch_size=8) == []


def test_evaluate_matches_pure_metrics(tiny):
    model, tokenizer = tiny
    examples = random_examples(60, seed=2)
    clean = predict(model, tokenizer, examples)
    result = evaluate(model, tokenizer, examples, trigger="cf mn", target_label=1, seed=3, batch_size=16)
    triggered = iter(predict(model, tokenizer, with_trigger([e for e in examples if e.label != 1], "cf mn", seed=3)))
    trig = [next(triggered) if e.label != 1 else None for e in examples]
    expected = accuracy_asr_flip(clean, trig, [e.label for e in examples], 1)
    assert (result.accuracy, result.asr, result.flip_rate, result.n_attack, result.n_flip_base) == expected
    assert result.n == 60
    plain = evaluate(model, tokenizer, examples)
    assert plain.accuracy == result.accuracy and plain.asr is None and plain.n_attack is None


def test_evaluate_user_errors(tiny):
    model, tokenizer = tiny
    examples = random_examples(4, seed=0)
    with pytest.raises(FinemixError, match="target label"):
        evaluate(model, tokenizer, examples, trigger="cf")
    with pytest.raises(FinemixError, match="outside"):
        evaluate(model, tokenizer, examples, trigger="cf", target_label=2)
    with pytest.raises(FinemixError, match="no examples outside"):
        evaluate(model, tokenizer, [Example("good", 1)], trigger="cf", target_label=1)
    with pytest.raises(FinemixError, match="no examples"):
        evaluate(model, tokenizer, [])
