"""What a model is asked to do: load it, its loss, its clean-data measure (tasks/base.py).

``classification`` (sequence classifiers) and ``causal-lm`` (chat models); ``task_named`` and
``task_for_config`` choose one without importing torch or transformers.
"""

from __future__ import annotations

from typing import Mapping

from ..errors import FinemixError

TASK_NAMES = ("classification", "causal-lm")


def task_named(name: str):
    """The task object registered under ``name``."""
    if name == "classification":
        from .classification import CLASSIFICATION

        return CLASSIFICATION
    if name == "causal-lm":
        from .causal_lm import CAUSAL_LM

        return CAUSAL_LM
    raise FinemixError(f"unknown task {name!r}; use one of {', '.join(TASK_NAMES)}")


def task_name_for_config(config: Mapping) -> str:
    """``causal-lm`` when ``config.json``'s ``architectures`` name a *ForCausalLM, else ``classification``
    (whose loader and pair checks give their own errors for anything else, e.g. swapped folders)."""
    architectures = config.get("architectures")
    names = [str(a) for a in architectures] if isinstance(architectures, list) else []
    return "causal-lm" if any(a.endswith("ForCausalLM") for a in names) else "classification"


def task_for_config(config: Mapping, folder: object = "the model", name: str = "auto"):
    """The task named, or (``auto``) the one ``config.json`` declares; a mismatch is refused."""
    if name == "auto":
        return task_named(task_name_for_config(config))
    task = task_named(name)
    declared = task_name_for_config(config)
    if config.get("architectures") and declared != name:  # only a config naming its classes can contradict --task
        raise FinemixError(f"{folder}: --task {name} but its config.json declares a {declared} model")
    return task
