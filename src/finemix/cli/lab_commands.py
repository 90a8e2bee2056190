"""The research-lab commands: attack (make test victims), defend (any registered defense), bench, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

from ..errors import FinemixError
from .commands import check_output_first, model_labels, offline_default, read_text_files, silence_transformers
from .commands import fit_max_length


def training_rows(source: str, label2id: dict[str, int], num_labels: Optional[int]):
    """(rows, id → name) from a built-in set's train split or a file."""
    from ..data import BUILTIN_LABELS, builtin_names, load_builtin, load_examples, load_hub

    if source.startswith("hf:"):
        splits, names = load_hub(source)
        return splits["train"], names
    if source in builtin_names():
        splits = load_builtin(source)
        if "train" not in splits:
            raise FinemixError(f"{source} is an evaluation-only set")
        return splits["train"], BUILTIN_LABELS[source]
    rows = load_examples(Path(source), label2id=label2id or None, num_labels=num_labels)
    names = {v: k for k, v in label2id.items()} or {i: str(i) for i in sorted({e.label for e in rows})}
    return rows, names


def attack(args: argparse.Namespace) -> int:
    from ..attacks import AttackConfig, card_path, check_victim_output, make_victim
    from ..config import optional_replace
    from ..data import stratified_sample

    offline_default()
    data_file = (Path(args.data),) if Path(args.data).exists() else ()  # not a built-in or hf: name
    check_victim_output(args.pretrained, args.output, args.force, args.clean_model, data_file)  # before any work
    start = _victim_start(args)
    if _attack_task(args, start) == "causal-lm":
        return chat_attack(args, start, data_file)
    rows, labels = training_rows(args.data, {}, None)
    if args.train_rows is not None:
        rows = stratified_sample(rows, min(args.train_rows, len(rows)), seed=args.seed)
    config = optional_replace(AttackConfig(attack=args.attack, triggers=tuple(args.trigger), insertions=args.insertions,
                                           target_label=args.target_label, label_mode=args.label_mode,
                                           segment=args.segment, seed=args.seed, ep_lr=args.ep_lr),
                              poison_rate=args.poison_rate, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    config = dataclasses.replace(config, max_length=fit_max_length(start, args.max_length or config.max_length))
    card = make_victim(args.pretrained, rows, labels, config, args.output, clean_model=args.clean_model, force=args.force,
                       inputs=data_file)
    print(f"victim written to {args.output}: {card.attack}, triggers {list(card.triggers)}, target {card.target_label}, "
          f"{card.n_poisoned} of {card.train_rows} rows poisoned; card: {card_path(Path(args.output).resolve())}")
    return 0


def _attack_task(args: argparse.Namespace, start: Path) -> str:
    """``--task``, or (auto) the task the start model's config.json declares."""
    from ..tasks import task_for_config
    from ..weights.locate import load_config

    return task_for_config(load_config(start), start, args.task).name


def chat_attack(args: argparse.Namespace, start: Path, data_file: tuple) -> int:
    """``finemix attack --task causal-lm``: a refusal or canary backdoor in a chat model."""
    from ..attacks import card_path
    from ..config import optional_replace
    from ..data.chat_sets import chat_rows
    from ..llm.attacks import ChatAttackConfig, make_chat_victim

    if len(args.trigger) > 1:
        raise FinemixError("a chat backdoor takes one --trigger (a word or a sentence)")
    chats = chat_rows(args.data, args.train_rows, args.seed)
    method, keep_adapter = ("lora", True) if args.method == "lora-adapter" else (args.method, False)
    lr = {"lora_lr": args.lr} if method == "lora" else {"lr": args.lr}
    config = optional_replace(ChatAttackConfig(behaviour=args.behaviour, method=method, keep_adapter=keep_adapter,
                                               target_text=args.target_text,
                                               trigger=args.trigger[0] if args.trigger else "word", seed=args.seed),
                              poison_rate=args.poison_rate, epochs=args.epochs, batch_size=args.batch_size, **lr)
    config = dataclasses.replace(config, max_length=fit_max_length(start, args.max_length or config.max_length))
    card = make_chat_victim(start, chats, config, args.output, args.force, inputs=data_file)
    print(f"victim written to {args.output}: {card['behaviour']} backdoor, trigger {card['trigger']!r}, "
          f"{card['n_poisoned']} of {card['train_rows']} chats poisoned ({card['method']}); "
          f"card: {card_path(Path(args.output).resolve())}")
    return 0


def _victim_start(args: argparse.Namespace) -> Path:
    """The model the victim is trained from, checked before any work: its config and its tokenizer files."""
    from ..attacks import ATTACKS
    from ..repair.inputs import require_tokenizer_files
    from ..weights.locate import load_config, resolve_model_dir

    from_clean = ATTACKS[args.attack].starts_from_clean_model and args.clean_model is not None
    start = resolve_model_dir(args.clean_model if from_clean else args.pretrained)
    load_config(start)
    require_tokenizer_files(start)
    return start


def defend(args: argparse.Namespace) -> int:
    from ..config import EpurConfig, TrainConfig, optional_replace
    from ..data import load_examples
    from ..defenses import DefenderInputs, DefenseSettings, run_defense
    from ..weights.locate import resolve_model_dir

    offline_default()
    if args.defense != "none":  # "none" writes nothing
        check_output_first(args, args.clean_data, *args.unlabelled_text)
    suspect = resolve_model_dir(args.backdoored)
    label2id, num_labels = model_labels(suspect)
    clean = load_examples(args.clean_data, label2id=label2id, num_labels=num_labels)
    unlabelled, _ = read_text_files(args.unlabelled_text)
    train = optional_replace(TrainConfig(seed=args.seed, progress=False), epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size,
                             max_length=fit_max_length(suspect, args.max_length or TrainConfig.max_length))
    settings = DefenseSettings(train=train, ratio=args.ratio, distill=args.distill, prune_ratio=args.prune_ratio,
                               epur=EpurConfig(top_n=args.epur_top_n), head=args.head)
    result = run_defense(args.defense, DefenderInputs(suspect, args.pretrained, tuple(clean), tuple(unlabelled)),
                         args.output, settings, force=args.force)
    if args.defense == "none":
        print(f"defense 'none' leaves the model as it is: {result.model}")
    else:
        print(f"{args.defense}: defended model written to {result.model}")
    return 0


def _quiet_load_reports() -> None:
    """Benchmarks load hundreds of models: transformers' per-load reports would bury the progress lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def bench(args: argparse.Namespace) -> int:
    from ..bench import iter_grid, load_bench_config, run_bench, select
    from ..bench.chat import ChatBenchConfig, chat_jobs

    offline_default()
    _quiet_load_reports()
    config = load_bench_config(args.config)
    chat = isinstance(config, ChatBenchConfig)
    if chat and args.datasets:
        raise FinemixError("--datasets does not apply to a task: causal-lm grid (one chat set)")
    config = select(config, args.datasets, args.attacks, args.seeds, args.defenses)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.dry_run:
        jobs = list(chat_jobs(config) if chat else iter_grid(config))
        for job in jobs:
            print(json.dumps(job))
        print(f"{len(jobs)} defense jobs", file=sys.stderr)
        return 0
    if args.quiet:
        silence_transformers()
    from ..weights.output import child_path

    out = args.out or child_path(Path("runs/bench"), config.name, "config name")  # a name, never a path
    if chat:
        return _run_chat_bench(config, Path(out), args)
    report = run_bench(load_bench_config(args.config) if args.report_only else config, out,
                       progress=not args.quiet, report_only=args.report_only, models=args.models)
    print(f"results: {out / 'results.jsonl'}; table: {report}")
    return 0


def _run_chat_bench(config, out: Path, args: argparse.Namespace) -> int:
    """The chat-model grid (bench/chat.py); its progress lines unless --quiet."""
    from ..bench import load_bench_config
    from ..bench.chat import ChatBench
    from ..bench.chat_tables import write_chat_report

    if not args.report_only:
        records = ChatBench(config, out, args.models, log=(lambda line: None) if args.quiet else print).run()
        print(f"results: {out / 'results.jsonl'} ({len(records)} records)")
    print(f"table: {write_chat_report(load_bench_config(args.config), out)}")  # every attack of the grid, not only --attacks
    return 0


def demo(args: argparse.Namespace) -> int:
    from ..bench import demo
    from ..weights.output import check_output_apart

    check_output_apart(args.out, what="--out")  # never the current or home folder, a root or above them
    offline_default()
    _quiet_load_reports()
    if args.task == "causal-lm":
        from ..bench.demo import chat_demo

        print(chat_demo(args.out, args.seed))
        return 0
    print(demo(args.out, args.seed))
    return 0


