"""``finemix bench CONFIG.yaml``: the paper's comparison as a resumable grid.

Grid: data sets × attacks × defenses × seeds × clean-set sizes × ρ. Per (data set,
seed) a clean model is trained once; per (data set, attack, seed) a victim. Both are
cached under ``OUT/models`` in folders named by a hash of what made them, so changing
a setting retrains and an unchanged one is reused. Every measurement is one line of
``OUT/results.jsonl`` with its job key; a rerun skips keys already there, so a killed
run resumes where it stopped. ``OUT/results.md`` and ``OUT/plots/`` are rebuilt from
the JSONL at the end (``--report-only`` rebuilds them without running anything).

The evaluator (this module) reads attack cards to measure ASR; defenses only ever get
``DefenderInputs`` (defenses.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from .attacks import ATTACKS, AttackConfig, card_path, load_card, make_victim
from .config import EpurConfig, RatioSearchConfig, TrainConfig, check_distill_labels, check_head_policy, check_teacher, check_teacher_input, from_mapping
from .errors import FinemixError
from .evaluation import SEGMENTS

Ratio = Union[float, str]  # a fixed ρ or "auto"


# --------------------------------------------------------------------------- config

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
    teacher_input: str = "raw"  # what the distillation teacher reads ("raw" | "epur-masked"; PurifyConfig)
    distill_labels: str = "soft"  # the teacher's probabilities ("soft") or its argmax ("hard"; PurifyConfig)
    teacher: str = "suspect"  # who labels the unlabelled texts ("suspect" | "cross-fit"; PurifyConfig)
    freeze_epur_rows: bool = False  # E-PUR's reset rows stay at θ_Pre while fine-tuning (PurifyConfig)

    def __post_init__(self) -> None:
        check_head_policy(self.head)
        check_teacher_input(self.teacher_input)
        check_distill_labels(self.distill_labels)
        check_teacher(self.teacher)


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
        from .defenses import DEFENSES

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


# --------------------------------------------------------------------------- jobs

@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    train: list
    test: list
    clean_pool: list  # labelled rows the defender may be given (dev split)
    unlabelled_pool: list[str]  # in-domain texts the victim never saw
    labels: dict[int, str]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_splits(name: str, plan: DatasetPlan, seed: int) -> DatasetSplits:
    from .data import BUILTIN_LABELS, load_builtin, load_examples, load_hub, stratified_sample

    if plan.train_file:
        label2id = {label: i for i, label in enumerate(plan.labels)}
        splits = {split: load_examples(getattr(plan, f"{split}_file"), label2id=label2id, num_labels=len(label2id))
                  for split in ("train", "dev", "test")}
        labels = dict(enumerate(plan.labels))
    elif name.startswith("hf:"):
        splits, labels = load_hub(name)
    else:
        splits, labels = load_builtin(name), BUILTIN_LABELS.get(name, {})
    if "train" not in splits:
        raise FinemixError(f"data set {name!r} is evaluation-only; it cannot train victims")
    train = stratified_sample(splits["train"], min(plan.train_rows, len(splits["train"])), seed=seed)
    test = stratified_sample(splits["test"], min(plan.test_rows, len(splits["test"])), seed=0)
    seen = {(e.text, e.text_b) for e in train}
    unseen = [e for e in splits["train"] if (e.text, e.text_b) not in seen]
    texts = [t for e in splits["dev"] + unseen for t in ([e.text] if e.text_b is None else [])]
    # pairs: unlabelled "text" would lose the pairing, so only single-text sets get unlabelled text
    return DatasetSplits(train, test, splits["dev"], texts, labels)


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


# Fields added to the plans after records existed: job keys leave them out while at their default,
# so records made before them keep their keys.
LATER_FIELDS = ("trigger_segment", "head", "teacher_input", "distill_labels", "teacher", "freeze_epur_rows")


def _key_spec(plan: Union[DatasetPlan, DefensePlan]) -> dict:
    """A data set or defense plan as job keys see it (see ``LATER_FIELDS``)."""
    spec = dataclasses.asdict(plan)
    for field in dataclasses.fields(plan):
        if field.name in LATER_FIELDS and spec[field.name] == field.default:
            del spec[field.name]
    return spec


def _recipe(attack: AttackConfig) -> dict:
    """What makes a victim: the attack's settings without the progress-bar switch (cache names, job keys)."""
    return {k: v for k, v in dataclasses.asdict(attack).items() if k != "progress"}


