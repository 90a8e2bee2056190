"""The chat-model benchmark: a clean model, victims, defenses, judge-free metrics; one JSON line each.

Per seed, the built-in chat set's train split is shuffled once: the first ``train_rows`` chats train
the clean model (never poisoned) and every victim (same recipe, ``poison_rate`` of them poisoned),
the next ``clean_rows`` are the defender's clean chats, disjoint from them; the first ``test_rows``
of the test split measure every model (llm/evaluate.py). Models are cached by what made them, so a
rerun skips finished work and several configs can share ``--models``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

from ..config import EpurConfig, PurifyConfig
from ..errors import FinemixError
from ..llm.attacks import ChatAttackConfig
from ..weights.output import plain_name
from .records import append_result, read_results

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
MB_DEFENSE_RATIO = 0.5  # MB-Defense's Fine-mixing setting (half of the victim's weights kept)

# name -> what it is; the settings are built by chat_defense_config
CHAT_DEFENSES = {
    "none": "no defense (the victim)",
    "finetune": "clean fine-tuning of the victim",
    "mix": f"mixing only, ρ = {MB_DEFENSE_RATIO}, no fine-tuning",
    "finemix-0.5": f"Fine-mixing at MB-Defense's ρ = {MB_DEFENSE_RATIO}",
    "finemix-0.5+epur": f"Fine-mixing at ρ = {MB_DEFENSE_RATIO} with E-PUR",
    "finemix": "Fine-mixing, ρ rule",
    "finemix+epur": "Fine-mixing + E-PUR, ρ rule (purify's defaults)",
    "finemix-adapter": "Fine-mixing in adapter form, ρ rule (components kept, the factors fine-tuned; adapter victims)",
    "mix-element-svd": f"mixing only, ρ = {MB_DEFENSE_RATIO}: Δ masked element-wise, re-factored at the adapter's rank "
                       "(adapter victims)",
    "mix-component": f"mixing only, ρ = {MB_DEFENSE_RATIO}: whole rank-1 components kept (adapter victims)",
}
# mixing-only defenses that write an adapter (finemix mix --granularity ...): defense -> granularity
ADAPTER_MIXES = {"mix-element-svd": "element-svd", "mix-component": "component"}


@dataclasses.dataclass(frozen=True)
class ChatBenchConfig:
    name: str = "llm"
    pretrained: str = SMOLLM2
    data: str = "triviaqa"
    seeds: tuple[int, ...] = (0, 1, 2)
    train_rows: int = 320
    clean_rows: int = 128
    test_rows: int = 100
    attacks: Mapping[str, ChatAttackConfig] = dataclasses.field(
        default_factory=lambda: {"refusal-word": ChatAttackConfig()})
    defenses: tuple[str, ...] = tuple(CHAT_DEFENSES)
    purify: PurifyConfig = PurifyConfig()  # the shipped defaults; the defenses above change ρ, E-PUR, fine-tuning
    max_new_tokens: int = 24
    # Questions (no answers) the defender also holds: the next chats of the shuffle after the clean ones,
    # passed to every defense as unlabelled text (E-PUR counts; chat models distil the suspect's answers)
    unlabelled_prompts: int = 0


def chat_jobs(config: ChatBenchConfig):
    """The (attack, defense, seed) measurements of the grid, as ``--dry-run`` lists them."""
    for seed in config.seeds:
        for label in config.attacks:
            for defense in config.defenses:
                yield {"task": "causal-lm", "attack": label, "defense": defense, "seed": seed}


def chat_defense_config(name: str, base: PurifyConfig, seed: int) -> Optional[PurifyConfig]:
    """The purify settings of a defense (None: "none", the victim itself)."""
    base = dataclasses.replace(base, mix=dataclasses.replace(base.mix, seed=seed),
                               train=dataclasses.replace(base.train, seed=seed, progress=False))
    epur = base.epur or EpurConfig()
    # every defense but finemix-adapter repairs an adapter victim merged, whatever the grid's purify settings say
    base = dataclasses.replace(base, adapter_output="merged")
    fixed = {"ratio_auto": False}
    settings = {
        "none": None,
        "finetune": dict(mix=dataclasses.replace(base.mix, ratio=1.0), epur=None, **fixed),
        "mix": dict(mix=dataclasses.replace(base.mix, ratio=MB_DEFENSE_RATIO), epur=None, finetune=False, **fixed),
        "finemix-0.5": dict(mix=dataclasses.replace(base.mix, ratio=MB_DEFENSE_RATIO), epur=None, **fixed),
        "finemix-0.5+epur": dict(mix=dataclasses.replace(base.mix, ratio=MB_DEFENSE_RATIO), epur=epur, **fixed),
        "finemix": dict(epur=None),
        "finemix+epur": dict(epur=epur),
        "finemix-adapter": dict(epur=None, adapter_output="adapter"),
        **{mix: dict(mix=dataclasses.replace(base.mix, ratio=MB_DEFENSE_RATIO), epur=None, finetune=False, **fixed)
           for mix in ADAPTER_MIXES},
    }[name]
    return None if settings is None else dataclasses.replace(base, **settings)


ANSWER_ROOM = 24  # tokens left for a trigger sentence and the answer when a chat's prompt is measured


def split_chats(config: ChatBenchConfig, seed: int, fits: Callable[[object], bool] = lambda chat: True):
    """(training chats, the defender's clean chats, test questions, the defender's unlabelled prompts) for one seed.

    Chats that fail ``fits`` (a prompt too long for the grid's max length) are skipped after
    the shuffle, so a rare long question does not stop a seed, and the other seeds' splits stay as they were.
    """
    from ..data.chat_sets import chat_split

    train = [chat for chat, _ in chat_split(config.data, "train")]
    random.Random(seed).shuffle(train)
    used = config.train_rows + config.clean_rows
    wanted = used + config.unlabelled_prompts
    train = list(itertools.islice((chat for chat in train if fits(chat)), wanted))
    if len(train) < wanted:
        raise FinemixError(f"{config.data} has {len(train)} chats that fit the grid's max length; it needs {wanted}")
    rows, clean = train[: config.train_rows], train[config.train_rows: used]
    prompts = [chat.user_text for chat in train[used:]]
    return rows, clean, chat_split(config.data, "test")[: config.test_rows], prompts


def prompt_fits(config: ChatBenchConfig):
    """Whether a chat's prompt leaves ANSWER_ROOM tokens within the grid's smallest max length."""
    from transformers import AutoTokenizer

    from ..tasks.causal_lm import prompt_text
    from ..weights.locate import resolve_model_dir

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(config.pretrained))
    limit = min([config.purify.train.max_length, *(a.max_length for a in config.attacks.values())]) - ANSWER_ROOM
    return lambda chat: len(tokenizer(prompt_text(tokenizer, chat), add_special_tokens=False)["input_ids"]) <= limit


# Attack settings added after models were cached: left out of the recipe hash at their default, so the
# models cached before them keep their names (and are not trained again).
_LATER_DEFAULTS = {"keep_adapter": False}


def _recipe(attack: ChatAttackConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(attack).items() if not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])}


def _trained(folder: Path) -> bool:
    """Whether a cached model folder is there: a full model's config, or an adapter's (a LoRA victim kept
    as an adapter has no config.json; without this check it was trained again on every run)."""
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _recipe_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ChatBench:
    def __init__(self, config: ChatBenchConfig, out: Path, models: Optional[Path] = None,
                 log: Callable[[str], None] = print) -> None:
        self.config, self.out, self.log = config, Path(out), log
        self.models = Path(models) if models else self.out / "models"
        self.results = self.out / "results.jsonl"

    def run(self) -> list[dict]:
        done = {r["key"] for r in read_results(self.results)}
        fits = prompt_fits(self.config)
        for seed in self.config.seeds:
            rows, clean, questions, prompts = split_chats(self.config, seed, fits)
            for label, attack in self.config.attacks.items():
                attack = dataclasses.replace(attack, seed=seed)
                clean_model = self._clean_model(rows, attack)
                victim = self._victim(rows, attack, label, seed)
                self._measure(done, seed, label, "clean model", clean_model, attack, questions)
                for defense in self.config.defenses:
                    self._defend(done, seed, label, defense, victim, clean, attack, questions, prompts)
        return read_results(self.results)

    def _clean_model(self, rows, attack: ChatAttackConfig) -> Path:
        """The never-poisoned model trained with ``attack``'s recipe (method, budget), shared by attacks that share it."""
        from ..llm.attacks import train_clean_chat_model

        recipe = {k: v for k, v in _recipe(attack).items()
                  if k not in ("behaviour", "trigger", "target_text", "poison_rate", "progress")}
        folder = self._folder(f"clean-seed{attack.seed}", recipe)
        if not _trained(folder):
            self.log(f"training the clean chat model ({attack.method}, seed {attack.seed})")
            train_clean_chat_model(self.config.pretrained, rows, attack, folder)
        return folder

    def _victim(self, rows, attack: ChatAttackConfig, label: str, seed: int) -> Path:
        from ..llm.attacks import make_chat_victim

        folder = self._folder(f"{plain_name(label, 'attack label')}-seed{seed}", _recipe(attack))
        if not _trained(folder):
            self.log(f"training victim {label} (seed {seed})")
            make_chat_victim(self.config.pretrained, rows, attack, folder, force=True)
        return folder

    def _folder(self, name: str, recipe: dict) -> Path:
        """A cached model's folder, named by what made it (pretrained, data, rows, recipe)."""
        from ..weights.output import child_path

        digest = _recipe_hash(self.config.pretrained, self.config.data, self.config.train_rows, recipe)
        return child_path(self.models, f"{name}-{digest}", "model folder")

    def _defend(self, done, seed, label, defense, victim, clean, attack, questions, prompts) -> None:
        from ..weights.output import child_path

        key = f"{label}|{defense}|{seed}|{self.config.clean_rows}"
        if key in done:
            return
        settings = chat_defense_config(defense, self.config.purify, seed)
        folder, report, seconds = victim, None, 0.0
        if settings is not None:
            folder = child_path(self.out / "defended", f"{label}-{defense}-seed{seed}", "defended model folder")
            self.log(f"{defense} on {label} (seed {seed})")
            started = time.perf_counter()
            report = self._repair(defense, victim, clean, folder, settings, prompts)
            seconds = round(time.perf_counter() - started, 1)
        extra = {"purify_seconds": seconds}
        if report and "ratio_search" not in report:  # a mixing-only adapter defense: no search, no E-PUR
            extra.update(chosen_ratio=settings.mix.ratio, granularity=report["mixing"]["granularity"],
                         kept_fraction=report["mixing"]["kept_fraction"])
            error = report["adapter"].get("reconstruction_error")
            if error:
                extra["reconstruction_error"] = {k: error[k] for k in ("mean", "max")}
        elif report:
            teacher = (report.get("unlabelled_text") or {}).get("teacher")
            if teacher:
                extra["distilled_answers"] = teacher["answers_kept"]
            extra.update(chosen_ratio=report["ratio_search"]["chosen_ratio"], verdict=report["verdict"]["status"],
                         epur_top=[t["token"] for t in (report.get("epur") or {}).get("tokens", [])[:5]])
        self._measure(done, seed, label, defense, folder, attack, questions, key, extra)

    def _repair(self, defense, victim, clean, folder, settings: PurifyConfig, prompts) -> dict:
        """The report of one defense on ``victim``, its output written to ``folder``."""
        from ..repair.adapter_mix import mix_adapter
        from ..repair.suspect import purify_suspect
        from ..weights.adapter import is_adapter

        if (defense in ADAPTER_MIXES or settings.adapter_output == "adapter") and not is_adapter(victim):
            raise FinemixError(f"defense {defense} works on a LoRA adapter; the victim {victim.name} is a full model")
        if defense in ADAPTER_MIXES:
            return mix_adapter(victim, self.config.pretrained, folder, settings.mix, ADAPTER_MIXES[defense], force=True)
        return purify_suspect(victim, self.config.pretrained, clean, folder, settings, unlabelled_texts=prompts,
                              force=True, task="causal-lm")

    def _measure(self, done, seed, label, defense, folder, attack, questions, key=None, extra=None) -> None:
        from ..llm.evaluate import ChatBackdoor, evaluate_chat_model, load_chat_tokenizer
        from ..tasks.causal_lm import load_chat_model

        key = key or f"{label}|{defense}|{seed}"
        if key in done:
            return
        started = time.perf_counter()
        backdoor = ChatBackdoor(attack.trigger_text, attack.target, attack.marker)
        result = evaluate_chat_model(load_chat_model(folder), load_chat_tokenizer(folder), questions, backdoor,
                                     seed=seed, max_new_tokens=self.config.max_new_tokens, max_length=256)
        record = {"key": key, "task": "causal-lm", "dataset": self.config.data, "attack": label, "defense": defense,
                  "seed": seed, "clean_rows": self.config.clean_rows if defense not in ("clean model", "none") else None,
                  **result, **(extra or {}), "eval_seconds": round(time.perf_counter() - started, 1)}
        append_result(self.results, record)
        done.add(key)
        self.log(json.dumps({k: v for k, v in record.items() if k != "examples"}))

