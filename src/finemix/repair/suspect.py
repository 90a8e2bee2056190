"""One entry for any suspect input: a model folder, or a LoRA adapter on its public base.

An adapter is repaired in adapter form (its components kept, the factors fine-tuned, an adapter of the
same rank out) or merged into its base and repaired as a full model (a merged model out).
``adapter_output: auto`` (the default) takes the adapter form wherever it applies: a chat model's plain
LoRA adapter, no unlabelled text. On the 3-seed LoRA grid (docs/results-llm.md) both forms removed every
backdoor and the adapter form kept perplexity slightly lower; it also hands back what the user brought.
The CLI and the bench both call this, so they treat adapters alike.
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
    form, why = adapter_output_form(backdoored, pretrained, config.adapter_output, bool(unlabelled_texts), task)
    chosen = {"form": form, "setting": config.adapter_output, "why": why}
    if form == "adapter":
        from .adapter_repair import purify_adapter

        return purify_adapter(backdoored, pretrained, clean, output, config, force, sources, chosen)
    from .adapter_mix import merged_adapter

    with merged_adapter(backdoored, pretrained) as (merged, record):
        return purify(merged, pretrained, clean, output, config, unlabelled_texts, force,
                      sources=sources, task=task, backdoored_record={**record, "adapter_output": chosen})


def adapter_output_form(adapter: str | os.PathLike, pretrained: str | os.PathLike, setting: str,
                        has_unlabelled: bool, task: str) -> tuple[str, str]:
    """("adapter" or "merged", why) for an adapter suspect; an explicit ``adapter`` that cannot apply is refused."""
    from ..tasks import task_name_for_config
    from ..weights.adapter import saved_full_tensors
    from ..weights.locate import load_config, resolve_model_dir

    if setting == "merged":
        return "merged", "adapter_output: merged"
    task_name = task if task != "auto" else task_name_for_config(load_config(resolve_model_dir(pretrained)))
    saved = saved_full_tensors(adapter)
    blocker = ("the adapter-form repair is for chat models' adapters; this base is a classifier"
               if task_name == "classification" else
               f"the adapter saves full tensors ({', '.join(saved)}), which E-PUR and the full repair act on"
               if saved else
               "the adapter-form repair trains on the clean chats only and does not use unlabelled text"
               if has_unlabelled else None)
    if blocker is None:
        return "adapter", f"adapter_output: {setting}: a plain LoRA adapter of a chat model, repaired as an adapter"
    if setting == "adapter":
        raise FinemixError(f"adapter_output: adapter: {blocker} (repair the adapter merged)")
    return "merged", f"adapter_output: auto: merged, because {blocker}"
