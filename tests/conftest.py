"""Shared fixtures: tiny random Hugging Face models, built offline in a few seconds.

Fixtures (all folders are Hugging Face ``save_pretrained`` folders; treat the
session-scoped ones as READ-ONLY — copy them with ``shutil.copytree`` before
changing anything, because every test in the session shares them):

* ``tiny_pair`` (session) -> ``TinyPair(pretrained, finetuned, arch)``; runs the
  test once per arch in ``ARCHS`` (bert, roberta, distilbert, electra), or pick
  some with ``@pytest.mark.parametrize("tiny_pair", ["roberta"], indirect=True)``.
* ``bert_pair``, ``roberta_pair`` (session) -> ``TinyPair`` for one arch.
* ``tiny_pair_factory`` (session) -> ``factory(arch, **make_pair kwargs)``,
  cached per arguments; e.g. ``tiny_pair_factory("bert", sharded=True)`` or
  ``tiny_pair_factory("electra", bin_format=True, num_labels=3)``.
* ``tiny_text_csv`` (function) -> ``Path`` of a CSV with columns ``text,label``
  (40 rows, labels 0 and 1 interleaved).
* ``finetune_epochs`` (function) -> the list of ``config.epochs`` of every ``train.finetune``
  call made during the test, in order (the real training still runs).

The builders themselves live in ``tests/tiny_models.py`` for use by scripts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub / transformers: never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI replays a fixed set of examples (no flaky finds on a fresh machine); local runs explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Tiny models: one thread avoids oversubscribing the shared 2-core machine (measured ~4x faster).
torch.set_num_threads(1)

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # also works under --import-mode=importlib
    sys.path.insert(0, _TESTS_DIR)

from tiny_models import ARCHS, TinyPair, make_pair, write_text_csv  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pair_factory(tmp_path_factory):
    """Build (once per distinct arguments) and return a :class:`TinyPair`."""
    cache: dict[tuple, TinyPair] = {}

    def factory(arch: str, **kwargs) -> TinyPair:
        key = (arch.lower(), tuple(sorted(kwargs.items())))
        if key not in cache:
            root = tmp_path_factory.mktemp(f"tiny-{arch.lower()}")
            cache[key] = make_pair(arch, root, **kwargs)
        return cache[key]

    return factory


@pytest.fixture(scope="session", params=ARCHS)
def tiny_pair(request, tiny_pair_factory) -> TinyPair:
    """One tiny pre-trained/fine-tuned pair per arch (parametrized)."""
    return tiny_pair_factory(request.param)


@pytest.fixture(scope="session")
def bert_pair(tiny_pair_factory) -> TinyPair:
    return tiny_pair_factory("bert")


@pytest.fixture(scope="session")
def roberta_pair(tiny_pair_factory) -> TinyPair:
    return tiny_pair_factory("roberta")


@pytest.fixture
def tiny_text_csv(tmp_path) -> Path:
    """A small labelled CSV (``text,label``; 40 rows, both labels)."""
    return write_text_csv(tmp_path / "tiny.csv")


@pytest.fixture
def finetune_epochs(monkeypatch) -> list:
    """The epochs every ``train.finetune`` call of the test trained for, in order (training still runs)."""
    import finemix.train

    seen: list = []
    real = finemix.train.finetune

    def spy(model, tokenizer, train, config, **kwargs):
        seen.append(config.epochs)
        return real(model, tokenizer, train, config, **kwargs)

    monkeypatch.setattr(finemix.train, "finetune", spy)
    return seen