class Bench:
    """Runs a ``BenchConfig`` into ``out``; every finished measurement is appended at once."""

    def __init__(self, config: BenchConfig, out: str | os.PathLike, progress: bool = True,
                 models: Optional[str | os.PathLike] = None) -> None:
        self.config, self.out, self.progress = config, Path(out), progress
        self.bars = progress and sys.stderr.isatty()  # training bars for people watching, not for log files
        self.models = Path(models) if models else self.out / "models"  # shareable: folders are named by content
        self.results_path = self.out / "results.jsonl"
        self.done = {r["key"] for r in read_results(self.results_path)}
        self.commit = _git_commit()  # the code this process loaded, not whatever is checked out later

    # ---- models

    def _train_settings(self, plan: DatasetPlan) -> dict:
        victim = self.config.victim
        return {"epochs": plan.victim_epochs or victim.epochs, "lr": victim.lr, "batch_size": victim.batch_size,
                "max_length": plan.max_length}

    def clean_model(self, dataset: str, seed: int, data: DatasetSplits) -> Path:
        plan = self.config.datasets[dataset]
        spec = {"pretrained": self.config.pretrained, "dataset": dataset, "seed": seed, "rows": plan.train_rows,
                **self._train_settings(plan)}
        folder = self.models / dataset / f"clean-seed{seed}-{_digest(spec)}"
        if not (folder / "config.json").is_file():
            self._log(f"training the clean model {folder.name}")
            train_clean_model(self.config.pretrained, data.train, data.labels, TrainConfig(
                seed=seed, progress=self.bars, **self._train_settings(plan)), folder)
        return folder

    def victim(self, dataset: str, label: str, seed: int, data: DatasetSplits) -> Path:
        plan = self.config.datasets[dataset]
        attack = dataclasses.replace(self.config.attacks[label], seed=seed, target_label=plan.target_label,
                                     progress=self.bars, **self._train_settings(plan))
        if plan.trigger_segment:
            attack = dataclasses.replace(attack, segment=plan.trigger_segment)
        clean = self.clean_model(dataset, seed, data) if ATTACKS[attack.attack].starts_from_clean_model else None
        spec = {"pretrained": self.config.pretrained, "dataset": dataset, "rows": plan.train_rows,
                "attack": _recipe(attack), "clean_model": clean.name if clean else None}
        folder = self.models / dataset / f"{label}-seed{seed}-{_digest(spec)}"
        if not (folder / "config.json").is_file() or not card_path(folder).is_file():
            self._log(f"training the victim {folder.name}")
            make_victim(self.config.pretrained, data.train, data.labels, attack, folder, clean_model=clean, force=True)
        return folder

    def expected_keys(self) -> set[str]:
        """The job keys of this config's grid (a record with another key came from other settings)."""
        keys = set()
        for dataset in self.config.datasets:
            for seed in self.config.seeds:
                for label in self.config.attacks:
                    base = {"dataset": dataset, "attack": label, "seed": seed}
                    keys |= {self._key("clean", **base), self._key("victim", **base)}
                    keys |= {self._key("defense", **job) for defense in self.config.defenses
                             for job in defense_jobs(self.config, base, defense)}
        return keys

    # ---- measurements

    def run(self) -> int:
        """Every missing measurement of the grid; returns how many were added."""
        added = 0
        for dataset, plan in self.config.datasets.items():
            for seed in self.config.seeds:
                data = dataset_splits(dataset, plan, seed)
                for label in self.config.attacks:
                    added += self._run_cell(dataset, label, seed, data)
        return added

    def _run_cell(self, dataset: str, label: str, seed: int, data: DatasetSplits) -> int:
        added = 0
        base = {"dataset": dataset, "attack": label, "seed": seed}
        clean_key = self._key("clean", **base)
        victim_key = self._key("victim", **base)
        victim = None
        if clean_key not in self.done or victim_key not in self.done:
            victim = self.victim(dataset, label, seed, data)
            card = load_card(victim)
            if clean_key not in self.done:
                added += self._measure(clean_key, "clean model", self.clean_model(dataset, seed, data), card, data, base, {})
            if victim_key not in self.done:
                added += self._measure(victim_key, "none", victim, card, data, base, {})
        for defense in self.config.defenses:
            for job in defense_jobs(self.config, base, defense):
                key = self._key("defense", **job)
                if key in self.done:
                    continue
                victim = victim or self.victim(dataset, label, seed, data)
                added += self._defend(key, victim, data, job)
        return added

    def _defend(self, key: str, victim: Path, data: DatasetSplits, job: dict) -> int:
        from .data import stratified_sample
        from .defenses import DefenderInputs, run_defense

        plan = self.config.datasets[job["dataset"]]
        seed = job["seed"]
        clean = stratified_sample(data.clean_pool, min(job["clean_rows"], len(data.clean_pool)), seed=seed)
        chosen = {e.text for e in clean}
        unlabelled = tuple(t for t in data.unlabelled_pool if t not in chosen)[: self.config.unlabelled_rows]
        inputs = DefenderInputs(victim, self.config.pretrained, tuple(clean), unlabelled)
        output = self.out / "defended" / f"{job['dataset']}-{job['attack']}-seed{seed}-{job['defense']}-{key[:8]}"
        self._log(f"{job['defense']} on {victim.name} ({job['clean_rows']} clean rows, ρ {job['ratio']})")
        started = time.perf_counter()
        result = run_defense(job["defense"], inputs, output, self._defense_settings(plan, seed, job["ratio"]), force=True)
        seconds = time.perf_counter() - started
        search = result.report.get("ratio_search") or {}
        extra = {"defense_seconds": round(seconds, 1), "chosen_ratio": search.get("chosen_ratio"),
                 "epur_tokens": [t["token"] for t in (result.report.get("epur") or {}).get("tokens", [])[:10]]}
        added = self._measure(key, job["defense"], result.model, load_card(victim), data, job, extra)
        if not self.config.keep_models and result.model != victim:
            shutil.rmtree(result.model, ignore_errors=True)
        return added

    def _defense_settings(self, plan: DatasetPlan, seed: int, ratio: Ratio):
        from .defenses import DefenseSettings

        d = self.config.defense
        return DefenseSettings(
            train=TrainConfig(epochs=d.epochs, lr=d.lr, batch_size=d.batch_size, max_length=plan.max_length,
                              seed=seed, progress=self.bars),
            ratio=None if ratio in ("auto", "-") else float(ratio),
            # The committed grid predates early stopping of hopeless candidates; off here so every cell
            # of it ran the same search (it only saves time when no candidate is accepted early).
            search=RatioSearchConfig(candidates=d.candidates, tolerance=d.tolerance, stop_hopeless=False),
            epur=EpurConfig(top_n=d.epur_top_n), distill=d.distill, distill_rows=d.distill_rows,
            distill_epochs=d.distill_epochs, prune_ratio=d.prune_ratio, head=d.head, teacher_input=d.teacher_input,
            distill_labels=d.distill_labels, teacher=d.teacher, freeze_epur_rows=d.freeze_epur_rows)

    def _measure(self, key: str, defense: str, model_dir: Path, card, data: DatasetSplits, job: dict, extra: dict) -> int:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .evaluation import evaluate

        plan = self.config.datasets[job["dataset"]]
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        metrics = evaluate(model, tokenizer, data.test, trigger=card.triggers, target_label=card.target_label,
                           seed=job["seed"], max_length=plan.max_length, segment=card.segment, insertions=card.insertions)
        # undefined rates (no row to count on, e.g. a model that predicts the target for everything) are null
        record = {"key": key, **job, "defense": defense, "accuracy": metrics.accuracy, "asr": _defined(metrics.asr),
                  "flip_rate": _defined(metrics.flip_rate), "test_rows": metrics.n, **extra, "provenance": self._provenance(model_dir)}
        append_result(self.results_path, record)
        self.done.add(key)
        self._log(f"  {job['dataset']}/{job['attack']}/seed{job['seed']} {defense}: ACC {100 * metrics.accuracy:.1f} "
                  f"ASR {100 * metrics.asr:.1f} flip {100 * metrics.flip_rate:.1f} ({metrics.n_flip_base} rows)")
        return 1

    def _key(self, kind: str, **job: Any) -> str:
        plan = self.config.datasets[job["dataset"]]
        spec = {"kind": kind, **job, "pretrained": self.config.pretrained, "plan": _key_spec(plan),
                "victim": dataclasses.asdict(self.config.victim), "attack_config": _recipe(self.config.attacks[job["attack"]])}
        if kind == "defense":
            spec.update(defense_plan=_key_spec(self.config.defense), unlabelled=self.config.unlabelled_rows)
        return _digest(spec)

    def _provenance(self, model_dir: Path) -> dict:
        from .pipeline import library_versions

        return {"config": self.config.name, "model": str(model_dir), "git": self.commit, "versions": library_versions(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def _log(self, message: str) -> None:
        if self.progress:
            print(message, flush=True)


def _defined(value: Optional[float]) -> Optional[float]:
    return None if value is None or value != value else value


def train_clean_model(pretrained: str, train: Sequence, labels: dict[int, str], config: TrainConfig, output: Path) -> None:
    """The never-poisoned reference: the same rows and recipe as the victims, no trigger."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .checkpoint import atomic_output_dir, resolve_model_dir
    from .finetune import finetune

    base = resolve_model_dir(pretrained)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(labels), label2id={v: k for k, v in labels.items()})
    finetune(model, tokenizer, train, config)
    with atomic_output_dir(output, force=True) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def _git_commit(where: Optional[Path] = None) -> Optional[str]:
    """HEAD of the checkout holding this package, "+local-changes" when its src/ differs from it."""
    import subprocess

    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                                  cwd=where or Path(__file__).parent).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        # ":(top)": src/ of the repository root; a plain "src" is read relative to cwd (src/finemix/src)
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ":(top)src"))
        return (commit + ("+local-changes" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- results

def read_results(path: Path) -> list[dict]:
    """Records of a results file; a torn last line (a kill mid-append) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_result(path: Path, record: dict) -> None:
    """One line, flushed and fsynced: a kill loses at most the measurement in flight."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [100.0 * v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: Sequence[float]) -> str:
    mean, std = _mean_std(values)
    return "–" if mean != mean else f"{mean:.1f} ± {std:.1f}"


def summarise(records: Sequence[dict]) -> dict[tuple, dict[str, list[float]]]:
    """(dataset, attack, defense, clean_rows, ratio) → metric → values over seeds."""
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in records:
        group = groups.setdefault((r["dataset"], r["attack"], r["defense"], r.get("clean_rows", "-"), str(r.get("ratio", "-"))),
                                  {"accuracy": [], "asr": [], "flip_rate": [], "seed": []})
        for metric in ("accuracy", "asr", "flip_rate", "seed"):
            group[metric].append(r[metric])
    return groups


def markdown_table(records: Sequence[dict], clean_rows: Optional[int] = None, ratio: str = "auto",
                   columns: Optional[Sequence[str]] = None) -> str:
    """Paper layout: rows = data set and attack; columns = clean model, no defense, each defense
    (those in ``columns`` when given, run or not). Each cell is ACC / ASR / flip as mean ± std over seeds (n = seeds)."""
    groups = summarise(records)
    chosen = {r["defense"] for r in records} if columns is None else set(columns)  # configured ones say "not run"
    defenses = ["clean model", "none"] + sorted(chosen - {"clean model", "none"}, key=_defense_order)
    cells = sorted({(g[0], g[1]) for g in groups})

    def pick(dataset, attack, defense):
        for (d, a, name, rows, r), values in groups.items():
            if (d, a, name) != (dataset, attack, defense):
                continue
            if name in ("clean model", "none") or ((clean_rows is None or rows == clean_rows) and r in (ratio, "-")):
                return values
        return None

    lines = ["| data set | attack | " + " | ".join(defenses) + " |", "|---|---|" + "---|" * len(defenses)]
    for dataset, attack in cells:
        row = []
        for defense in defenses:
            values = pick(dataset, attack, defense)
            if values is None:
                row.append("not run")
            else:
                row.append(f"{_cell(values['accuracy'])} / {_cell(values['asr'])} / {_cell(values['flip_rate'])} (n={len(values['seed'])})")
        lines.append(f"| {dataset} | {attack} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def column_groups(defenses: Sequence[str], most: int = 6) -> list[tuple[str, list[str]]]:
    """The defense columns of the report's tables: one table while it stays readable, else one
    without E-PUR and one with it (E-PUR alone and every "+epur" variant)."""
    chosen = [d for d in defenses if d != "none"]
    if len(chosen) <= most:
        return [("", chosen)]
    with_epur = [d for d in chosen if d == "epur" or d.endswith("+epur")]
    return [("without E-PUR", [d for d in chosen if d not in with_epur]), ("with E-PUR", with_epur)]


def _defense_order(name: str) -> tuple:
    order = ["epur", "finetune", "fineprune", "mix", "finemix", "finemix-sel"]
    base = name.split("+")[0]
    return (order.index(base) if base in order else len(order), name)


MIN_PLANTED_FLIP = 50.0  # points of flip rate above the clean model's for a victim to count as backdoored


def target_check(records: Sequence[dict], defense: str = "finemix+epur", baselines: Sequence[str] = ("finetune", "fineprune"),
                 clean_rows: Optional[int] = None) -> str:
    """Issue 3's targets per (data set, attack), from the means over seeds: the defense's ASR and flip
    rate within 5 points of the clean model's and its accuracy within 3 points of the victim's;
    how many single seeds meet all three; and its ASR against each baseline's (negative = lower).
    Cells whose victim is not backdoored (flip rate under ``MIN_PLANTED_FLIP`` points above the clean
    model's) say so instead of a verdict."""
    cells: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in records:
        if r["defense"] in (defense, *baselines) and (r.get("ratio", "-") not in ("auto", "-")
                                                      or clean_rows not in (None, r.get("clean_rows"))):
            continue  # fixed-ρ sweeps are not the default defense; other clean-set sizes are other budgets
        cells.setdefault((r["dataset"], r["attack"]), {}).setdefault(r["defense"], {})[r["seed"]] = r
    head = "".join(f" ASR − {b} ASR |" for b in baselines)
    lines = [f"| data set | attack | Δ ASR vs clean | Δ flip vs clean | Δ ACC vs victim | met (means) | seeds met |{head}",
             "|---|---|---|---|---|---|---|" + "---|" * len(baselines)]
    for (dataset, attack), found in sorted(cells.items()):
        if not {"clean model", "none", defense} <= set(found):
            continue

        def mean(name: str, metric: str) -> float:
            return _mean_std([r[metric] for r in found.get(name, {}).values()])[0]

        d_asr = mean(defense, "asr") - mean("clean model", "asr")
        d_flip = mean(defense, "flip_rate") - mean("clean model", "flip_rate")
        d_acc = mean(defense, "accuracy") - mean("none", "accuracy")
        seeds = sorted(set(found[defense]) & set(found["clean model"]) & set(found["none"]))
        met_seeds = sum(_seed_meets(found[defense][s], found["clean model"][s], found["none"][s]) for s in seeds)
        versus = "".join(" – |" if b not in found else f" {mean(defense, 'asr') - mean(b, 'asr'):+.1f} |" for b in baselines)
        met = d_asr <= 5 and d_flip <= 5 and d_acc >= -3
        planted = mean("none", "flip_rate") - mean("clean model", "flip_rate")
        # a victim the trigger barely moves has nothing to remove: a "yes" there would be a check that cannot fail
        verdict = ("yes" if met else "**no**") if planted >= MIN_PLANTED_FLIP else f"no backdoor (victim flip {planted:+.1f})"
        lines.append(f"| {dataset} | {attack} | {d_asr:+.1f} | {d_flip:+.1f} | {d_acc:+.1f} | {verdict} "
                     f"| {met_seeds}/{len(seeds)} |{versus}")
    return "\n".join(lines)


def _seed_meets(defended: dict, clean: dict, victim: dict) -> bool:
    def points(record: dict, metric: str) -> float:
        value = record[metric]
        return float("nan") if value is None else 100.0 * value

    return (points(defended, "asr") - points(clean, "asr") <= 5 and points(defended, "flip_rate") - points(clean, "flip_rate") <= 5
            and points(defended, "accuracy") - points(victim, "accuracy") >= -3)


def write_report(config: BenchConfig, out: Path) -> Path:
    """results.md and plots from the records of results.jsonl that belong to ``config``'s grid
    (records made under other settings are left out and counted), atomically replaced."""
    every = read_results(out / "results.jsonl")
    expected = Bench(config, out, progress=False).expected_keys()
    records = [r for r in every if r["key"] in expected]
    plots = make_plots(records, out / "plots")
    text = [f"# Benchmark `{config.name}`", "",
            f"{len(records)} of {len(expected)} measurements of the grid, from `{out / 'results.jsonl'}` "
            f"({len(every) - len(records)} records there belong to other settings and are left out). Cells: "
            "ACC / ASR / flip rate in %, mean ± std over seeds (n = seeds). Clean rows and ρ per table title.", ""]
    for rows in config.clean_rows:
        for ratio in config.ratios:
            title = "ρ auto" if ratio == "auto" else f"ρ = {ratio} for the mixing defenses"
            for part, columns in column_groups(config.defenses):
                heading = f"## {rows} clean rows, {title}" + (f", defenses {part}" if part else "")
                text += [heading, "", markdown_table(records, rows, str(ratio), columns), ""]
    baselines = [d for d in ("finetune", "finetune+epur", "fineprune", "fineprune+epur") if d in config.defenses]
    checks = [(f"Targets for finemix+epur, {rows} clean rows", target_check(records, baselines=baselines, clean_rows=rows))
              for rows in config.clean_rows]
    checks.append(("E-PUR alone", target_check(records, defense="epur", baselines=(), clean_rows=None)))
    text += [line for title, table in checks if table.count("\n") > 1 for line in (f"## {title}", "", table, "")]  # header-only: left out
    if plots:
        text += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    target = out / "results.md"
    temporary = out / ".results.md.tmp"
    temporary.write_text("\n".join(text))
    os.replace(temporary, target)
    return target


def make_plots(records: Sequence[dict], folder: Path) -> list[Path]:
    """ACC and ASR against ρ, against clean-set size, and E-PUR on/off, where the grid varies them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fixed = [r for r in records if isinstance(r.get("ratio"), (int, float))]
    if len({r["ratio"] for r in fixed}) > 1:
        written.append(_line_plot(plt, fixed, "ratio", "ρ (fraction of θ_B kept)", folder / "vs_ratio.png"))
    sized = [r for r in records if isinstance(r.get("clean_rows"), int)]
    if len({r["clean_rows"] for r in sized}) > 1:
        written.append(_line_plot(plt, sized, "clean_rows", "clean rows", folder / "vs_clean_rows.png"))
    pairs = epur_pairs_by_cell(records)
    if pairs:
        written.append(_epur_plot(plt, pairs, folder / "epur_on_off.png"))
    return written


def _line_plot(plt, records, x_key: str, x_label: str, path: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[str, dict[Any, list[dict]]] = {}
    for r in records:
        series.setdefault(f"{r['dataset']}/{r['attack']}/{r['defense']}", {}).setdefault(r[x_key], []).append(r)
    for label, points in sorted(series.items()):
        xs = sorted(points)
        for axis, metric in zip(axes, ("accuracy", "asr")):
            axis.plot(xs, [_mean_std([p[metric] for p in points[x]])[0] for x in xs], marker="o", label=label)
    for axis, title in zip(axes, ("clean accuracy (%)", "ASR (%)")):
        axis.set_xlabel(x_label)
        axis.set_title(title)
    axes[1].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def epur_pairs_by_cell(records: Sequence[dict]) -> dict[str, dict[bool, list[dict]]]:
    """The records of defenses run both without and with E-PUR, grouped by everything else that
    differs (data set, attack, defense, ρ, clean rows): label -> {with E-PUR: records}."""
    groups: dict[str, dict[bool, list[dict]]] = {}
    for r in records:
        base = r["defense"].removesuffix("+epur")
        label = f"{r['dataset']}/{r['attack']} {base} ρ={r.get('ratio', '-')} n={r.get('clean_rows', '-')}"
        groups.setdefault(label, {False: [], True: []})[r["defense"] != base].append(r)
    # a cell counts only with both sides (E-PUR alone, none and the clean model have no twin)
    return {label: pair for label, pair in sorted(groups.items()) if pair[False] and pair[True]}


def _epur_plot(plt, groups: dict[str, dict[bool, list[dict]]], path: Path) -> Path:
    # one panel above the other: a grid with many cells stays readable as one wide strip per metric
    figure, axes = plt.subplots(2, 1, figsize=(max(10.0, 0.32 * len(groups)), 9))
    width = 0.4
    for axis, metric in zip(axes, ("accuracy", "asr")):
        for offset, with_epur in ((-width / 2, False), (width / 2, True)):
            values = [_mean_std([r[metric] for r in pair[with_epur]])[0] for pair in groups.values()]
            axis.bar([i + offset for i in range(len(groups))], values, width, label="with E-PUR" if with_epur else "without")
        axis.set_xticks(range(len(groups)), list(groups), rotation=60, ha="right", fontsize=7)
        axis.set_title("clean accuracy (%)" if metric == "accuracy" else "ASR (%)")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_bench(config: BenchConfig, out: str | os.PathLike, progress: bool = True, report_only: bool = False,
              models: Optional[str | os.PathLike] = None) -> Path:
    out = Path(out)
    if not report_only:
        Bench(config, out, progress, models).run()
    return write_report(config, out)


def iter_grid(config: BenchConfig) -> Iterator[dict]:
    """The defense jobs of a config, for planning (``finemix bench --dry-run``)."""
    for dataset in config.datasets:
        for seed in config.seeds:
            for label in config.attacks:
                base = {"dataset": dataset, "attack": label, "seed": seed}
                for defense in config.defenses:
                    if defense == "none":
                        yield {**base, "defense": "none", "clean_rows": "-", "ratio": "-"}
                    yield from defense_jobs(config, base, defense)


# --------------------------------------------------------------------------- demo

DEMO_DEFENSES = {"none": "no defense (backdoored)", "finetune": "clean fine-tuning", "finemix+epur": "Fine-mixing + E-PUR"}


def demo_config(seed: int = 0) -> BenchConfig:
    """The README's main command: MiniLM on `mr`, trigger "cf" on 10 % of 4,000 rows, 128 clean rows
    and 1,000 unlabelled texts for the defender (a CPU budget; the bench configs use more)."""
    return BenchConfig(
        name="demo", seeds=(seed,), datasets={"mr": DatasetPlan(train_rows=4000, test_rows=1000)},
        attacks={"badword": AttackConfig(attack="badword")}, defenses=tuple(DEMO_DEFENSES)[1:] + ("none",),
        clean_rows=(128,), unlabelled_rows=1000, defense=DefensePlan(distill_rows=1000))


def demo(out: str | os.PathLike, seed: int = 0, config: Optional[BenchConfig] = None) -> str:
    """Run the demo grid (or ``config``, for tests) and return the before/after table."""
    out = Path(out)
    config = config or demo_config(seed)
    Bench(config, out, progress=True).run()
    records = {r["defense"]: r for r in read_results(out / "results.jsonl") if r["seed"] == seed}
    rows = [("clean model (never poisoned)", records.get("clean model"))]
    rows += [(label, records.get(name)) for name, label in DEMO_DEFENSES.items()]
    dataset, plan = next(iter(config.datasets.items()))
    attack = next(iter(config.attacks.values()))
    trigger = " / ".join(attack.trigger_list)
    lines = ["", f"{config.pretrained} on {dataset}, trigger {trigger!r} -> label {plan.target_label}, seed {seed}; "
                 f"{plan.test_rows} test rows",
             f"{'model':<30} {'ACC':>6} {'ASR':>6} {'flip':>6}"]
    for label, record in rows:
        values = [None if record is None else record[m] for m in ("accuracy", "asr", "flip_rate")]
        lines.append(f"{label:<30} " + " ".join("     –" if v is None else f"{100 * v:6.1f}" for v in values))
    lines.append(f"ASR: non-target test rows classified as the target once {trigger!r} is inserted (the clean model's "
                 "ASR is its own mistakes); flip: of those it got right without the trigger, the share the trigger flips.")
    return "\n".join(lines)
