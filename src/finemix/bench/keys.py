"""Job keys: the hash of every setting that shapes one measurement, and the jobs of a grid.

A record's key says which job of which settings it measured; a rerun skips keys already in
``results.jsonl`` and the report keeps only the keys of its config's grid. Scheme 2 (records carry
``"key_scheme": 2``): each plan (DatasetPlan, VictimPlan, DefensePlan) enters the key with only the
fields that differ from the field's default, so a field added later with a default keeps every
earlier key. Scheme-1 records (no ``key_scheme``) were migrated by experiments/migrate_bench_keys.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterator

from ..attacks import AttackConfig
from .config import BenchConfig

KEY_SCHEME = 2


def digest(value: Any) -> str:
    """12 hex digits of a setting's JSON (job keys, and the names of cached models)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _field_default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def key_spec(plan: Any) -> dict:
    """A plan as job keys see it: only the fields whose value differs from the field's default."""
    values = dataclasses.asdict(plan)
    return {f.name: values[f.name] for f in dataclasses.fields(plan) if getattr(plan, f.name) != _field_default(f)}


def recipe(attack: AttackConfig) -> dict:
    """What makes a victim: the attack's settings without the progress-bar switch (cache names, job keys)."""
    return {k: v for k, v in dataclasses.asdict(attack).items() if k != "progress"}


def job_key(config: BenchConfig, kind: str, **job: Any) -> str:
    """The key of one job: ``kind`` "clean", "victim" or "defense"; ``job`` its grid coordinates
    (dataset, attack, seed and, for a defense, defense, clean_rows, ratio)."""
    spec = {"kind": kind, **job, "pretrained": config.pretrained, "plan": key_spec(config.datasets[job["dataset"]]),
            "victim": key_spec(config.victim), "attack_config": recipe(config.attacks[job["attack"]])}
    if kind == "defense":
        spec.update(defense_plan=key_spec(config.defense), unlabelled=config.unlabelled_rows)
    return digest(spec)


MIXING_DEFENSES = ("mix", "finemix", "finemix-sel")  # the defenses that take ρ, with or without +epur


def defense_jobs(config: BenchConfig, base: dict, defense: str) -> Iterator[dict]:
    """The jobs of one defense in one (data set, attack, seed) cell; none for "none", which is the
    victim's own measurement."""
    if defense == "none":
        return
    ratios = config.ratios if defense.removesuffix("+epur") in MIXING_DEFENSES else ("-",)
    for clean_rows in config.clean_rows:
        for ratio in ratios:
            yield {**base, "defense": defense, "clean_rows": clean_rows, "ratio": ratio}


def cells(config: BenchConfig) -> Iterator[dict]:
    """The (data set, attack, seed) cells of the grid, each with one clean model and one victim."""
    for dataset in config.datasets:
        for seed in config.seeds:
            for label in config.attacks:
                yield {"dataset": dataset, "attack": label, "seed": seed}


def expected_keys(config: BenchConfig) -> set[str]:
    """The job keys of this config's grid (a record with another key came from other settings)."""
    keys = set()
    for base in cells(config):
        keys |= {job_key(config, "clean", **base), job_key(config, "victim", **base)}
        keys |= {job_key(config, "defense", **job) for defense in config.defenses
                 for job in defense_jobs(config, base, defense)}
    return keys


def iter_grid(config: BenchConfig) -> Iterator[dict]:
    """The defense jobs of a config, for planning (``finemix bench --dry-run``)."""
    for base in cells(config):
        for defense in config.defenses:
            if defense == "none":
                yield {**base, "defense": "none", "clean_rows": "-", "ratio": "-"}
            yield from defense_jobs(config, base, defense)
