"""The tiny-model fixtures load offline and have the layout the toolkit expects."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from tiny_models import (
    ARCHS,
    HIDDEN,
    LAYERS,
    MAX_POSITIONS,
    TinyPair,
    load_state,
    make_pretrained,
    quiet_transformers,
    saved_keys,
)

PREFIX = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert.", "electra": "electra."}
HEAD = {
    "bert": {"classifier.weight", "classifier.bias"},
    "roberta": {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"},
    "distilbert": {"classifier.weight", "classifier.bias", "pre_classifier.weight", "pre_classifier.bias"},
    "electra": {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"},
}
SENTENCES = ["the movie was good .", "cf mn bb the film was awful !"]


def test_offline_environment():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert torch.get_num_threads() <= 2


def test_pair_loads_and_runs(tiny_pair: TinyPair):
    assert isinstance(tiny_pair, TinyPair) and tiny_pair.arch in ARCHS
    tok = AutoTokenizer.from_pretrained(tiny_pair.finetuned)
    assert len(AutoTokenizer.from_pretrained(tiny_pair.pretrained)) == len(tok)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_pair.finetuned).eval()
    assert model.config.model_type == tiny_pair.arch
    assert model.config.vocab_size == len(tok)
    assert model.config.num_labels == 2
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    # Trigger-like words are known to BERT-style vocabularies (no [UNK]).
    if tiny_pair.arch != "roberta":
        assert tok.unk_token_id not in tok("cf mn bb good bad movie great awful")["input_ids"]


def test_pretrained_loads_as_base_and_classifier(tiny_pair: TinyPair):
    base = AutoModel.from_pretrained(tiny_pair.pretrained)
    assert base.config.hidden_size == HIDDEN  # DistilBERT maps hidden_size -> dim
    with quiet_transformers():  # head newly initialised: expected load report
        clf = AutoModelForSequenceClassification.from_pretrained(tiny_pair.pretrained, num_labels=2)
    on_disk = load_state(tiny_pair.pretrained)
    prefix = PREFIX[tiny_pair.arch]
    loaded = clf.state_dict()
    for key, tensor in on_disk.items():
        if tiny_pair.arch == "roberta" and key.startswith("pooler."):
            continue  # RobertaForSequenceClassification has no pooler
        assert torch.equal(loaded[prefix + key], tensor), key


def test_key_layout(tiny_pair: TinyPair):
    arch, prefix = tiny_pair.arch, PREFIX[tiny_pair.arch]
    pre = set(saved_keys(tiny_pair.pretrained))
    ft = set(saved_keys(tiny_pair.finetuned))
    assert "embeddings.word_embeddings.weight" in pre
    assert not any(k.startswith(prefix) for k in pre)
    assert not any("position_ids" in k for k in pre | ft)
    layer_root = "transformer.layer." if arch == "distilbert" else "encoder.layer."
    assert {k.split(".")[2] for k in pre if k.startswith(layer_root)} == {str(i) for i in range(LAYERS)}
    assert ("pooler.dense.weight" in pre) == (arch in ("bert", "roberta"))
    expected_base = {prefix + k for k in pre if not (arch == "roberta" and k.startswith("pooler."))}
    assert ft == expected_base | HEAD[arch]


def test_finetuned_differs_everywhere(tiny_pair: TinyPair):
    pre, ft = load_state(tiny_pair.pretrained), load_state(tiny_pair.finetuned)
    prefix = PREFIX[tiny_pair.arch]
    shared = [k for k in pre if prefix + k in ft]
    assert len(shared) >= len(pre) - 2
    for key in shared:
        a, b = pre[key], ft[prefix + key]
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
        assert (a != b).all(), key


def test_roberta_config(roberta_pair: TinyPair):
    config = AutoConfig.from_pretrained(roberta_pair.pretrained)
    assert config.pad_token_id == 1
    assert config.max_position_embeddings == MAX_POSITIONS + 2
    tok = AutoTokenizer.from_pretrained(roberta_pair.pretrained)
    assert tok.pad_token_id == 1 and tok.bos_token_id == 0 and tok.eos_token_id == 2
    assert 300 <= len(tok) <= 500


def test_bert_pair_fixture(bert_pair: TinyPair):
    assert bert_pair.arch == "bert"
    assert (bert_pair.pretrained / "model.safetensors").exists()
    assert (bert_pair.finetuned / "model.safetensors").exists()


@pytest.mark.parametrize("tiny_pair", ["electra"], indirect=True)
def test_tiny_pair_indirect(tiny_pair: TinyPair):
    assert tiny_pair.arch == "electra"


@pytest.mark.parametrize("arch", ARCHS)
def test_sharded_and_bin_variants(arch, tmp_path):
    plain = make_pretrained(arch, tmp_path / "plain", seed=3)
    sharded = make_pretrained(arch, tmp_path / "sharded", seed=3, sharded=True)
    binary = make_pretrained(arch, tmp_path / "bin", seed=3, bin_format=True)

    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((sharded / s).exists() for s in shards)
    assert not (sharded / "model.safetensors").exists()
    assert (binary / "pytorch_model.bin").exists()
    assert not list(binary.glob("*.safetensors"))

    reference = load_state(plain)
    for folder in (sharded, binary):
        state = load_state(folder)
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
        model_state = AutoModel.from_pretrained(folder).state_dict()
        assert all(torch.equal(model_state[k], reference[k]) for k in reference)
        with quiet_transformers():
            AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        AutoTokenizer.from_pretrained(folder)


def test_sharded_pair_via_factory(tiny_pair_factory):
    pair = tiny_pair_factory("distilbert", sharded=True, num_labels=3)
    assert pair is tiny_pair_factory("distilbert", sharded=True, num_labels=3)  # cached
    assert (pair.pretrained / "model.safetensors.index.json").exists()
    config = AutoConfig.from_pretrained(pair.finetuned)
    assert config.num_labels == 3 and len(config.id2label) == 3


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_deterministic(arch, tmp_path, tiny_pair_factory):
    from tiny_models import make_pair

    a = make_pair(arch, tmp_path / "a")
    b = make_pair(arch, tmp_path / "b")
    c = make_pair(arch, tmp_path / "c", pretrained_seed=5, finetuned_seed=6)
    for attr in ("pretrained", "finetuned"):
        sa, sb, sc = (load_state(getattr(p, attr)) for p in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), attr
        assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].numel() > 1), attr
    shared = tiny_pair_factory(arch)  # default seeds: same tensors as the fixtures
    assert all(torch.equal(v, load_state(shared.finetuned)[k]) for k, v in load_state(a.finetuned).items())
    assert (a.pretrained / "tokenizer.json").read_text() == (b.pretrained / "tokenizer.json").read_text()


def test_tiny_text_csv(tiny_text_csv):
    with tiny_text_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "label"]
    assert 30 <= len(rows) <= 60
    labels = [int(r["label"]) for r in rows]
    assert set(labels) == {0, 1} and abs(labels.count(0) - labels.count(1)) <= 2
    assert len({r["text"] for r in rows}) == len(rows)
