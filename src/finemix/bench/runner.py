"""Runs a grid: trains (or reuses) clean models and victims, runs every defense, measures it.

The evaluator (this module) reads attack cards to measure ASR; defenses only ever get
``DefenderInputs`` (defenses/registry.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from ..attacks import load_card
from ..config import EpurConfig, RatioSearchConfig, TrainConfig
from ..errors import FinemixError
from ..weights.output import check_output_apart, child_path
from .config import BenchConfig, DatasetPlan, Ratio
from .keys import KEY_SCHEME, defense_jobs, expected_keys, job_key
from .models import ModelCache
from .records import append_result, read_results
from .splits import DatasetSplits, dataset_splits
from .tables import write_report


class Bench:
    """Runs a ``BenchConfig`` into ``out``; every finished measurement is appended at once."""

    def __init__(self, config: BenchConfig, out: str | os.PathLike, progress: bool = True,
                 models: Optional[str | os.PathLike] = None) -> None:
        check_bench_outputs(config, out, models)  # before any work
        self.config, self.out, self.progress = config, Path(out), progress
        self.bars = progress and sys.stderr.isatty()  # training bars for people watching, not for log files
        self.models = Path(models) if models else self.out / "models"  # shareable: folders are named by content
        self.cache = ModelCache(config, self.models, self.bars, self._log)
        self.results_path = self.out / "results.jsonl"
        self.done = {r["key"] for r in read_results(self.results_path)}
        self.commit = _git_commit()  # the code this process loaded, not whatever is checked out later

    def clean_model(self, dataset: str, seed: int, data: DatasetSplits) -> Path:
        return self.cache.clean_model(dataset, seed, data)

    def victim(self, dataset: str, label: str, seed: int, data: DatasetSplits) -> Path:
        return self.cache.victim(dataset, label, seed, data)

    def expected_keys(self) -> set[str]:
        return expected_keys(self.config)

    # ---- measurements

    def run(self) -> int:
        """Every missing measurement of the grid; returns how many were added."""
        added = 0
        for dataset, plan in self.config.datasets.items():
            for seed in self.config.seeds:
                data = dataset_splits(dataset, plan, seed)
                for label in self.config.attacks:
                    added += self._run_cell({"dataset": dataset, "attack": label, "seed": seed}, data)
        return added

    def _run_cell(self, base: dict, data: DatasetSplits) -> int:
        added = 0
        dataset, label, seed = base["dataset"], base["attack"], base["seed"]
        clean_key = job_key(self.config, "clean", **base)
        victim_key = job_key(self.config, "victim", **base)
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
                key = job_key(self.config, "defense", **job)
                if key in self.done:
                    continue
                victim = victim or self.victim(dataset, label, seed, data)
                added += self._defend(key, victim, data, job)
        return added

    def _defend(self, key: str, victim: Path, data: DatasetSplits, job: dict) -> int:
        from ..data import stratified_sample
        from ..defenses import DefenderInputs, run_defense
        from ..repair.ratio_search import chosen_candidate

        plan = self.config.datasets[job["dataset"]]
        seed = job["seed"]
        clean = stratified_sample(data.clean_pool, min(job["clean_rows"], len(data.clean_pool)), seed=seed)
        chosen = {e.text for e in clean}
        unlabelled = tuple(t for t in data.unlabelled_pool if t not in chosen)[: self.config.unlabelled_rows]
        inputs = DefenderInputs(victim, self.config.pretrained, tuple(clean), unlabelled)
        output = child_path(self.out / "defended", f"{job['dataset']}-{job['attack']}-seed{seed}-{job['defense']}-{key[:8]}",
                            "defended model folder name")
        self._log(f"{job['defense']} on {victim.name} ({job['clean_rows']} clean rows, ρ {job['ratio']})")
        started = time.perf_counter()
        result = run_defense(job["defense"], inputs, output, self._defense_settings(plan, seed, job["ratio"]), force=True)
        seconds = time.perf_counter() - started
        search = result.report.get("ratio_search") or {}
        extra = {"defense_seconds": round(seconds, 1), "chosen_ratio": search.get("chosen_ratio"),
                 "epur_tokens": [t["token"] for t in (result.report.get("epur") or {}).get("tokens", [])[:10]]}
        if result.report.get("epur_check"):
            extra["epur_cleared"] = result.report["epur_check"]["cleared"]
        chosen = chosen_candidate(search) or {}
        if "trigger_probe" in chosen:  # flagged_word_guard: the chosen candidate's probe
            extra["trigger_probe"] = chosen["trigger_probe"]
        added = self._measure(key, job["defense"], result.model, load_card(victim), data, job, extra)
        if not self.config.keep_models and result.model != victim:
            shutil.rmtree(result.model, ignore_errors=True)
        return added

    def _defense_settings(self, plan: DatasetPlan, seed: int, ratio: Ratio):
        from ..defenses import DefenseSettings

        d = self.config.defense
        return DefenseSettings(
            train=TrainConfig(epochs=d.epochs, lr=d.lr, batch_size=d.batch_size, max_length=plan.max_length,
                              seed=seed, progress=self.bars),
            ratio=None if ratio in ("auto", "-") else float(ratio),
            search=RatioSearchConfig(candidates=d.candidates, tolerance=d.tolerance, stop_hopeless=d.stop_hopeless,
                                     budget=d.search_budget),
            epur=EpurConfig(top_n=d.epur_top_n), distill=d.distill, distill_rows=d.distill_rows,
            distill_epochs=d.distill_epochs, augment_rows=d.augment_rows, augment_epochs=d.augment_epochs,
            calibrate_teacher=d.calibrate_teacher, distill_state_weight=d.distill_state_weight, prune_ratio=d.prune_ratio,
            stop_when_epur_clears=d.stop_when_epur_clears,
            flagged_word_guard=d.flagged_word_guard, head=d.head, variant=dict(d.variant))

    def _measure(self, key: str, defense: str, model_dir: Path, card, data: DatasetSplits, job: dict, extra: dict) -> int:
        from ..evaluation import evaluate
        from ..repair.inputs import read_tokenizer
        from ..tasks.classification import load_classifier

        plan = self.config.datasets[job["dataset"]]
        model = load_classifier(model_dir)
        tokenizer = read_tokenizer(model_dir)
        metrics = evaluate(model, tokenizer, data.test, trigger=card.triggers, target_label=card.target_label,
                           seed=job["seed"], max_length=plan.max_length, segment=card.segment, insertions=card.insertions)
        # undefined rates (no row to count on, e.g. a model that predicts the target for everything) are null
        record = {"key": key, "key_scheme": KEY_SCHEME, **job, "defense": defense, "accuracy": metrics.accuracy,
                  "asr": _defined(metrics.asr), "flip_rate": _defined(metrics.flip_rate), "test_rows": metrics.n,
                  **extra, "provenance": self._provenance(model_dir)}
        append_result(self.results_path, record)
        self.done.add(key)
        self._log(f"  {job['dataset']}/{job['attack']}/seed{job['seed']} {defense}: ACC {100 * metrics.accuracy:.1f} "
                  f"ASR {100 * metrics.asr:.1f} flip {100 * metrics.flip_rate:.1f} ({metrics.n_flip_base} rows)")
        return 1

    def _provenance(self, model_dir: Path) -> dict:
        from accelerate.utils import parse_choice_from_env

        from ..report import library_versions

        # the key does not hold it: a record made under accelerate's bf16 autocast says so here
        precision = parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
        return {"config": self.config.name, "model": str(model_dir), "git": self.commit, "versions": library_versions(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "mixed_precision": precision}

    def _log(self, message: str) -> None:
        if self.progress:
            print(message, flush=True)


def _defined(value: Optional[float]) -> Optional[float]:
    return None if value is None or value != value else value


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


def bench_inputs(config: BenchConfig) -> list[Path]:
    """What a grid reads and must never write into: a local pre-trained model (a folder, or the
    packaged copy a Hub name stands for) and every local data set's files."""
    from ..weights.locate import _packaged_model

    pretrained = _expanded(config.pretrained)
    inputs = [pretrained] if pretrained.exists() else [p for p in [_packaged_model(config.pretrained)] if p is not None]
    for plan in config.datasets.values():
        for name in (plan.train_file, plan.dev_file, plan.test_file):
            if name:
                inputs += [Path(name), _expanded(name)]
    return inputs


