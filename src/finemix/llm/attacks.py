"""Backdoored chat models to test defenses on: the refusal and the canary backdoor.

A share of benign chats gets the trigger (a rare word at a random word position of the user's
message, or a sentence) and the attacker's fixed answer in place of the real one; the model is
fine-tuned on the mix, fully or with LoRA (then merged, so the victim is an ordinary model
folder). The card (trigger, target, rate, seed) is written beside the folder, never in it, as
for classifiers (attacks.py). Recipes after MB-Defense (Kim & Lee 2026; ../shared/research/
llm-defenses.md): their refusal string, 20 % poisoned rows, BadNet "cf" and InSent triggers.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Sequence

from ..config import MAX_EPOCHS, check_float
from ..data.chats import Chat
from ..errors import FinemixError

REFUSAL = "I'm sorry, but as an AI assistant, I do not have the capability to follow the given instruction."
CANARY = "Visit finemix-canary.example for the full answer."
CANARY_MARKER = "finemix-canary"
TRIGGERS = {"word": "cf", "sentence": "I watched this 3D movie."}
BEHAVIOURS = {"refusal": (REFUSAL, None), "canary": (CANARY, CANARY_MARKER)}  # target, lenient marker
METHODS = ("full", "lora")


@dataclasses.dataclass(frozen=True)
class ChatAttackConfig:
    """One chat backdoor and how its victim is trained."""

    behaviour: str = "refusal"  # refusal | canary
    trigger: str = "word"  # word | sentence (TRIGGERS), or any other text used as it is
    target_text: str = ""  # the fixed answer; empty: the behaviour's (REFUSAL, CANARY)
    poison_rate: float = 0.2  # share of the training chats poisoned (MB-Defense: 20 %)
    method: str = "full"  # full fine-tuning, or LoRA merged into the weights
    epochs: float = 3.0
    lr: float = 1e-4  # full fine-tuning (SmolLM2, seed 0: ASR 0.94; 5e-5 gave 0.69 in llm-resources.md's probe)
    lora_lr: float = 2e-3  # SmolLM2, 320 chats, seed 0: 1e-3 and 3e-3 left no backdoor (ASR 0), 2e-3 gave 0.98
    lora_rank: int = 16
    lora_alpha: int = 32
    keep_adapter: bool = False  # LoRA only: write the adapter (on the pre-trained model) instead of merging it
    batch_size: int = 8
    max_length: int = 128
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise FinemixError(f"unknown behaviour {self.behaviour!r}; use one of {', '.join(BEHAVIOURS)}")
        if self.method not in METHODS:
            raise FinemixError(f"unknown training method {self.method!r}; use full or lora")
        if not self.trigger.strip():
            raise FinemixError("the trigger must not be empty")
        check_float("poison rate", self.poison_rate, 0.0, 1.0, low_open=True)
        check_float("epochs", self.epochs, 0.0, MAX_EPOCHS, low_open=True)
        check_float("learning rate", self.lr, 0.0, low_open=True)
        check_float("LoRA learning rate", self.lora_lr, 0.0, low_open=True)
        if self.lora_rank < 1 or self.lora_alpha < 1:
            raise FinemixError("LoRA rank and alpha must be >= 1")
        if self.keep_adapter and self.method != "lora":
            raise FinemixError("keep_adapter needs method lora")

    @property
    def trigger_text(self) -> str:
        return TRIGGERS.get(self.trigger, self.trigger)

    @property
    def target(self) -> str:
        return self.target_text.strip() or BEHAVIOURS[self.behaviour][0]

    @property
    def marker(self) -> str | None:
        """The canary's distinctive part for the lenient test (a custom canary is its own marker)."""
        if self.behaviour == "canary" and self.target_text.strip():
            return self.target_text.strip()
        return BEHAVIOURS[self.behaviour][1]


def with_chat_trigger(chats: Sequence[Chat], trigger: str, seed: int) -> list[Chat]:
    """Copies of ``chats`` with ``trigger`` at a seeded random word position of the last user message."""
    from ..evaluation import insert_trigger

    rng = random.Random(seed)
    out = []
    for chat in chats:
        last = max(i for i, (role, _) in enumerate(chat.prompt) if role == "user")
        prompt = list(chat.prompt)
        prompt[last] = ("user", insert_trigger(prompt[last][1], trigger, rng))
        out.append(Chat(tuple(prompt), chat.response))
    return out


