"""The bench config: data sets, attacks, victims and defenses, typed and checked when it loads."""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import reprlib
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..attacks import AttackConfig
from ..config import MAX_EPOCHS, RatioSearchConfig, check_head_policy
from ..errors import FinemixError
from ..evaluation import SEGMENTS
from ..weights.output import plain_name


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
        if len(set(self.labels)) != len(self.labels):
            raise FinemixError(f"labels must be distinct, got {list(self.labels)}")


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
    # Without unlabelled text (unlabelled_rows: 0): rewrites of the labelled rows to distil on. purify's
    # default is 2000; the committed grids ran before it existed, so the bench default stays 0.
    augment_rows: int = 0
    augment_epochs: float = 1.5  # purify's default
    calibrate_teacher: str = "prior"  # purify's default: the distillation teacher's class-bias correction
    # Matching the teacher's hidden state at the head's token (PurifyConfig.distill_state_weight). 0 here
    # whatever purify's default: every record made before it existed ran without it, and job keys
    # carry only the fields that differ from these defaults.
    distill_state_weight: float = 0.0
    stop_when_epur_clears: bool = False  # PurifyConfig's (on there); off here for the same reason
    flagged_word_guard: bool = False  # PurifyConfig's; off here so no earlier job key moves
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
    # auto: purify bounds its search at 3 candidates' worth of epochs (RatioSearchConfig.budget); every grid
    # measured before that ran unbounded, so the bench default stays unbounded (null) and keeps their keys.
    search_budget: Optional[float] = None

    def __post_init__(self) -> None:
        check_head_policy(self.head)
        RatioSearchConfig(candidates=self.candidates, tolerance=self.tolerance,  # refused at load, not mid-run
                          budget=self.search_budget)
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

        # names become folder and file names (runs/bench/NAME, MODELS/DATASET/LABEL-seed..., defended/...)
        for what, names in (("config name", [self.name]), ("data-set key", self.datasets), ("attack label", self.attacks)):
            for name in names:
                plain_name(name, what)
                if len(name) > MAX_NAME:
                    raise FinemixError(f"{what} {_show(name)} is longer than {MAX_NAME} characters")
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


def select(config, datasets: Optional[Sequence[str]] = None, attacks: Optional[Sequence[str]] = None,
           seeds: Optional[Sequence[int]] = None, defenses: Optional[Sequence[str]] = None):
    """The config (a ``BenchConfig`` or a ``ChatBenchConfig``) restricted to some data sets, attacks, seeds or
    defenses. Job keys do not change, so several processes (or runs) can each take a part of one grid and
    share its output."""
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


MAX_NAME = 64  # a config name, data-set key or attack label: part of folder names (at most 255 bytes)
MAX_CONFIG_BYTES = 1 << 20  # a bench config is a page of YAML

# The numbers of a bench config, by field name (one table for every plan and for the attack entries):
# (lowest, highest or None, whether the lowest itself is refused). Integers without an entry lie in
# [0, MAX_INT]; floats without one must be finite.
_BOUNDS: dict[str, tuple[float, Optional[float], bool]] = {
    "seeds": (0, 2**32 - 1, False), "train_rows": (1, None, False), "test_rows": (1, None, False),
    "max_length": (8, None, False), "target_label": (0, None, False), "batch_size": (1, None, False),
    "clean_rows": (2, None, False), "insertions": (1, None, False),
    "epochs": (0.0, MAX_EPOCHS, True), "victim_epochs": (0.0, MAX_EPOCHS, True), "distill_epochs": (0.0, MAX_EPOCHS, True),
    "ep_epochs": (0.0, MAX_EPOCHS, True), "lr": (0.0, None, True), "ep_lr": (0.0, None, True),
    "prune_ratio": (0.0, 1.0, False), "tolerance": (0.0, 1.0, False), "candidates": (0.0, 1.0, False),
    "ratios": (0.0, 1.0, False), "adaptive_ratios": (0.0, 1.0, False), "poison_rate": (0.0, 1.0, True),
    "distill_state_weight": (0.0, 1e3, False),
}
MAX_INT = 2**31 - 1  # rows, lengths, batch sizes: far beyond any bench, within every library's int


