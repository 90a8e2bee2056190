"""The bench config: data sets, attacks, victims and defenses, typed and checked when it loads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..attacks import AttackConfig
from ..config import check_head_policy, from_mapping
from ..errors import FinemixError
from ..evaluation import SEGMENTS


Ratio = Union[float, str]  # a fixed ρ or "auto"


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    train_rows: int = 2000  # victim training rows (stratified sample of the train split)
    test_rows: int = 1000  # evaluation rows (stratified sample of the test split, the same for every seed)
    max_length: int = 64
    target_label: int = 1
    victim_epochs: Optional[float] = None  # None: victim.epochs
    # Which segment of a pair gets the trigger (None: the attack's own, "auto" = text_b). A long
    # passage is truncated at max_length, cutting a trigger placed in it; the question never is.
    trigger_segment: Optional[str] = None
    # A local data set instead of a built-in one: three CSV/TSV/JSONL files and the label names in id order.
    train_file: Optional[str] = None
    dev_file: Optional[str] = None
    test_file: Optional[str] = None
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        files = (self.train_file, self.dev_file, self.test_file)
        if any(files) and not (all(files) and self.labels):
            raise FinemixError("a local data set needs train_file, dev_file, test_file and labels")
        if self.trigger_segment is not None and self.trigger_segment not in SEGMENTS:
            raise FinemixError(f"unknown trigger_segment {self.trigger_segment!r}; use one of {', '.join(SEGMENTS)}")


@dataclasses.dataclass(frozen=True)
class VictimPlan:
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32


@dataclasses.dataclass(frozen=True)
class DefensePlan:
    epochs: float = 5.0
    lr: float = 5e-5
    batch_size: int = 16
    distill: bool = True
    distill_rows: int = 2000
    distill_epochs: float = 3.0  # finemix purify's default (every committed config sets it)
    prune_ratio: float = 0.3
    candidates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    tolerance: float = 0.03
    epur_top_n: int = 200
    head: str = "keep"  # mixing defenses: policy for the tensors θ_Pre lacks ("keep" | "reinit")
    # A research variant's options (experiments/variants.py), e.g. {teacher: cross-fit}; empty: the product.
    variant: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # auto: stop training a ρ candidate once it can no longer be accepted, as purify does. The committed
    # grid predates that stop: its configs say false, so every cell of it ran the same search.
    stop_hopeless: bool = True

    def __post_init__(self) -> None:
        check_head_policy(self.head)
        if not isinstance(self.variant, Mapping) or not all(isinstance(k, str) for k in self.variant):
            raise FinemixError(f"defense variant must be a mapping of option names, got {self.variant!r}")
        if self.variant:
            from ..defenses.variants import research_hooks

            research_hooks(self.variant)  # unknown options or values refused when the config loads


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    name: str
    pretrained: str = "sentence-transformers/all-MiniLM-L6-v2"
    seeds: tuple[int, ...] = (0, 1, 2)
    datasets: Mapping[str, DatasetPlan] = dataclasses.field(default_factory=dict)
    attacks: Mapping[str, AttackConfig] = dataclasses.field(default_factory=dict)  # label → attack (seed/target set per job)
    defenses: tuple[str, ...] = ("none", "finetune", "finemix+epur")
    clean_rows: tuple[int, ...] = (128,)
    ratios: tuple[Ratio, ...] = ("auto",)
    unlabelled_rows: int = 2000  # in-domain texts without labels given to the defender (0 = none)
    victim: VictimPlan = VictimPlan()
    defense: DefensePlan = DefensePlan()
    keep_models: bool = False  # keep every defended model folder (large)

    def __post_init__(self) -> None:
        from ..defenses import DEFENSES

        if not self.datasets or not self.attacks or not self.seeds:
            raise FinemixError("a bench config needs at least one data set, attack and seed")
        unknown = [d for d in self.defenses if d not in DEFENSES]
        if unknown:
            raise FinemixError(f"unknown defense(s) {unknown}; known: {', '.join(DEFENSES)}")
        for ratio in self.ratios:
            if ratio != "auto" and not (isinstance(ratio, (int, float)) and 0.0 <= ratio <= 1.0):
                raise FinemixError(f"ratios must be 'auto' or numbers in [0, 1], got {ratio!r}")
        if any(n < 2 for n in self.clean_rows):
            raise FinemixError(f"clean_rows must all be >= 2, got {self.clean_rows}")


def select(config: BenchConfig, datasets: Optional[Sequence[str]] = None, attacks: Optional[Sequence[str]] = None,
           seeds: Optional[Sequence[int]] = None, defenses: Optional[Sequence[str]] = None) -> BenchConfig:
    """The config restricted to some data sets, attacks, seeds or defenses. Job keys do not change, so
    several processes (or runs) can each take a part of one grid and share its output."""
    changes: dict = {}
    for field, chosen in (("datasets", datasets), ("attacks", attacks), ("seeds", seeds), ("defenses", defenses)):
        if chosen is None:
            continue
        known = getattr(config, field)
        unknown = sorted(set(chosen) - set(known), key=str)
        if unknown:
            raise FinemixError(f"{field} {unknown} are not in the config; it has {', '.join(map(str, known))}")
        changes[field] = {k: known[k] for k in chosen} if isinstance(known, Mapping) else tuple(chosen)
    return dataclasses.replace(config, **changes)


def load_bench_config(path: str | os.PathLike) -> BenchConfig:
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FinemixError(f"{path}: cannot read the bench config ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise FinemixError(f"{path}: a bench config is a YAML mapping")
    return bench_config_from_mapping(values)


def bench_config_from_mapping(values: Mapping[str, Any]) -> BenchConfig:
    values = dict(values)
    tuples = {"seeds", "defenses", "clean_rows", "ratios"}
    for key in tuples & set(values):
        values[key] = tuple(values[key])
    values["datasets"] = {name: _dataset_plan(plan or {}) for name, plan in (values.get("datasets") or {}).items()}
    values["attacks"] = {label: _attack_config(label, spec or {}) for label, spec in (values.get("attacks") or {}).items()}
    if "victim" in values:
        values["victim"] = from_mapping(VictimPlan, values["victim"] or {})
    if "defense" in values:
        spec = dict(values["defense"] or {})
        if "candidates" in spec:
            spec["candidates"] = tuple(spec["candidates"])
        values["defense"] = from_mapping(DefensePlan, spec)
    return from_mapping(BenchConfig, values)


def _dataset_plan(spec: Mapping[str, Any]) -> DatasetPlan:
    spec = dict(spec)
    if "labels" in spec:
        spec["labels"] = tuple(str(label) for label in spec["labels"])
    return from_mapping(DatasetPlan, spec)


def _attack_config(label: str, spec: Mapping[str, Any]) -> AttackConfig:
    """An attack entry: its label is the attack's name unless ``attack:`` says otherwise."""
    spec = dict(spec)
    spec.setdefault("attack", label)
    for key in ("seed", "target_label", "max_length", "epochs", "lr", "batch_size"):
        if key in spec:
            raise FinemixError(f"attack {label!r}: {key} is set by the bench (seeds, data set, victim plan), not per attack")
    if "triggers" in spec:
        spec["triggers"] = tuple([spec["triggers"]] if isinstance(spec["triggers"], str) else spec["triggers"])
    if "adaptive_ratios" in spec:
        spec["adaptive_ratios"] = tuple(spec["adaptive_ratios"])
    return from_mapping(AttackConfig, spec)
