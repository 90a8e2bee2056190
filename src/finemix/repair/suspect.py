"""One entry for any suspect input: a model folder, or a LoRA adapter on its public base.

An adapter is merged into its base and repaired as a full model (a merged model out), or, with
``adapter_output: adapter``, repaired in adapter form (its components kept, the factors fine-tuned, an
adapter of the same rank out). The CLI and the bench both call this, so they treat adapters alike.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from ..config import PurifyConfig
from ..errors import FinemixError


def purify_suspect(backdoored: str | os.PathLike, pretrained: str | os.PathLike, clean: Sequence, output: str | os.PathLike,
                   config: PurifyConfig, unlabelled_texts: Sequence[str] = (), force: bool = False,
                   sources: Optional[dict] = None, task: str = "auto") -> dict:
    """The report of repairing ``backdoored`` (a model folder or Hub name, or a LoRA adapter folder)."""
    from ..weights.adapter import is_adapter
    from ..weights.locate import resolve_model_dir
    from .steps import purify

    if not is_adapter(backdoored):
        return purify(resolve_model_dir(backdoored), pretrained, clean, output, config,
                      unlabelled_texts, force, sources=sources, task=task)
    if config.adapter_output == "adapter":
        from .adapter_repair import purify_adapter

        if task == "classification":
            raise FinemixError("adapter_output: adapter repairs chat models' adapters only")
        if unlabelled_texts:
            raise FinemixError("adapter_output: adapter trains on the clean chats only; it does not use unlabelled text "
                               "(repair the adapter merged to use it)")
        return purify_adapter(backdoored, pretrained, clean, output, config, force, sources)
    from .adapter_mix import merged_adapter

    with merged_adapter(backdoored, pretrained) as (merged, record):
        return purify(merged, pretrained, clean, output, config, unlabelled_texts, force,
                      sources=sources, task=task, backdoored_record=record)
