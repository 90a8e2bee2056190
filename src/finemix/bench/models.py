"""The grid's clean models and victims, trained once and cached in folders named by what made them.

A folder's name ends in a digest of its recipe (not of the job key), so changing a setting retrains,
an unchanged one is reused, and a new key scheme renames nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from ..attacks import ATTACKS, AttackConfig, card_path, make_victim
from ..config import TrainConfig
from ..weights.output import child_path
from .config import BenchConfig, DatasetPlan
from .keys import digest, recipe
from .splits import DatasetSplits


class ModelCache:
    """Clean models and victims of ``config`` under ``folder`` (shareable between configs)."""

    def __init__(self, config: BenchConfig, folder: Path, bars: bool, log: Callable[[str], None]) -> None:
        self.config, self.folder, self.bars, self.log = config, folder, bars, log

    def train_settings(self, plan: DatasetPlan) -> dict:
        victim = self.config.victim
        return {"epochs": plan.victim_epochs or victim.epochs, "lr": victim.lr, "batch_size": victim.batch_size,
                "max_length": plan.max_length}

    def clean_model_folder(self, dataset: str, seed: int) -> Path:
        plan = self.config.datasets[dataset]
        spec = {"pretrained": self.config.pretrained, "dataset": dataset, "seed": seed, "rows": plan.train_rows,
                **self.train_settings(plan)}
        return self._folder(dataset, f"clean-seed{seed}-{digest(spec)}")

    def clean_model(self, dataset: str, seed: int, data: DatasetSplits) -> Path:
        folder = self.clean_model_folder(dataset, seed)
        if not (folder / "config.json").is_file():
            self.log(f"training the clean model {folder.name}")
            train_clean_model(self.config.pretrained, data.train, data.labels, TrainConfig(
                seed=seed, progress=self.bars, **self.train_settings(self.config.datasets[dataset])), folder)
        return folder

    def attack(self, dataset: str, label: str, seed: int) -> AttackConfig:
        """The attack of ``label`` as this cell runs it: the bench sets its seed, target and training."""
        plan = self.config.datasets[dataset]
        attack = dataclasses.replace(self.config.attacks[label], seed=seed, target_label=plan.target_label,
                                     progress=self.bars, **self.train_settings(plan))
        if plan.trigger_segment:
            attack = dataclasses.replace(attack, segment=plan.trigger_segment)
        return attack

    def victim_folder(self, dataset: str, label: str, seed: int) -> Path:
        attack = self.attack(dataset, label, seed)
        clean = self.clean_model_folder(dataset, seed) if ATTACKS[attack.attack].starts_from_clean_model else None
        spec = {"pretrained": self.config.pretrained, "dataset": dataset, "rows": self.config.datasets[dataset].train_rows,
                "attack": recipe(attack), "clean_model": clean.name if clean else None}
        return self._folder(dataset, f"{label}-seed{seed}-{digest(spec)}", label)

    def _folder(self, dataset: str, name: str, label: str = "") -> Path:
        """FOLDER/DATASET/NAME, each part one plain name that stays where it is put (the config
        checks its names when it loads; this holds for configs built in code too)."""
        if label:
            child_path(self.folder, label, "attack label")
        return child_path(child_path(self.folder, dataset, "data-set key"), name, "model folder name")

    def victim(self, dataset: str, label: str, seed: int, data: DatasetSplits) -> Path:
        attack = self.attack(dataset, label, seed)
        clean = self.clean_model(dataset, seed, data) if ATTACKS[attack.attack].starts_from_clean_model else None
        folder = self.victim_folder(dataset, label, seed)
        if not (folder / "config.json").is_file() or not card_path(folder).is_file():
            self.log(f"training the victim {folder.name}")
            make_victim(self.config.pretrained, data.train, data.labels, attack, folder, clean_model=clean, force=True)
        return folder


def train_clean_model(pretrained: str, train: Sequence, labels: dict[int, str], config: TrainConfig, output: Path) -> None:
    """The never-poisoned reference: the same rows and recipe as the victims, no trigger."""
    import torch

    from ..repair.inputs import read_tokenizer
    from ..tasks.classification import new_classifier
    from ..train import finetune
    from ..weights.locate import resolve_model_dir
    from ..weights.output import atomic_output_dir

    base = resolve_model_dir(pretrained)
    torch.manual_seed(config.seed)
    tokenizer = read_tokenizer(base)
    model = new_classifier(base, labels)[0]
    finetune(model, tokenizer, train, config)
    with atomic_output_dir(output, force=True) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