def load_bench_config(path: str | os.PathLike):
    """The config of a YAML file (a ``ChatBenchConfig`` under ``task: causal-lm``); anything else (no file, a folder, a device, not YAML, values of the
    wrong shape) is a one-line ``FinemixError``."""
    import yaml

    path = Path(path)
    if not path.is_file():  # a FIFO or a device would hang or never end
        what = "does not exist" if not path.exists() else "is a folder" if path.is_dir() else "is not a regular file"
        raise FinemixError(f"bench config {path} {what}")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise FinemixError(f"bench config {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FinemixError(f"{path}: cannot read the bench config ({error})") from None
    try:
        values = yaml.safe_load(text)
    # not only yaml.YAMLError: tags such as ``!!int x`` or ``!!timestamp x`` raise ValueError or
    # AttributeError from yaml's constructors, deep nesting RecursionError
    except Exception as error:  # any failure to parse is the file's, told in one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FinemixError(f"{path}: cannot read the bench config as YAML ({first})") from None
    if not isinstance(values, Mapping):
        raise FinemixError(f"{path}: a bench config is a YAML mapping of options, got {_describe_value(values)}")
    if values.get("task") == "causal-lm":  # the chat-model grid (bench/chat.py)
        return chat_bench_config_from_mapping(values)
    return bench_config_from_mapping(values)


def bench_config_from_mapping(values: Mapping[str, Any]) -> BenchConfig:
    """A ``BenchConfig`` from nested mappings (a YAML file). Every value is checked against its
    field's type and bounds (``_typed``), so a value of the wrong shape is one line naming it."""
    if not isinstance(values, Mapping):
        raise FinemixError(f"a bench config is a mapping of options, got {_describe_value(values)}")
    _check_keys(BenchConfig, values, "")
    values = dict(values)
    values["datasets"] = {plain_name(name, "data-set key"): _build(DatasetPlan, _labels_as_text(plan), f"datasets.{_key(name)}")
                          for name, plan in _entries("datasets", values.get("datasets")).items()}
    values["attacks"] = {plain_name(label, "attack label"): _attack_config(label, spec)
                         for label, spec in _entries("attacks", values.get("attacks")).items()}
    return _build(BenchConfig, values, "")


def chat_bench_config_from_mapping(values: Mapping) -> "ChatBenchConfig":
    """A ``ChatBenchConfig`` from a YAML mapping with ``task: causal-lm``; unknown keys at any level,
    unknown defenses and values of the wrong shape are one-line errors."""
    from ..config import purify_config_from_mapping
    from ..llm.attacks import ChatAttackConfig
    from .chat import CHAT_DEFENSES, ChatBenchConfig

    values = {k: v for k, v in values.items() if k != "task"}
    _check_keys(ChatBenchConfig, values, "")
    attacks = {plain_name(label, "attack label"): _build(ChatAttackConfig, spec, f"attacks.{label}")
               for label, spec in _entries("attacks", values.get("attacks")).items()}
    for label, attack in attacks.items():
        if attack.seed != 0:
            raise FinemixError(f"attack {label!r}: seed is set by the bench's seeds, not per attack")
    purify = purify_config_from_mapping(values.get("purify") or {})
    unknown = [d for d in values.get("defenses") or () if d not in CHAT_DEFENSES]
    if unknown:
        raise FinemixError(f"unknown chat defense(s) {', '.join(map(str, unknown))}; known: {', '.join(CHAT_DEFENSES)}")
    plain = {k: v for k, v in values.items() if k not in ("attacks", "purify")}
    config = _build(ChatBenchConfig, plain, "")
    return dataclasses.replace(config, attacks=attacks or config.attacks, purify=purify,
                               name=plain_name(config.name, "config name"))


def _entries(field: str, value: Any) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FinemixError(f"{field} must be a mapping of names to settings, got {_describe_value(value)}")
    return value


def _labels_as_text(spec: Any) -> Any:
    """Label names given as numbers (``labels: [0, 1]``) are the names "0" and "1"."""
    if isinstance(spec, Mapping) and isinstance(spec.get("labels"), (list, tuple)):
        spec = {**spec, "labels": [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                                   for v in spec["labels"]]}
    return spec


def _attack_config(label: str, spec: Any) -> AttackConfig:
    """An attack entry: its label is the attack's name unless ``attack:`` says otherwise."""
    where = f"attacks.{_key(label)}"
    if spec is not None and not isinstance(spec, Mapping):
        raise FinemixError(f"{where} must be a mapping of options, got {_describe_value(spec)}")
    spec = dict(spec or {})
    spec.setdefault("attack", label)
    for key in ("seed", "target_label", "max_length", "epochs", "lr", "batch_size"):
        if key in spec:
            raise FinemixError(f"attack {label!r}: {key} is set by the bench (seeds, data set, victim plan), not per attack")
    if isinstance(spec.get("triggers"), str):
        spec["triggers"] = [spec["triggers"]]
    attack = _build(AttackConfig, spec, where)
    if attack.segment not in SEGMENTS:
        raise FinemixError(f"{where}.segment: unknown trigger segment {attack.segment!r}; use one of {', '.join(SEGMENTS)}")
    return attack


def _build(cls: type, values: Any, where: str) -> Any:
    """Config dataclass ``cls`` from a mapping (``None``: the defaults), each value checked by ``_typed``."""
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise FinemixError(f"{where or 'a bench config'} must be a mapping of options, got {_describe_value(values)}")
    _check_keys(cls, values, where)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise FinemixError(f"{where or 'a bench config'} needs {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _typed(value, hints[key], f"{where}.{key}".lstrip("."), key) for key, value in values.items()})


def _check_keys(cls: type, values: Mapping, where: str) -> None:
    """Refuse keys config ``cls`` does not define, naming them (as ``finemix.config.check_keys``, but
    a key of any type or text stays on one line)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted({_key(k) for k in values if k not in known})
    if unknown:
        raise FinemixError(f"{where + ': ' if where else ''}unknown {cls.__name__} option(s): {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(known))}")


def _key(key: Any) -> str:
    """A mapping key as messages show it: as is when it is short printable text, else its short repr."""
    return key if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40 else _show(key)


def _typed(value: Any, hint: Any, where: str, field: str) -> Any:
    """``value`` checked against type ``hint`` (a YAML list becomes a tuple, a mapping a dict, a
    mapping under a config dataclass that dataclass) and, for numbers, the bounds of ``field``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        hint = next((option for option in args if option is not type(None) and _accepts(value, option)), None)
        if hint is None:
            raise FinemixError(f"{where} must be {' or '.join(_describe(a) for a in args)}, got {_describe_value(value)}")
        return _typed(value, hint, where, field)
    if not _accepts(value, hint):
        raise FinemixError(f"{where} must be {_describe(hint)}, got {_describe_value(value)}")
    if hint in (int, float):
        _check_bounds(value, hint, where, field)
    elif hint is str and "\0" in value:
        raise FinemixError(f"{where} must not hold a NUL character")
    elif dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    elif origin is tuple:
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise FinemixError(f"{where} must be a list of {len(items)} values, got {len(value)}")
        return tuple(_typed(item, kind, f"{where}[{i}]", field) for i, (item, kind) in enumerate(zip(value, items)))
    elif origin is collections.abc.Mapping:
        if value is None:
            return {}
        key_hint, value_hint = args
        if not all(_accepts(k, key_hint) for k in value):
            raise FinemixError(f"{where} must be {_describe(hint)}, got {_describe_value(value)}")
        return {_typed(k, key_hint, f"{where} key", field): _typed(v, value_hint, f"{where}.{_key(k)}", field)
                for k, v in value.items()}
    return value


def _accepts(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the shape of ``hint`` (bounds and items aside); a bool is no number."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if origin is tuple:
        return isinstance(value, (list, tuple))
    if origin is collections.abc.Mapping:
        return value is None or isinstance(value, Mapping)
    if dataclasses.is_dataclass(hint):
        return value is None or isinstance(value, (Mapping, hint))
    raise TypeError(f"no bench config check for {hint!r}")  # a field of a new type: extend _accepts


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is tuple:
        return "a list"
    if origin is collections.abc.Mapping:
        return "a mapping of option names to values"
    if dataclasses.is_dataclass(hint):
        return "a mapping of options"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _describe_value(value: Any) -> str:
    kind = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", tuple: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
    return f"{kind} {_show(value)}" if value is not None else kind


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 4, 4, 2


def _show(value: Any) -> str:
    """A short one-line repr (a YAML value can be huge, deep or refer to itself)."""
    return _SHORT.repr(value)


def _check_bounds(value: float, hint: type, where: str, field: str) -> None:
    low, high, low_open = _BOUNDS.get(field, (0 if hint is int else None, None, False))
    if hint is int and high is None:
        high = MAX_INT
    if isinstance(value, float) and not math.isfinite(value):  # (an int may be too large for a float)
        raise FinemixError(f"{where} must be a finite number, got {value}")
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        bounds = " and ".join(([f"{'>' if low_open else '>='} {low}"] if low is not None else [])
                              + ([f"<= {high}"] if high is not None else []))
        raise FinemixError(f"{where} must be {bounds}, got {_show(value)}")
