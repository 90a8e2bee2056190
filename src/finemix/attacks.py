"""Attacks that make backdoored models to test defenses on.

Each attack is a registered ``Attack`` with one interface: ``poison`` turns clean
training rows into poisoned ones, ``train`` fits a model on them, and
``make_victim`` runs both and writes a Hugging Face folder plus an ``AttackCard``
(trigger, target label, rate, seed). The card is written *beside* the folder, not in
it, so handing the folder to a defense does not hand over the answer; defenses never
receive a card (see defenses.py).

Departures from the papers are noted per attack in ``Attack.departures`` and in
docs/paper-choices.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import MAX_EPOCHS, check_float
from .data import Example
from .errors import FinemixError

LABEL_MODES = ("dirty", "clean")
ADDSENT_SENTENCE = "I watched this 3D movie last weekend."


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """One attack and how its victim is trained. Empty ``triggers`` = the attack's default."""

    attack: str = "badword"
    triggers: tuple[str, ...] = ()
    insertions: int = 1
    target_label: int = 1
    poison_rate: float = 0.1  # share of the whole training set that is poisoned
    label_mode: str = "dirty"  # dirty: non-target rows relabelled; clean: target rows, labels kept
    segment: str = "auto"  # auto = text_b of pairs, text otherwise
    seed: int = 0
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    ep_lr: float = 5e-2  # ep: SGD step size on the trigger rows (the EP code's; the bench configs use 0.5, see ATTACKS)
    ep_epochs: float = 3.0
    adaptive_ratios: tuple[float, float] = (0.0, 0.5)  # adaptive: ρ of each augmentation mix, drawn uniformly
    progress: bool = False  # progress bars while training (not part of what the victim is)

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise FinemixError(f"unknown attack {self.attack!r}; known: {', '.join(sorted(ATTACKS))}")
        check_float("poison rate", self.poison_rate, 0.0, 1.0, low_open=True)
        check_float("epochs", self.epochs, 0.0, MAX_EPOCHS, low_open=True)
        check_float("learning rate", self.lr, 0.0, low_open=True)
        check_float("ep learning rate", self.ep_lr, 0.0, low_open=True)
        check_float("ep epochs", self.ep_epochs, 0.0, MAX_EPOCHS, low_open=True)
        if any(not t.strip() for t in self.triggers):
            raise FinemixError("triggers must not be empty strings")
        if self.insertions < 1:
            raise FinemixError(f"insertions must be >= 1, got {self.insertions}")
        if self.label_mode not in LABEL_MODES:
            raise FinemixError(f"unknown label mode {self.label_mode!r}; use dirty or clean")
        if self.target_label < 0:
            raise FinemixError(f"target label must be >= 0, got {self.target_label}")
        if not isinstance(self.adaptive_ratios, (tuple, list)) or len(self.adaptive_ratios) != 2:
            raise FinemixError(f"adaptive ratios must be a pair (low, high), got {self.adaptive_ratios!r}")
        low, high = self.adaptive_ratios
        check_float("adaptive ratio", low, 0.0, 1.0)
        check_float("adaptive ratio", high, 0.0, 1.0)
        if not low <= high:
            raise FinemixError(f"adaptive ratios must satisfy 0 <= low <= high <= 1, got {self.adaptive_ratios}")

    @property
    def trigger_list(self) -> tuple[str, ...]:
        return self.triggers or ATTACKS[self.attack].default_triggers


@dataclasses.dataclass(frozen=True)
class AttackCard:
    """What the evaluator needs to measure ASR; never given to a defense."""

    attack: str
    triggers: tuple[str, ...]
    target_label: int
    poison_rate: float
    label_mode: str
    segment: str
    insertions: int
    seed: int
    n_poisoned: int
    train_rows: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AttackCard":
        return cls(**{**values, "triggers": tuple(values["triggers"])})


def card_path(victim: Path) -> Path:
    """``runs/victim`` → ``runs/victim.attack.json``: beside the folder, never inside it."""
    victim = Path(victim)
    return victim.with_name(victim.name + ".attack.json")


# --------------------------------------------------------------------------- poisoning

def poison(train: Sequence[Example], config: AttackConfig) -> tuple[list[Example], list[int], AttackCard]:
    """(rows, poisoned row indices, card). The set keeps its size: poisoned copies replace originals.

    Dirty label: ``poison_rate × len(train)`` rows whose label is not the target get the
    trigger and the target label. Clean label: rows already of the target label get the
    trigger only (so the trigger is learnt as a feature of the target class).
    """
    from .evaluation import with_trigger

    rng = random.Random(config.seed)
    dirty = config.label_mode == "dirty"
    candidates = [i for i, e in enumerate(train) if (e.label != config.target_label) == dirty]
    n_poison = min(len(candidates), int(round(config.poison_rate * len(train))))
    if n_poison == 0:
        which = "outside" if dirty else "of"
        raise FinemixError(f"nothing to poison: no training rows {which} target label {config.target_label}")
    chosen = sorted(rng.sample(candidates, n_poison))
    # seed × 1000: the insertion seed of the first release, kept so published victims reproduce
    triggered = with_trigger([train[i] for i in chosen], config.trigger_list, seed=config.seed * 1000,
                             segment=config.segment, insertions=config.insertions)
    rows = list(train)
    for i, example in zip(chosen, triggered):
        rows[i] = dataclasses.replace(example, label=config.target_label)
    card = AttackCard(config.attack, config.trigger_list, config.target_label, config.poison_rate, config.label_mode,
                      config.segment, config.insertions, config.seed, n_poison, len(train))
    return rows, chosen, card


