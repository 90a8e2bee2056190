"""finemix: remove backdoors from fine-tuned language models (Fine-mixing and E-PUR).

The public API is imported lazily so ``import finemix`` stays cheap:

    from finemix import purify, mix_checkpoint, epur_checkpoint, evaluate, load_examples
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "purify": "finemix.repair.steps",
    "mix_checkpoint": "finemix.repair.steps",
    "epur_checkpoint": "finemix.repair.steps",
    "evaluate": "finemix.evaluation",
    "load_examples": "finemix.data",
    "Example": "finemix.data",
    "MixConfig": "finemix.config",
    "EpurConfig": "finemix.config",
    "TrainConfig": "finemix.config",
    "PurifyConfig": "finemix.config",
    "RatioSearchConfig": "finemix.config",
    "FinemixError": "finemix.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'finemix' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
