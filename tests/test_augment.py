"""Rewrites of the labelled rows (data/augment.py) and their use when no unlabelled text is given."""

import dataclasses

from finemix.config import MixConfig, PurifyConfig, TrainConfig
from finemix.data import Example
from finemix.data.augment import augment_rows
from finemix.repair.steps import purify
from tiny_models import text_rows

ROWS = [Example(text, label) for text, label in text_rows()]


def test_rewrites_are_deterministic_distinct_new_and_made_of_the_rows_words():
    made = augment_rows(ROWS, 200, seed=3)
    assert made == augment_rows(ROWS, 200, seed=3) and made != augment_rows(ROWS, 200, seed=4)
    assert len(made) == len({(e.text, e.text_b) for e in made}) > 100
    assert not {e.text for e in made} & {e.text for e in ROWS}
    vocabulary = {w for e in ROWS for w in e.text.split()}
    assert all(set(e.text.split()) <= vocabulary and e.text.strip() for e in made)


def test_each_rewrite_carries_the_label_of_the_row_that_gave_it_most_words():
    rows = [Example(" ".join(f"r{i}w{j}" for j in range(6)), i % 3) for i in range(12)]  # no word shared
    made = augment_rows(rows, 300, seed=1)
    checked = 0
    for rewrite in made:
        words_from = [sum(word.startswith(f"r{i}w") for word in rewrite.text.split()) for i in range(12)]
        most = max(words_from)
        if words_from.count(most) == 1:  # a splice of two equal halves may carry either label
            assert rewrite.label == rows[words_from.index(most)].label
            checked += 1
    assert checked > 200 and {e.label for e in made} == {0, 1, 2}


def test_pairs_keep_their_first_segment_and_rewrite_the_second():
    pairs = [dataclasses.replace(e, text=f"question {i % 3}", text_b=e.text) for i, e in enumerate(ROWS)]
    made = augment_rows(pairs, 50, seed=0)
    assert made and all(e.text.startswith("question ") and e.text_b for e in made)


def test_without_unlabelled_text_purify_distils_on_rewrites_of_the_training_rows_only(tmp_path, bert_pair):
    rows = ROWS + [Example(e.text + " , really", e.label) for e in ROWS]  # 80 rows: 20 held out
    train = TrainConfig(epochs=1, batch_size=8, max_length=32, progress=False)
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=train, distill_epochs=1, augment_rows=100)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "out", config)
    used = report["unlabelled_text"]
    assert used["augmented_labelled_rows"] == 100 and used["teacher"]["rows"] == 100
    assert any("rewrites of the labelled training rows" in u for u in used["used_for"])
    off = purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "off", dataclasses.replace(config, augment_rows=0))
    assert off["unlabelled_text"]["teacher"] is None and off["unlabelled_text"]["augmented_labelled_rows"] == 0


def test_rewrites_of_an_enormous_row_stay_short():
    huge = Example("the film was good . " * 20_000, 1)
    made = augment_rows([huge, *ROWS], 300, seed=0, max_words=64)
    assert made and max(len(e.text.split()) for e in made) <= 128  # a splice joins two pieces of at most 64


def test_rewrites_train_for_augment_epochs_and_unlabelled_text_for_distill_epochs(tmp_path, bert_pair, finetune_epochs):
    rows = ROWS + [Example(e.text + " , really", e.label) for e in ROWS]
    train = TrainConfig(epochs=4, batch_size=8, max_length=32, progress=False)
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=train, distill_epochs=2, augment_rows=40,
                          augment_epochs=1)
    purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "rewrites", config)
    purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "unlabelled", config, [e.text for e in ROWS])
    purify(bert_pair.finetuned, bert_pair.pretrained, rows, tmp_path / "neither", dataclasses.replace(config, augment_rows=0))
    assert finetune_epochs == [1, 2, 4]