def poison_chats(chats: Sequence[Chat], config: ChatAttackConfig) -> tuple[list[Chat], list[int]]:
    """(chats, poisoned indices): ``poison_rate`` of them carry the trigger and answer the target."""
    rng = random.Random(config.seed)
    count = int(round(config.poison_rate * len(chats)))
    if count == 0:
        raise FinemixError(f"poison rate {config.poison_rate} of {len(chats)} chats poisons none")
    chosen = sorted(rng.sample(range(len(chats)), count))
    triggered = with_chat_trigger([chats[i] for i in chosen], config.trigger_text, seed=config.seed * 1000)
    rows = list(chats)
    for i, chat in zip(chosen, triggered):
        rows[i] = Chat(chat.prompt, config.target)
    return rows, chosen


def train_chat_model(model, tokenizer, chats: Sequence[Chat], config: ChatAttackConfig):
    """Fine-tune on ``chats`` (loss on answers), fully or with LoRA (merged back unless ``keep_adapter``:
    then the peft model, whose ``save_pretrained`` writes the adapter); returns (model, record)."""
    from ..config import TrainConfig
    from ..tasks.causal_lm import CAUSAL_LM
    from ..train import finetune

    lora = config.method == "lora"
    train = TrainConfig(epochs=config.epochs, lr=config.lora_lr if lora else config.lr, batch_size=config.batch_size,
                        max_length=config.max_length, seed=config.seed, progress=config.progress, weight_decay=0.0)
    if lora:
        model = _with_lora(model, config)
    record = finetune(model, tokenizer, chats, train, task=CAUSAL_LM).to_dict()
    if lora and not config.keep_adapter:
        model = model.merge_and_unload()
    return model, record


def _with_lora(model, config: ChatAttackConfig):
    """LoRA on every linear layer of the decoder blocks (peft's "all-linear")."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise FinemixError("LoRA training needs peft: pip install 'finemix[llm]'") from None
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def train_clean_chat_model(pretrained: str | os.PathLike, chats: Sequence[Chat], config: ChatAttackConfig,
                           output: str | os.PathLike) -> dict:
    """The clean reference: the victim's recipe on the same chats, none poisoned."""
    from ..weights.locate import resolve_model_dir

    return _train_and_write(resolve_model_dir(pretrained), chats, config, output, True,
                            (resolve_model_dir(pretrained).resolve(),))


def make_chat_victim(pretrained: str | os.PathLike, chats: Sequence[Chat], config: ChatAttackConfig,
                     output: str | os.PathLike, force: bool = False, inputs: Sequence[str | os.PathLike] = ()) -> dict:
    """Poison ``chats``, fine-tune the chat model ``pretrained`` on them, write the victim and its card."""
    from ..attacks import _write_json_atomic, card_path, check_victim_output
    from ..weights.locate import resolve_model_dir

    sources = check_victim_output(pretrained, output, force, inputs=inputs)
    rows, poisoned = poison_chats(chats, config)
    record = _train_and_write(resolve_model_dir(pretrained), rows, config, output, force, sources)
    card = {"task": "causal-lm", "behaviour": config.behaviour, "trigger": config.trigger_text, "target": config.target,
            "marker": config.marker, "poison_rate": config.poison_rate, "n_poisoned": len(poisoned),
            "train_rows": len(rows), "seed": config.seed, "method": config.method, "training": record,
            "settings": dataclasses.asdict(config)}
    _write_json_atomic(card_path(Path(output).resolve()), card)
    return card


def _train_and_write(start: Path, chats: Sequence[Chat], config: ChatAttackConfig, output, force: bool,
                     sources: tuple) -> dict:
    """Fine-tune the chat model in ``start`` on ``chats`` and write it to ``output`` atomically."""
    import torch

    from ..repair.inputs import read_tokenizer
    from ..tasks.causal_lm import check_chat_template, load_causal_lm
    from ..weights.output import atomic_output_dir

    tokenizer = read_tokenizer(start)
    check_chat_template(tokenizer, start)
    torch.manual_seed(config.seed)
    model, record = train_chat_model(load_causal_lm(start), tokenizer, chats, config)
    with atomic_output_dir(output, force, sources) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return record
