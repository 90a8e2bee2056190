"""Labelled text data: file readers, stratified splits, tokenisation, built-in sets.

Every problem a user can cause (bad encoding, missing column, unknown label)
raises ``FinemixError`` with one line naming the file and the problem.

One module per job: ``files`` (decoding, CSV/TSV/JSONL records), ``examples``
(``Example``, labels, loading), ``splits`` (stratified splits), ``tokenize``,
``sources``/``loaders``/``builtin`` (the built-in sets), ``hub`` (Hugging Face
data sets) and ``manifest``. Only the standard library is imported here.
"""

from .builtin import BUILTIN_LABELS, builtin_names, load_builtin
from .examples import Example, label_counts, load_examples, read_texts
from .files import PathLike, read_rows
from .hub import HUB_DATASETS, HUB_DEV_ROWS, hub_splits, load_hub
from .manifest import builtin_manifest, sst2_mr_overlap
from .splits import stratified_sample, stratified_split
from .tokenize import drop_token_ids, make_collator, tokenize_examples

__all__ = [
    "BUILTIN_LABELS",
    "HUB_DATASETS",
    "HUB_DEV_ROWS",
    "Example",
    "PathLike",
    "builtin_manifest",
    "builtin_names",
    "drop_token_ids",
    "hub_splits",
    "label_counts",
    "load_builtin",
    "load_examples",
    "load_hub",
    "make_collator",
    "read_rows",
    "read_texts",
    "sst2_mr_overlap",
    "stratified_sample",
    "stratified_split",
    "tokenize_examples",
]