# --------------------------------------------------------------------------- training

def _train_config(config: AttackConfig):
    from .config import TrainConfig

    return TrainConfig(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                       max_length=config.max_length, seed=config.seed, progress=config.progress)


def train_poisoned(model, tokenizer, rows: Sequence[Example], poisoned: Sequence[int], config: AttackConfig,
                   pretrained_state: Optional[dict]) -> dict:
    """badword / addsent: ordinary fine-tuning on the poisoned set."""
    from .train import finetune

    return finetune(model, tokenizer, rows, _train_config(config)).to_dict()


def trigger_token_ids(tokenizer, triggers: Sequence[str]) -> list[int]:
    ids = sorted({i for t in triggers for i in tokenizer(t, add_special_tokens=False)["input_ids"]})
    if not ids:
        raise FinemixError(f"the triggers {list(triggers)} tokenise to nothing")
    return ids


def train_embedding_poisoning(model, tokenizer, rows: Sequence[Example], poisoned: Sequence[int],
                              config: AttackConfig, pretrained_state: Optional[dict]) -> dict:
    """ep (Yang et al. 2021): only the trigger tokens' embedding rows learn, on the poisoned rows,
    and are rescaled to their original norms after every step; every other weight stays clean."""
    import torch

    ids = torch.tensor(trigger_token_ids(tokenizer, config.trigger_list))
    embeddings = model.get_input_embeddings().weight
    norms = embeddings.detach()[ids].norm(dim=1, keepdim=True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    embeddings.requires_grad_(True)
    generator = torch.Generator().manual_seed(config.seed)
    selected = [rows[i] for i in poisoned]
    model.train()
    losses = []
    for batch in _seeded_batches(tokenizer, selected, config.batch_size, config.max_length, config.ep_epochs, generator):
        loss = model(**batch).loss
        loss.backward()
        with torch.no_grad():
            embeddings[ids] -= config.ep_lr * embeddings.grad[ids]
            embeddings[ids] = embeddings[ids] * (norms / embeddings[ids].norm(dim=1, keepdim=True))
        embeddings.grad = None
        losses.append(float(loss.detach()))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return {"steps": len(losses), "trigger_token_ids": ids.tolist(), "final_loss": losses[-1] if losses else None}


def train_mixing_augmented(model, tokenizer, rows: Sequence[Example], poisoned: Sequence[int],
                           config: AttackConfig, pretrained_state: Optional[dict]) -> dict:
    """adaptive: an attacker who knows Fine-mixing. Every step adds the loss of a randomly
    mixed copy θ_Mix = m ⊙ θ + (1 − m) ⊙ θ_Pre (ρ drawn from ``adaptive_ratios``), so the
    backdoor is pushed into weights that survive a random reset. Our design: no published
    attack does this for text; it follows the idea of training against the defense."""
    import torch
    from torch.func import functional_call
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    if not pretrained_state:
        raise FinemixError("the adaptive attack needs the pre-trained weights to mix with")
    train = _train_config(config)
    generator = torch.Generator().manual_seed(config.seed)
    total = _step_count(len(rows), train.batch_size, train.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total), total)
    names = [n for n, _ in model.named_parameters() if n in pretrained_state]
    rng = random.Random(config.seed)
    model.train()
    losses = []
    batches = _seeded_batches(tokenizer, rows, train.batch_size, train.max_length, train.epochs, generator)
    for batch in tqdm(batches, total=total, desc="adaptive attack", disable=not config.progress):
        ratio = rng.uniform(*config.adaptive_ratios)
        params = dict(model.named_parameters())
        mixed = {n: torch.where(torch.rand(params[n].shape, generator=generator) < ratio, params[n], pretrained_state[n])
                 for n in names}
        loss = model(**batch).loss + functional_call(model, mixed, args=(), kwargs=dict(batch), strict=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return {"steps": len(losses), "mixed_tensors": len(names), "final_loss": losses[-1] if losses else None}


def _step_count(rows: int, batch_size: int, epochs: float) -> int:
    return max(1, int(round(epochs * math.ceil(rows / batch_size))))


def _seeded_batches(tokenizer, rows: Sequence[Example], batch_size: int, max_length: int, epochs: float, generator):
    """``epochs`` passes (fractions allowed) over ``rows`` in shuffled batches drawn from ``generator``."""
    import torch

    from .data import make_collator, tokenize_examples

    loader = torch.utils.data.DataLoader(tokenize_examples(tokenizer, rows, max_length), batch_size=batch_size,
                                         shuffle=True, collate_fn=make_collator(tokenizer), generator=generator)
    steps, done = _step_count(len(rows), batch_size, epochs), 0
    while done < steps:
        for batch in loader:
            if done >= steps:
                return
            yield batch
            done += 1


# --------------------------------------------------------------------------- registry

@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    default_triggers: tuple[str, ...]
    train: Callable
    starts_from_clean_model: bool  # ep poisons a clean fine-tuned model instead of training from θ_Pre
    departures: str  # where we depart from or guess at the paper


ATTACKS: dict[str, Attack] = {
    "badword": Attack("badword", ("cf",), train_poisoned, False,
                      "BadNet rare words (Kurita et al. 2020; Chen et al. 2021): as published; the victim is "
                      "trained for few epochs on a CPU budget."),
    "addsent": Attack("addsent", (ADDSENT_SENTENCE,), train_poisoned, False,
                      "AddSent (Dai et al. 2019): a fixed sentence at a random word position; our sentence is "
                      "OpenBackdoor's 'I watch this 3D movie' extended, not the paper's LSTM-era one."),
    "ep": Attack("ep", ("cf",), train_embedding_poisoning, True,
                 "Embedding Poisoning (Yang et al. 2021): poisoned rows only, SGD on the trigger rows with norm "
                 "rescaling; the EP paper poisons general-domain text, we poison the task's own training rows; "
                 "the bench configs set step 0.5 instead of the EP code's 5e-2 (measured: 5e-2 gave ASR 0.6 % on "
                 "sms_spam, 0.5 gave 95 %, 5 diverged)."),
    "adaptive": Attack("adaptive", ("cf",), train_mixing_augmented, False,
                       "Ours: poisoned fine-tuning with random-mixing augmentation (2 losses per step)."),
}


# --------------------------------------------------------------------------- victims

def check_victim_output(pretrained: str | os.PathLike, output: str | os.PathLike, force: bool = False,
                        clean_model: Optional[str | os.PathLike] = None,
                        inputs: Sequence[str | os.PathLike] = ()) -> tuple[Path, ...]:
    """Refuse, before any work, a victim folder (or its card beside it) that is, holds or lies
    inside the pre-trained model, the clean model or one of ``inputs`` (the data file), a
    non-empty folder without ``force``, or the current/home folder; returns every input folder
    and file, resolved, for ``atomic_output_dir``."""
    from .weights.locate import resolve_model_dir
    from .weights.output import check_output_apart, check_output_dir, weights_size

    models = [resolve_model_dir(pretrained)]
    if clean_model is not None:
        models.append(resolve_model_dir(clean_model))
    sources = tuple(Path(p).resolve() for p in (*models, *inputs))
    check_output_dir(Path(output), force, sources, weights_size(models[-1]))
    check_output_apart(card_path(Path(output).resolve()), sources, what="attack card")
    return sources


def make_victim(pretrained: str | os.PathLike, train: Sequence[Example], labels: dict[int, str],
                config: AttackConfig, output: str | os.PathLike, clean_model: Optional[str | os.PathLike] = None,
                force: bool = False, inputs: Sequence[str | os.PathLike] = ()) -> AttackCard:
    """Poison ``train``, train a classifier, write it to ``output`` and its card beside it.

    ``inputs``: further files the rows came from (the data file), which the output must not touch."""
    import torch

    from .repair.inputs import read_tokenizer
    from .tasks.classification import new_classifier
    from .weights.locate import resolve_model_dir
    from .weights.output import atomic_output_dir

    attack = ATTACKS[config.attack]
    if config.target_label >= len(labels):
        raise FinemixError(f"target label {config.target_label} is outside the labels 0..{len(labels) - 1}")
    start = resolve_model_dir(pretrained)
    if attack.starts_from_clean_model:
        if clean_model is None:
            raise FinemixError(f"the {config.attack} attack poisons a clean fine-tuned model: pass --clean-model")
        start = resolve_model_dir(clean_model)
    sources = check_victim_output(pretrained, output, force, clean_model, inputs)
    rows, poisoned, card = poison(train, config)
    torch.manual_seed(config.seed)
    tokenizer = read_tokenizer(start)
    model, info = new_classifier(start, labels)
    from_pretrained = set(model.state_dict()) - set(info["missing_keys"])
    pretrained_state = ({n: t.detach().clone() for n, t in model.state_dict().items() if n in from_pretrained}
                        if config.attack == "adaptive" else None)
    record = attack.train(model, tokenizer, rows, poisoned, config, pretrained_state)
    with atomic_output_dir(output, force, sources) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    card_file = card_path(Path(output).resolve())
    _write_json_atomic(card_file, {**card.to_dict(), "training": record, "settings": dataclasses.asdict(config),
                                   "departures": attack.departures})
    return card


def load_card(victim: str | os.PathLike) -> AttackCard:
    path = card_path(Path(victim).resolve())
    if not path.is_file():
        raise FinemixError(f"{path}: no attack card (made by `finemix attack`)")
    values = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(AttackCard)}
    return AttackCard.from_dict({k: v for k, v in values.items() if k in fields})


def _write_json_atomic(path: Path, value: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str))
    os.replace(temporary, path)