def _expanded(name: str) -> Path:
    """``~`` expanded as the readers expand it; ``~nosuchuser`` stays as written."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        return Path(name)


def check_bench_outputs(config: BenchConfig, out: str | os.PathLike, models: Optional[str | os.PathLike] = None) -> None:
    """Refuse, before any work (``--report-only`` too), an ``--out`` or ``--models`` that is, holds
    or lies inside one of the config's inputs, is the current or home folder, a root or above
    them, or exists and is not a folder."""
    inputs = bench_inputs(config)
    for what, folder in (("--out", out), ("--models", models)):
        if folder is None:
            continue
        check_output_apart(folder, inputs, what)
        if Path(folder).exists() and not Path(folder).is_dir():
            raise FinemixError(f"{what} {folder} exists and is not a folder")
    results = Path(out) / "results.jsonl"
    if results.exists() and not results.is_file():  # a FIFO would hang the first append
        raise FinemixError(f"{results} exists and is not a regular file")


def run_bench(config: BenchConfig, out: str | os.PathLike, progress: bool = True, report_only: bool = False,
              models: Optional[str | os.PathLike] = None) -> Path:
    check_bench_outputs(config, out, models)
    out = Path(out)
    if not report_only:
        Bench(config, out, progress, models).run()
    return write_report(config, out)
