"""Once: the committed bench records' job keys from scheme 1 to scheme 2 (issue 14).

Scheme 1 hashed the victim plan whole and the data set and defense plans whole except the fields
added after records existed (``LATER_FIELDS``), which it left out while at their default; the
research options (teacher_input, distill_labels, teacher, freeze_epur_rows) were defense plan fields
of their own and ``stop_hopeless`` was hard-coded false. Scheme 2 (finemix/bench/keys.py) hashes,
for every plan, only the fields that differ from their default; the research options sit under
``variant`` and the committed configs say ``stop_hopeless: false``.

This script keeps scheme 1 to itself. For every record of docs/results/*.jsonl it takes the config
the record's provenance names (configs/bench/, by its ``name:``), computes both keys of every job of
that config's grid, and rewrites the record's key to the new key of the same job, adding
``"key_scheme": 2``; nothing else in a line changes. A record whose key is no job of its config
(made under settings the config no longer has; the report leaves it out either way) keeps its
scheme-1 key and gets no ``key_scheme``. Files without job keys are left alone. Running it again
changes nothing. Cached model folders are named by another digest (bench/models.py) and keep their names.

    python experiments/migrate_bench_keys.py [--dry-run]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from pathlib import Path

from finemix.bench import DatasetPlan, DefensePlan, VictimPlan, defense_jobs, job_key, load_bench_config
from finemix.errors import FinemixError

ROOT = Path(__file__).resolve().parents[1]

# Scheme 1's plan fields, and the later ones it left out while at these defaults.
SCHEME1_FIELDS = {
    DatasetPlan: ("train_rows", "test_rows", "max_length", "target_label", "victim_epochs", "trigger_segment",
                  "train_file", "dev_file", "test_file", "labels"),
    VictimPlan: ("epochs", "lr", "batch_size"),
    DefensePlan: ("epochs", "lr", "batch_size", "distill", "distill_rows", "distill_epochs", "prune_ratio", "candidates",
                  "tolerance", "epur_top_n", "head", "teacher_input", "distill_labels", "teacher", "freeze_epur_rows"),
}
LATER_DEFAULTS = {"trigger_segment": None, "head": "keep", "teacher_input": "raw", "distill_labels": "soft",
                  "teacher": "suspect", "freeze_epur_rows": False}
VARIANT_FIELDS = ("teacher_input", "distill_labels", "teacher", "freeze_epur_rows")  # now options of `variant`


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def scheme1_plan(plan) -> dict:
    """A plan as scheme 1 hashed it, from today's plan (variant options back to fields of their own)."""
    spec = dataclasses.asdict(plan)
    if isinstance(plan, DefensePlan):
        if spec.pop("stop_hopeless"):
            raise FinemixError("scheme 1 ran with stop_hopeless false; a config with true has no scheme-1 keys")
        variant = spec.pop("variant")
        unknown = sorted(set(variant) - set(VARIANT_FIELDS))
        if unknown:
            raise FinemixError(f"variant option(s) {unknown} were never defense plan fields; no scheme-1 keys")
        spec.update({**{k: LATER_DEFAULTS[k] for k in VARIANT_FIELDS}, **variant})
    if tuple(sorted(spec)) != tuple(sorted(SCHEME1_FIELDS[type(plan)])):
        raise FinemixError(f"{type(plan).__name__} has other fields than scheme 1 knew: {sorted(spec)}")
    return {k: v for k, v in spec.items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


def scheme1_key(config, kind: str, **job) -> str:
    attack = {k: v for k, v in dataclasses.asdict(config.attacks[job["attack"]]).items() if k != "progress"}
    spec = {"kind": kind, **job, "pretrained": config.pretrained, "plan": scheme1_plan(config.datasets[job["dataset"]]),
            "victim": dataclasses.asdict(config.victim), "attack_config": attack}
    if kind == "defense":
        spec.update(defense_plan=scheme1_plan(config.defense), unlabelled=config.unlabelled_rows)
    return _digest(spec)


def key_map(config) -> dict[str, str]:
    """Scheme-1 key → scheme-2 key for every job of the config's grid."""
    mapping: dict[str, str] = {}
    for dataset in config.datasets:
        for seed in config.seeds:
            for label in config.attacks:
                base = {"dataset": dataset, "attack": label, "seed": seed}
                jobs = [("clean", base), ("victim", base)]
                jobs += [("defense", job) for defense in config.defenses for job in defense_jobs(config, base, defense)]
                for kind, job in jobs:
                    old, new = scheme1_key(config, kind, **job), job_key(config, kind, **job)
                    if mapping.setdefault(old, new) != new:
                        raise FinemixError(f"{config.name}: scheme-1 key {old} is two jobs")
    return mapping


def configs_by_name() -> dict:
    configs = {}
    for path in sorted((ROOT / "configs" / "bench").glob("*.yaml")):
        config = load_bench_config(path)
        if config.name in configs:
            raise FinemixError(f"two bench configs are named {config.name!r}")
        configs[config.name] = config
    return configs


def migrate_line(line: str, mappings: dict, configs: dict) -> tuple[str, str]:
    """The line with its key migrated, and what happened: "migrated", "kept", "done" (scheme 2 already)
    or "no key" (not a bench record)."""
    record = json.loads(line)
    if "key" not in record:
        return line, "no key"
    if record.get("key_scheme") == 2:
        return line, "done"
    name = record["provenance"]["config"]
    if name not in mappings:
        mappings[name] = key_map(configs[name])
    new = mappings[name].get(record["key"])
    if new is None:
        return line, "kept"
    head = f'{{"key": "{record["key"]}", '
    if not line.startswith(head):
        raise FinemixError(f"a record that does not start with its key: {line[:60]}")
    migrated = f'{{"key": "{new}", "key_scheme": 2, ' + line[len(head):]
    if json.loads(migrated) != {"key": new, "key_scheme": 2, **{k: v for k, v in record.items() if k != "key"}}:
        raise FinemixError(f"rewriting {record['key']} changed more than its key")
    return migrated, "migrated"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    args = parser.parse_args()
    configs, mappings = configs_by_name(), {}
    for path in sorted((ROOT / "docs" / "results").glob("*.jsonl")):
        counts = {"migrated": 0, "kept": 0, "done": 0, "no key": 0}
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line, what = migrate_line(line, mappings, configs)
            lines.append(line)
            counts[what] += 1
        print(f"{path.name}: {counts['migrated']} migrated, {counts['kept']} kept (no job of their config), "
              f"{counts['done']} already scheme 2, {counts['no key']} without a job key")
        if counts["migrated"] and not args.dry_run:
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            os.replace(temporary, path)


if __name__ == "__main__":
    main()
