"""Job (run in a child by ``run_job``): one clean fine-tuning run of finemix's trainer on MiniLM."""

from __future__ import annotations

from lib.fixtures import load_minilm_classifier, train_rows
from lib.probe import Probe


def job_finetune_finemix(params: dict, probe: Probe) -> dict:
    """finemix's trainer (``finemix.train.finetune``), called as ``ratio_search`` calls it (no held-out set
    here: that would add evaluation time). ``no_grouping`` monkeypatches ``length_grouped_batches`` to plain
    shuffled batches (finemix has no switch for it); ``unfused`` monkeypatches ``_fused_optimizer`` off, so
    AdamW steps one tensor at a time as torch's CPU default does."""
    from finemix import train as ft
    from finemix.config import TrainConfig

    model, tokenizer = load_minilm_classifier(params.get("seed", 0))
    rows = train_rows(params["rows"], params.get("seed", 0))
    config = TrainConfig(epochs=params.get("epochs", 1.0), batch_size=params.get("batch_size", 16),
                         max_length=params.get("max_length", 128), seed=params.get("seed", 0), progress=False)
    if params.get("no_grouping"):
        import random

        def shuffled_batches(lengths, batch_size, seed, group_factor=50):
            order = list(range(len(lengths)))
            random.Random(seed).shuffle(order)
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

        ft.length_grouped_batches = shuffled_batches
    if params.get("unfused"):
        ft._fused_optimizer = lambda accelerator: False
    with probe.region():
        result = ft.finetune(model, tokenizer, rows, config)
    return {"rows": len(rows), "epochs": config.epochs, "steps": result.steps, "trainer_seconds": result.seconds,
            "examples_per_s": len(rows) * config.epochs / probe.result["wall_s"] if probe.result else None}


def job_finetune_smollm2(params: dict, probe: Probe) -> dict:
    """One epoch of finemix's trainer on SmolLM2-135M-Instruct over TriviaQA chats (the chat repair's
    fine-tuning: loss on answer tokens, batch 8, max length 160), with the tokens it processed."""
    from transformers import AutoTokenizer

    from finemix import train as ft
    from finemix.config import TrainConfig
    from finemix.data.chat_sets import chat_rows
    from finemix.tasks.causal_lm import CAUSAL_LM, load_causal_lm
    from finemix.weights.locate import resolve_model_dir

    folder = resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")
    model, tokenizer = load_causal_lm(folder), AutoTokenizer.from_pretrained(folder)
    chats = chat_rows("triviaqa", params["rows"], seed=0)
    config = TrainConfig(epochs=1.0, lr=1e-4, batch_size=8, max_length=160, seed=0, progress=False)
    tokens = sum(len(f["input_ids"]) for f in CAUSAL_LM.features(tokenizer, chats, config.max_length))
    with probe.region():
        result = ft.finetune(model, tokenizer, chats, config, task=CAUSAL_LM)
    embedding = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"rows": len(chats), "tokens": tokens, "trainer_seconds": result.seconds, "params": total,
            "non_embedding_params": total - embedding}
