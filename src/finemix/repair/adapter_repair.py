"""Repair in adapter form: a LoRA adapter in, an adapter of the same rank and target modules out.

Per ρ candidate (smallest first, as the ρ rule of ratio_search):
1. mix by components: round(ρ·r) of each module's r rank-1 components are kept
   (``core.lora.component_keep_mask``), the others are started afresh as LoRA starts them
   (A's row drawn as peft draws it, B's column zero, so the update is unchanged at the start);
2. fine-tune the adapter's factors on the clean chats, the base frozen (train.finetune: only
   parameters that require gradients are optimised), the best held-out epoch kept;
3. accept the candidate when its held-out measure is within the task's margin of the suspect's.
The output is a peft adapter folder: ``purify``'s default for a chat model's plain LoRA adapter
(``suspect.adapter_output_form``); the alternative is the adapter merged, repaired as a full model, a
merged model written (``adapter_mix.merged_adapter``).
E-PUR has nothing to act on: a plain LoRA adapter does not move the embedding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..config import PurifyConfig
from ..core import lora
from ..core.ratio_rule import accepted, epochs_allowed, untried_note
from ..errors import FinemixError
from ..report import base_report, hash_inputs_in_background, write_report
from ..weights.adapter import Adapter, open_adapter
from ..weights.locate import resolve_model_dir
from ..weights.output import atomic_output_dir
from ..weights.reader import TensorReader
from .adapter_mix import AdapterInputs

if TYPE_CHECKING:
    import torch


def purify_adapter(adapter: str | os.PathLike, pretrained: str | os.PathLike, clean: Sequence, output: str | os.PathLike,
                   config: PurifyConfig, force: bool = False, sources: dict | None = None,
                   chosen: dict | None = None) -> dict:
    """Fine-mixing of a chat model's LoRA adapter in adapter form; returns the report (``sources``: where
    the clean data came from; ``chosen``: how the adapter form was chosen; both for the report)."""
    from ..repair.inputs import check_chat_rows, read_tokenizer
    from ..repair.ratio_search import split_clean
    from ..tasks.causal_lm import CAUSAL_LM, load_causal_lm

    inputs = AdapterInputs(Path(adapter), resolve_model_dir(pretrained))
    opened = open_adapter(inputs.finetuned_dir, TensorReader(inputs.pretrained_dir))
    if opened.saved:
        raise FinemixError(f"{adapter}: saves full tensors ({', '.join(sorted(opened.saved))}); adapter-form repair "
                           "trains LoRA factors only: repair it as a merged model")
    tokenizer = read_tokenizer(inputs.pretrained_dir)
    rows, notes = check_chat_rows(clean, tokenizer, inputs.pretrained_dir)
    hashes = hash_inputs_in_background(inputs, (adapter, pretrained))
    model = _lora_model(load_causal_lm(inputs.pretrained_dir), opened)
    train, heldout = split_clean(rows, config)
    measure = (lambda: round(CAUSAL_LM.clean_measure(model, tokenizer, heldout, config.train.max_length), 6)) if heldout else None
    _load_factors(model, opened, {m: (None, None) for m in opened.modules})  # the suspect itself
    reference = measure() if measure else None
    margin = CAUSAL_LM.acceptance_margin(reference, len(heldout), config.search.tolerance) if heldout else None
    candidates = sorted(config.search.candidates) if config.ratio_auto and heldout else [config.mix.ratio]
    record = {"mode": "auto" if len(candidates) > 1 else "fixed", "measure": CAUSAL_LM.measure_name,
              "train_rows": len(train), "heldout_rows": len(heldout), "reference_heldout_accuracy": reference,
              "accepted_drop": margin, "granularity": "component", "candidates": []}
    best, used = None, 0.0
    budget = config.search.budget if len(candidates) > 1 and config.finetune else None
    for ratio in candidates:
        allowed = epochs_allowed(budget, config.train.epochs, used)
        if allowed <= 0:
            record["not_tried_budget_spent"] = [r for r in candidates if r >= ratio]
            break
        row, state = _try(model, opened, ratio, dataclasses.replace(config.train, epochs=allowed, lr=config.adapter_lr),
                          config, tokenizer, train, heldout)
        used += allowed
        record["candidates"].append(row)
        if best is None or (row["heldout_accuracy"] or -1e9) > (best[0]["heldout_accuracy"] or -1e9):
            best = (row, state)
        if margin is None:
            record.update(chosen_ratio=ratio, accepted=None, reason="fixed ρ given" if heldout else
                          "too few clean rows for a held-out slice: used the fixed ρ")
            break
        if accepted(row["heldout_accuracy"], reference, margin):
            record.update(chosen_ratio=ratio, accepted=True, reason=f"smallest ρ within {margin:.3f} of the suspect's "
                                                                    f"{reference:.3f}")
            break
    if "chosen_ratio" not in record:
        row, state = best
        model.load_state_dict(state, strict=False)
        record.update(chosen_ratio=row["ratio"], accepted=False,
                      reason=f"no candidate within {margin:.3f} of the suspect's {reference:.3f}; took the best"
                             + untried_note(record.get("not_tried_budget_spent"), budget))
    return _write(model, tokenizer, opened, inputs, output, force, config, hashes, record,
                  {"rows": len(rows), **notes, **(sources or {})}, chosen)


def _lora_model(model, adapter: Adapter):
    """The base with a LoRA of the adapter's rank, alpha and target modules (peft), base frozen."""
    from peft import LoraConfig, get_peft_model

    settings = adapter.config
    modules = sorted({name[: -len(".weight")] for name in adapter.modules})
    lora_config = LoraConfig(r=int(settings["r"]), lora_alpha=settings.get("lora_alpha", settings["r"]), lora_dropout=0.0,
                             target_modules=modules, use_rslora=bool(settings.get("use_rslora")), task_type="CAUSAL_LM")
    return get_peft_model(model, lora_config)


