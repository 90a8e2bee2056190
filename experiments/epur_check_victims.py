"""Where does ``stop_when_epur_clears`` fire? purify's own check (repair/epur_check.py) on every cached
victim and clean model of a bench config, at each of its clean-row sizes, without repairing anything.

Each line of the output is one (data set, attack, seed, rows) with the check's record: the words tested,
their flip rates before and after E-PUR's reset, and "cleared" (purify would return the E-PUR'd suspect).
The defender's inputs only: the bench's clean rows for that seed, E-PUR planned on their texts.

    python experiments/epur_check_victims.py configs/bench/labelled-only.yaml --models runs/bench/models \
        --out docs/results/epur-check-victims.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def model_folder(models: Path, dataset: str, name: str, seed: int) -> Path | None:
    """The cached model of one cell (``{name}-seed{seed}-{key}``), None when the bench never built it."""
    found = [p for p in (models / dataset).glob(f"{name}-seed{seed}-*") if p.is_dir()]
    if len(found) > 1:
        raise SystemExit(f"several cached models for {dataset} {name} seed {seed}: {found}")
    return found[0] if found else None


def check(folder: Path, pretrained: str, clean: list, max_length: int, seed: int) -> dict:
    from finemix.config import EpurConfig, RatioSearchConfig
    from finemix.repair.epur_check import check_epur_reset
    from finemix.repair.epur_step import plan_epur
    from finemix.repair.inputs import load_tokenizer
    from finemix.tasks.classification import CLASSIFICATION, load_classifier
    from finemix.weights.locate import resolve_model_dir
    from finemix.weights.pair import open_pair

    pair = open_pair(folder, resolve_model_dir(pretrained))
    tokenizer = load_tokenizer(pair)
    plan = plan_epur(pair, tokenizer, CLASSIFICATION.texts(clean), EpurConfig(), max_length)
    model = load_classifier(pair.finetuned_dir)
    return check_epur_reset(model, tokenizer, pair, clean, plan, max_length, seed, RatioSearchConfig().tolerance)


def main() -> None:
    from finemix.bench.config import load_bench_config
    from finemix.bench.splits import dataset_splits
    from finemix.data import stratified_sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", nargs="*")
    args = parser.parse_args()
    config = load_bench_config(args.config)
    with args.out.open("a") as out:
        for dataset, plan in config.datasets.items():
            if args.datasets and dataset not in args.datasets:
                continue
            for seed in config.seeds:
                data = dataset_splits(dataset, plan, seed)
                for name in ["clean", *config.attacks]:
                    folder = model_folder(args.models, dataset, name, seed)
                    if folder is None:
                        print(f"not cached: {dataset} {name} seed {seed}", flush=True)
                        continue
                    for rows in config.clean_rows:
                        clean = stratified_sample(data.clean_pool, min(rows, len(data.clean_pool)), seed=seed)
                        record = check(folder, config.pretrained, clean, plan.max_length, seed)
                        line = {"dataset": dataset, "model": name, "seed": seed, "clean_rows": rows,
                                "folder": folder.name, **record}
                        out.write(json.dumps(line) + "\n")
                        out.flush()
                        print(dataset, name, seed, rows, "cleared" if record["cleared"] else "-",
                              record.get("confirmed"), flush=True)


if __name__ == "__main__":
    main()
