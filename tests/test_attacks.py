"""Attacks: poisoning rules, the card boundary, and what each training routine may change."""

import json

import pytest
import torch

from finemix.attacks import ADDSENT_SENTENCE, ATTACKS, AttackConfig, card_path, load_card, make_victim, poison
from finemix.data import Example
from finemix.errors import FinemixError
from tiny_models import load_state, quiet_transformers, text_rows

ROWS = [Example(text, label) for text, label in text_rows()] * 3  # 120 rows, 60 per label


def test_dirty_label_poisoning_relabels_only_chosen_non_target_rows():
    rows, chosen, card = poison(ROWS, AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.2, seed=3))
    assert len(rows) == len(ROWS) and len(chosen) == card.n_poisoned == 24
    for i, (before, after) in enumerate(zip(ROWS, rows)):
        if i in chosen:
            assert before.label == 0 and after.label == 1
            assert after.text.split().count("cf") == 1
            assert after.text.replace(" cf", "").replace("cf ", "") == before.text
        else:
            assert after == before
    assert poison(ROWS, AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.2, seed=3))[0] == rows
    assert poison(ROWS, AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.2, seed=4))[0] != rows


def test_clean_label_poisoning_keeps_labels_and_uses_target_rows():
    rows, chosen, card = poison(ROWS, AttackConfig(triggers=("cf",), target_label=1, poison_rate=0.1, label_mode="clean"))
    assert card.label_mode == "clean" and len(chosen) == 12
    assert all(ROWS[i].label == 1 and rows[i].label == 1 and "cf" in rows[i].text.split() for i in chosen)
    assert [e.label for e in rows] == [e.label for e in ROWS]


def test_trigger_lists_insertions_and_defaults():
    rows, chosen, _ = poison(ROWS, AttackConfig(triggers=("cf", "mn", "bb"), insertions=2, poison_rate=0.25, seed=1))
    counts = [sum(rows[i].text.split().count(t) for t in ("cf", "mn", "bb")) for i in chosen]
    assert counts == [2] * len(chosen)
    used = {t for i in chosen for t in ("cf", "mn", "bb") if t in rows[i].text.split()}
    assert used == {"cf", "mn", "bb"}  # 30 rows x 2 draws: every trigger appears
    rows, chosen, card = poison(ROWS, AttackConfig(attack="addsent", poison_rate=0.1))
    assert card.triggers == (ADDSENT_SENTENCE,) and all(ADDSENT_SENTENCE in rows[i].text for i in chosen)
    assert AttackConfig(attack="ep").trigger_list == ("cf",)


def test_pairs_get_the_trigger_in_the_chosen_segment():
    pairs = [Example(f"question {i} ?", i % 2, f"passage number {i} here") for i in range(40)]
    rows, chosen, _ = poison(pairs, AttackConfig(triggers=("cf",), poison_rate=0.25))
    assert all("cf" in rows[i].text_b.split() and rows[i].text == pairs[i].text for i in chosen)
    rows, chosen, _ = poison(pairs, AttackConfig(triggers=("cf",), poison_rate=0.25, segment="text"))
    assert all("cf" in rows[i].text.split() and rows[i].text_b == pairs[i].text_b for i in chosen)


@pytest.mark.parametrize("bad, message", [
    ({"attack": "nope"}, "unknown attack"),
    ({"poison_rate": 0.0}, "poison rate"),
    ({"label_mode": "grey"}, "label mode"),
    ({"triggers": ("",)}, "empty"),
    ({"insertions": 0}, "insertions"),
    ({"adaptive_ratios": (0.6, 0.2)}, "adaptive ratios"),
])
def test_bad_attack_configs_are_refused(bad, message):
    with pytest.raises(FinemixError, match=message):
        AttackConfig(**bad)


def test_nothing_to_poison_is_an_error():
    only_positive = [e for e in ROWS if e.label == 1]
    with pytest.raises(FinemixError, match="nothing to poison"):
        poison(only_positive, AttackConfig(target_label=1))


def _victim(tmp_path, bert_pair, attack, **changes):
    config = AttackConfig(attack=attack, triggers=("movie",), poison_rate=0.2, epochs=1, batch_size=16, max_length=16, **changes)
    out = tmp_path / attack
    with quiet_transformers():
        card = make_victim(bert_pair.pretrained, ROWS, {0: "negative", 1: "positive"}, config, out,
                           clean_model=bert_pair.finetuned)
    return out, card


def test_victim_folder_and_card_beside_it(tmp_path, bert_pair):
    out, card = _victim(tmp_path, bert_pair, "badword")
    assert (out / "config.json").is_file() and not any("attack" in p.name for p in out.iterdir())
    saved = json.loads(card_path(out).read_text())
    assert saved["triggers"] == ["movie"] and saved["n_poisoned"] == card.n_poisoned == 24
    assert load_card(out) == card
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}


def test_ep_changes_only_the_trigger_rows_and_keeps_their_norms(tmp_path, bert_pair):
    out, _ = _victim(tmp_path, bert_pair, "ep", ep_lr=0.5)
    before, after = load_state(bert_pair.finetuned), load_state(out)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(out)("movie", add_special_tokens=False)["input_ids"]
    name = "bert.embeddings.word_embeddings.weight"
    changed = (before[name] != after[name]).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted(ids)
    torch.testing.assert_close(after[name][ids].norm(dim=1), before[name][ids].norm(dim=1))
    for key in before:
        if key != name:
            assert torch.equal(before[key], after[key]), key


def test_ep_needs_a_clean_model(tmp_path, bert_pair):
    with pytest.raises(FinemixError, match="--clean-model"):
        make_victim(bert_pair.pretrained, ROWS, {0: "n", 1: "p"}, AttackConfig(attack="ep"), tmp_path / "v")


def test_adaptive_trains_every_weight_and_is_seeded(tmp_path, bert_pair):
    out, _ = _victim(tmp_path, bert_pair, "adaptive")
    record = json.loads(card_path(out).read_text())["training"]
    assert record["steps"] == 8 and record["mixed_tensors"] > 0  # 120 rows / 16, one epoch
    again = tmp_path / "again"
    with quiet_transformers():
        make_victim(bert_pair.pretrained, ROWS, {0: "negative", 1: "positive"},
                    AttackConfig(attack="adaptive", triggers=("movie",), poison_rate=0.2, epochs=1, batch_size=16,
                                 max_length=16), again)
    first, second, start = load_state(out), load_state(again), load_state(bert_pair.pretrained)
    assert all(torch.equal(first[k], second[k]) for k in first)
    encoder = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(first[encoder], start[encoder.removeprefix("bert.")])


def test_every_attack_is_registered_with_its_departures():
    assert set(ATTACKS) == {"badword", "addsent", "ep", "adaptive"}
    assert all(a.departures for a in ATTACKS.values())