def _lora_parameters(model) -> dict[str, tuple["torch.nn.Parameter", "torch.nn.Parameter"]]:
    """Base weight name -> (A, B) parameters of the peft model's default adapter."""
    found: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.default.weight"
            if name.endswith(marker):
                base = name[len("base_model.model."): -len(marker)] + ".weight"
                found.setdefault(base, {})[part] = parameter
    return {base: (pair["lora_A"], pair["lora_B"]) for base, pair in found.items()}


def _load_factors(model, adapter: Adapter, masks: dict) -> int:
    """Set every module's factors: the adapter's kept components, fresh LoRA starts for the dropped ones
    (``masks[name]`` = (keep, fresh A) or (None, None) for the adapter as it is); returns components kept."""
    import torch

    kept = 0
    parameters = _lora_parameters(model)
    with torch.no_grad():
        for name, module in adapter.modules.items():
            lora_a, lora_b = adapter.tensors[module.a_key].float(), adapter.tensors[module.b_key].float()
            keep, fresh_a = masks[name]
            if keep is not None:
                lora_a = torch.where(keep[:, None], lora_a, fresh_a)
                lora_b = lora_b * keep[None, :]
            kept += module.rank if keep is None else int(keep.sum())
            param_a, param_b = parameters[name]
            param_a.copy_(lora_a)
            param_b.copy_(lora_b)
    return kept


def _fresh_a(shape: tuple[int, int], seed: int, name: str) -> "torch.Tensor":
    """A LoRA A matrix as peft starts one (Kaiming-uniform with a = √5), seeded from (seed, module)."""
    import math

    import torch

    from ..core.mixing import tensor_seed

    generator = torch.Generator().manual_seed(tensor_seed(seed, f"fresh-lora-A:{name}"))
    bound = 1 / math.sqrt(shape[1])  # kaiming_uniform_(a=√5) on a (r × in) matrix
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _try(model, adapter: Adapter, ratio: float, train_config, config: PurifyConfig, tokenizer, train,
         heldout) -> tuple[dict, dict]:
    """Mix by components at ``ratio``, fine-tune the factors with ``train_config``, measure; (row, the factors'
    state)."""
    from ..tasks.causal_lm import CAUSAL_LM
    from ..train import finetune

    masks = {name: (lora.component_keep_mask(m.rank, ratio, config.mix.seed, name),
                    _fresh_a(tuple(adapter.tensors[m.a_key].shape), config.mix.seed, name))
             for name, m in adapter.modules.items()}
    kept = _load_factors(model, adapter, masks)
    total = sum(m.rank for m in adapter.modules.values())
    start = round(CAUSAL_LM.clean_measure(model, tokenizer, heldout, config.train.max_length), 6) if heldout else None
    result = finetune(model, tokenizer, train, train_config, eval_set=heldout or None, task=CAUSAL_LM) if config.finetune else None
    accuracy = max(result.eval_accuracy) if result and result.eval_accuracy else start
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    return ({"ratio": ratio, "kept_components": kept, "components": total, "heldout_accuracy_after_mix": start,
             "heldout_accuracy": accuracy, "best_epoch": result.best_epoch if result else None,
             "train_seconds": round(result.seconds, 2) if result else 0.0,
             "epochs_trained": round(result.epochs, 6) if result else 0.0}, state)


def _write(model, tokenizer, adapter: Adapter, inputs: AdapterInputs, output, force: bool, config: PurifyConfig, hashes,
           record: dict, clean_data: dict, chosen: dict | None) -> dict:
    from ..repair.verdict import repair_verdict
    from ..tasks.causal_lm import CAUSAL_LM

    folders = (inputs.finetuned_dir, inputs.pretrained_dir)
    with atomic_output_dir(output, force, folders) as folder:
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))  # the base's, so the folder evaluates on its own
        report = base_report("purify", hashes, dataclasses.asdict(config))
        if chosen is not None:
            report["inputs"]["backdoored"]["adapter_output"] = chosen
        report.update(task="causal-lm", output_form="adapter", clean_data=clean_data,
                      epur={"rows": [], "tokens": [], "note": "a LoRA adapter does not move the embedding: E-PUR had "
                                                           "nothing to act on"},
                      adapter={"rank": adapter.config.get("r"), "lora_alpha": adapter.config.get("lora_alpha"),
                               "modules": len(adapter.modules)},
                      ratio_search=record, verdict=repair_verdict(record, config.search.tolerance, CAUSAL_LM))
        write_report(folder, report)
    return report
