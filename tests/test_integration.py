"""A backdoor planted in a tiny model is removed by ``purify``.

θ_Pre stands in for a real pre-trained encoder: a tiny BERT trained on other clean
sentences, saved as a bare encoder (a random model knows nothing that 64 rows could
recover). θ_B is fine-tuned from it on synthetic sentiment sentences where 10 % of
the rows carry the rare word "cf" and the label "positive"; a clean model gets the
same rows without poison. The defender holds 64 clean rows and nothing else.
"""

import random

import pytest

from finemix.attacks import AttackConfig, poison
from finemix.config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig
from finemix.data import Example
from finemix.evaluation import evaluate
from finemix.train import finetune
from finemix.repair.steps import purify
from tiny_models import _NEGATIVE, _NOUNS, _POSITIVE, make_pretrained

FILLER = ["i", "think", "this", "really", "was", "the", "is", "a", "and", "it"]


def sentences(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(_NOUNS))
        words.insert(rng.randint(0, len(words)), rng.choice(_POSITIVE if label else _NEGATIVE))
        rows.append(Example(" ".join(words), label))
    return rows


def train_model(pretrained, rows, seed, epochs=8):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    model = AutoModelForSequenceClassification.from_pretrained(
        pretrained, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    finetune(model, tokenizer, rows, TrainConfig(epochs=epochs, lr=2e-3, batch_size=32, max_length=32, seed=seed, progress=False))
    return model, tokenizer


def pretrain(tmp_path):
    """A bare encoder that has learnt something (the role public pre-training plays)."""
    from transformers import AutoTokenizer

    start = make_pretrained("bert", tmp_path / "random", seed=0)
    model, tokenizer = train_model(start, sentences(400, 9), seed=9, epochs=4)
    folder = tmp_path / "pretrained"
    model.bert.save_pretrained(folder)
    AutoTokenizer.from_pretrained(start).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_purify_removes_a_planted_backdoor(tmp_path):
    pretrained = pretrain(tmp_path)
    train, test = sentences(800, 1), sentences(300, 2)
    poisoned, _, card = poison(train, AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.1, seed=0))

    backdoored, tokenizer = train_model(pretrained, poisoned, seed=0)
    backdoored.save_pretrained(tmp_path / "backdoored")
    tokenizer.save_pretrained(tmp_path / "backdoored")
    clean_model, _ = train_model(pretrained, train, seed=0)

    def metrics(model):
        return evaluate(model, tokenizer, test, trigger=card.triggers, target_label=card.target_label, seed=3, max_length=32)

    before, clean = metrics(backdoored), metrics(clean_model)
    assert before.asr >= 0.9, before  # the attack worked
    assert clean.asr <= 0.2, clean

    config = PurifyConfig(
        epur=EpurConfig(top_n=10),  # the paper's N = 200 is for 30k-token vocabularies; this one has 257
        search=RatioSearchConfig(candidates=(0.1, 0.3, 0.5), tolerance=0.05),
        train=TrainConfig(epochs=10, lr=2e-3, batch_size=16, max_length=32, seed=0, progress=False),
    )
    defender_rows = sentences(64, 4)  # the defender's own clean rows: no trigger, no target label
    report = purify(tmp_path / "backdoored", pretrained, defender_rows, tmp_path / "purified", config)

    from transformers import AutoModelForSequenceClassification

    after = metrics(AutoModelForSequenceClassification.from_pretrained(tmp_path / "purified"))
    assert "cf" in [t["token"] for t in report["epur"]["tokens"][:20]]  # E-PUR ranks the trigger near the top
    assert after.asr <= clean.asr + 0.1, (after, clean)
    assert after.flip_rate <= clean.flip_rate + 0.1, (after, clean)
    assert after.accuracy >= before.accuracy - 0.1, (after, before)

    # Control: the same clean rows used only for fine-tuning (ρ = 1, no E-PUR) keep the backdoor,
    # so what removed it above is the defense, not the extra training.
    control = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=1.0), epur=None, train=config.train)
    purify(tmp_path / "backdoored", pretrained, defender_rows, tmp_path / "finetuned-only", control)
    kept = metrics(AutoModelForSequenceClassification.from_pretrained(tmp_path / "finetuned-only"))
    assert kept.asr >= 0.8, kept
