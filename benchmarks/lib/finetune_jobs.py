"""Job (run in a child by ``run_job``): one clean fine-tuning run of finemix's trainer on MiniLM."""

from __future__ import annotations

from lib.fixtures import load_minilm_classifier, train_rows
from lib.probe import Probe


def job_finetune_finemix(params: dict, probe: Probe) -> dict:
    """finemix's trainer (``finemix.train.finetune``), called as ``ratio_search`` calls it (no held-out set
    here: that would add evaluation time). ``no_grouping`` monkeypatches ``length_grouped_batches`` to plain
    shuffled batches (finemix has no switch for it)."""
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
    with probe.region():
        result = ft.finetune(model, tokenizer, rows, config)
    return {"rows": len(rows), "epochs": config.epochs, "steps": result.steps, "trainer_seconds": result.seconds,
            "examples_per_s": len(rows) * config.epochs / probe.result["wall_s"] if probe.result else None}
