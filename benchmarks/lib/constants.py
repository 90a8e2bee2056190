"""Paths, sizes and names every benchmark module shares."""

from __future__ import annotations

import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_WORKDIR = Path(os.environ.get("FINEMIX_BENCH_WORKDIR", "/tmp/finemix-bench"))
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MB = 1024**2
GB = 1024**3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
