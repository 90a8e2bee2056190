"""A control for the benchmark: run a defense on the *clean* model and measure it with an attack's trigger.

The targets compare a repaired victim with the clean model it should match. But a repair also
changes the model: a Fine-mixing repair at ρ = 0 is a weaker model trained from 128 labelled rows
and the suspect's answers. If that weaker model is more easily swayed by an inserted sentence, a
repaired victim shows a higher flip rate than the clean model without any backdoor left. Running
the same defense on the clean model (which has no backdoor to remove) measures that floor.

The defender's inputs, defense settings and test rows are the bench's own for the (data set,
attack, seed) cell; only the suspect folder is the clean model instead of the victim.

    python experiments/defend_clean.py configs/bench/distill-budget.yaml --dataset mr --attack addsent \
        --seeds 0 1 2 --models runs/bench/results/models --out runs/defend-clean
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(bench, config, dataset: str, attack: str, seed: int, defense: str) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.attacks import load_card
    from finemix.bench import dataset_splits
    from finemix.data import stratified_sample
    from finemix.defenses import DefenderInputs, run_defense
    from finemix.evaluation import evaluate

    plan = config.datasets[dataset]
    data = dataset_splits(dataset, plan, seed)
    card = load_card(bench.victim(dataset, attack, seed, data))  # the trigger to measure with
    suspect = bench.clean_model(dataset, seed, data)
    clean = stratified_sample(data.clean_pool, min(config.clean_rows[0], len(data.clean_pool)), seed=seed)
    chosen = {e.text for e in clean}
    unlabelled = tuple(t for t in data.unlabelled_pool if t not in chosen)[: config.unlabelled_rows]
    inputs = DefenderInputs(suspect, config.pretrained, tuple(clean), unlabelled)
    output = bench.out / "defended" / f"{dataset}-{attack}-seed{seed}-{defense}-on-clean"
    started = time.perf_counter()
    result = run_defense(defense, inputs, output, bench._defense_settings(plan, seed, "auto"), force=True)
    seconds = time.perf_counter() - started
    rows = {}
    for name, folder in (("clean model", suspect), (f"{defense} on the clean model", result.model)):
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        metrics = evaluate(model, tokenizer, data.test, trigger=card.triggers, target_label=card.target_label, seed=seed,
                           max_length=plan.max_length, segment=card.segment, insertions=card.insertions)
        rows[name] = metrics.to_dict()
    search = result.report.get("ratio_search") or {}
    return {"config": config.name, "dataset": dataset, "attack": attack, "seed": seed, "defense": defense,
            "suspect": "clean model", "chosen_ratio": search.get("chosen_ratio"), "defense_seconds": round(seconds, 1),
            "metrics": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--attack", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--defense", default="finemix+epur")
    parser.add_argument("--models", type=Path, required=True, help="the bench's model cache (victims and clean models)")
    parser.add_argument("--out", type=Path, default=Path("runs/defend-clean"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from finemix.bench import Bench, load_bench_config

    torch.set_num_threads(args.threads)
    config = load_bench_config(args.config)
    bench = Bench(config, args.out, progress=False, models=args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        record = measure(bench, config, args.dataset, args.attack, seed, args.defense)
        with open(args.out / "results.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        summary = "; ".join(f"{name}: ACC {100 * m['accuracy']:.1f} ASR {100 * m['asr']:.1f} flip {100 * m['flip_rate']:.1f}"
                            for name, m in record["metrics"].items())
        print(f"{args.dataset}/{args.attack}/seed{seed} (ρ {record['chosen_ratio']}, {record['defense_seconds']} s): {summary}",
              flush=True)


if __name__ == "__main__":
    main()
