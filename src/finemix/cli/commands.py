"""The defender's commands: purify, mix, epur, evaluate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from ..errors import FinemixError


def offline_default() -> None:
    import os

    # Local folders must never trigger Hub look-ups (they hang without a network).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def silence_transformers() -> None:
    """--quiet also hides transformers' own progress bars (weight loading)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def model_labels(folder: Path) -> tuple[dict[str, int], int]:
    from ..weights.locate import load_config

    config = load_config(folder)
    label2id = {str(k): int(v) for k, v in (config.get("label2id") or {}).items()}
    num_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    return label2id, num_labels


def fit_max_length(folder: Path, max_length: int) -> int:
    """--max-length clipped to the positions the model has: a longer row would crash its forward
    pass. At the defaults this changes nothing for ordinary models (512 positions)."""
    from ..weights.locate import load_config, position_limit

    limit = position_limit(load_config(folder))
    return max_length if limit is None else min(max_length, limit)


def read_text_files(paths: Sequence[Path]) -> tuple[list[str], dict]:
    from ..data import read_texts
    from ..weights.hashing import file_sha256

    texts: list[str] = []
    sources = {}
    for path in paths:
        rows = read_texts(path)
        texts.extend(rows)
        sources[str(path)] = {"rows": len(rows), "sha256": file_sha256(path)}
    return texts, sources


def check_output_first(args: argparse.Namespace, *files: Path | None) -> None:
    """Before any work: refuse an ``--output`` that is, holds or lies inside an input (both model
    folders and the data ``files``), a non-empty folder without ``--force``, or the current or
    home folder (with ``--force`` the old output is deleted)."""
    from ..weights.locate import resolve_model_dir
    from ..weights.output import check_output_dir

    models = [resolve_model_dir(name) for name in (args.backdoored, args.pretrained)]
    check_output_dir(Path(args.output), args.force, (*models, *(f for f in files if f is not None)))


def purify_config(args: argparse.Namespace):
    """Defaults, then ``--config FILE``, then the options given on the command line."""
    import dataclasses

    from ..config import EpurConfig, PurifyConfig, load_purify_config, optional_replace

    config = load_purify_config(args.config) if args.config else PurifyConfig()
    train = optional_replace(config.train, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             max_length=args.max_length)
    train = dataclasses.replace(train, seed=args.seed, progress=not args.quiet)
    mix = dataclasses.replace(config.mix, mode=args.mix, head=args.head, seed=args.seed,
                              ratio=args.ratio if args.ratio is not None else config.mix.ratio)
    epur = config.epur if args.epur else None
    if epur is not None and args.epur_top_n is not None:
        epur = dataclasses.replace(epur or EpurConfig(), top_n=args.epur_top_n)
    changes = {"train": train, "mix": mix, "epur": epur, "ratio_auto": args.ratio is None and config.ratio_auto}
    if args.epochs is not None:
        changes["distill_epochs"] = changes["augment_epochs"] = args.epochs
    return dataclasses.replace(config, **changes)


def purify(args: argparse.Namespace) -> int:
    import dataclasses

    from ..data import load_examples
    from ..data.chats import load_chats
    from ..repair.suspect import purify_suspect
    from ..tasks import task_for_config
    from ..weights.adapter import is_adapter
    from ..weights.hashing import file_sha256
    from ..weights.locate import load_config, resolve_model_dir

    offline_default()
    if args.quiet:
        silence_transformers()
    check_output_first(args, args.clean_data, args.config, *args.unlabelled_text)
    config = purify_config(args)
    # an adapter's model is its base: the task, labels and context length come from there
    model_dir = resolve_model_dir(args.pretrained if is_adapter(args.backdoored) else args.backdoored)
    task = task_for_config(load_config(model_dir), model_dir, args.task).name
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_length=fit_max_length(model_dir, config.train.max_length)))
    if task == "causal-lm":
        clean = load_chats(args.clean_data)
    else:
        label2id, num_labels = model_labels(model_dir)
        clean = load_examples(args.clean_data, label2id=label2id, num_labels=num_labels)
    unlabelled, unlabelled_sources = read_text_files(args.unlabelled_text)
    sources = {"file": str(args.clean_data), "sha256": file_sha256(args.clean_data), "unlabelled_text": unlabelled_sources}
    if args.config:
        sources["config_file"] = {"path": str(args.config), "sha256": file_sha256(args.config)}
    report = purify_suspect(args.backdoored, args.pretrained, clean, args.output, config, unlabelled, args.force,
                            sources=sources, task=task)
    if not report:  # empty on the non-main processes of a multi-process run
        return 0
    print(summarise_purify(report, args.output))
    return verdict_status(report.get("verdict") or {}, args.strict)


STRICT_EXIT = 3  # the output is written, but its verdict has warnings and --strict was given


def verdict_status(verdict: dict, strict: bool) -> int:
    """Print the verdict's warnings (stderr); the exit status: 0, or 3 under ``--strict`` with warnings."""
    import sys

    for warning in verdict.get("warnings", []):
        print(f"finemix: warning: {warning}", file=sys.stderr)
    if verdict.get("warnings"):
        from ..repair.verdict import ADVICE

        print(f"finemix: warning: {ADVICE}", file=sys.stderr)
        return STRICT_EXIT if strict else 0
    return 0


def summarise_purify(report: dict, output: str) -> str:
    search = report["ratio_search"]
    adapter = report.get("output_form") == "adapter"
    lines = [f"purified {'adapter' if adapter else 'model'} written to {output}"]
    chosen = report.get("inputs", {}).get("backdoored", {}).get("adapter_output")
    if chosen:
        lines.append(chosen["why"])
    if report.get("epur"):
        tokens = report["epur"]["tokens"]
        shown = ", ".join(t["token"] for t in tokens[:10])
        lines.append(f"E-PUR: {report['epur']['note']}" if report["epur"].get("note")
                     else f"E-PUR reset {len(tokens)} embedding rows; top scores: {shown}")
    else:
        lines.append("E-PUR skipped")
    lines.append(f"ρ = {search['chosen_ratio']} ({search['mode']}{', components' if adapter else ''}): {search['reason']}")
    loss = search.get("measure", "").startswith("negated")
    for row in search["candidates"]:
        value = row["heldout_accuracy"]
        shown = "n/a" if value is None else f"{-value:.3f}" if loss else f"{value:.3f}"
        kept = (f"components={row['kept_components']}/{row['components']}" if adapter
                else f"kept={row['kept_fraction']:.3f}")
        probe = row.get("trigger_probe")
        probed = ("; trigger probe: " + ", ".join(f"'{w}' {100 * r:.0f} %" for w, r in probe["flip"].items())
                  + (" (survived)" if probe["surviving"] else " (cleared)")) if probe else ""
        lines.append(f"  ρ={row['ratio']:<5} {kept} held-out {'loss' if loss else 'acc'}={shown} "
                     f"({row['train_seconds']:.0f}s){probed}")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.get("timings_s", {}).items())
    lines.append(f"{'timings: ' + timings + '; ' if timings else ''}report: {Path(output) / 'finemix_report.json'}")
    return "\n".join(lines)


def mix(args: argparse.Namespace) -> int:
    from ..config import MixConfig
    from ..repair.steps import mix_checkpoint

    check_output_first(args)
    config = MixConfig(ratio=args.ratio, mode=args.mix, sel_scope=args.sel_scope, head=args.head, seed=args.seed)
    from ..weights.adapter import is_adapter

    if is_adapter(args.backdoored):
        return _mix_adapter(args, config)
    if args.granularity != "element":
        raise FinemixError("--granularity component needs a LoRA adapter as --backdoored (a folder with adapter_config.json)")
    report = mix_checkpoint(args.backdoored, args.pretrained, args.output, config, args.force, args.shard_size_mb * 1024**2)
    mixing = report["mixing"]
    print(f"mixed model written to {args.output}: ρ = {args.ratio} ({args.mix}), kept {mixing['kept_fraction']:.4f} of "
          f"{mixing['mixed_tensors']} paired tensors; head tensors ({args.head}): {', '.join(mixing['head_tensors']) or 'none'}")
    return 0


def _mix_adapter(args: argparse.Namespace, config) -> int:
    from ..repair.adapter_mix import mix_adapter

    if config.mode == "sel" and config.sel_scope == "global":
        raise FinemixError("--sel-scope global is not offered for adapters: use per-tensor sel")
    report = mix_adapter(args.backdoored, args.pretrained, args.output, config, args.granularity, args.force)
    adapter = report["adapter"]
    what = {"element": "a merged model",
            "element-svd": f"an adapter of rank {adapter['rank']} refactored by SVD (relative reconstruction error: mean "
                           f"{adapter.get('reconstruction_error', {}).get('mean')}, max {adapter.get('reconstruction_error', {}).get('max')})",
            "component": f"an adapter of rank {adapter['rank']} ({adapter.get('kept_components')} of "
                         f"{adapter.get('components')} components kept)"}[args.granularity]
    print(f"mixed {what} written to {args.output}: ρ = {args.ratio} ({args.mix}, {args.granularity} granularity), kept "
          f"{report['mixing']['kept_fraction']:.4f} over {report['mixing']['mixed_tensors']} adapted tensors")
    return 0


def epur(args: argparse.Namespace) -> int:
    from ..config import EpurConfig
    from ..data import read_texts
    from ..repair.steps import epur_checkpoint
    from ..weights.hashing import file_sha256

    check_output_first(args, args.clean_data, *args.frequency_text)
    texts, sources = read_text_files(args.frequency_text)
    if args.clean_data is not None:
        rows = read_texts(args.clean_data)
        texts = rows + texts
        sources[str(args.clean_data)] = {"rows": len(rows), "sha256": file_sha256(args.clean_data)}
    if not texts:
        raise FinemixError("E-PUR needs clean text for token frequencies: pass --clean-data or --frequency-text")
    config = EpurConfig(top_n=args.epur_top_n, min_frequency=args.epur_min_frequency)
    report = epur_checkpoint(args.backdoored, args.pretrained, args.output, texts, config, args.force, sources)
    tokens = report["epur"]["tokens"]
    print(f"E-PUR model written to {args.output}: reset {len(tokens)} rows; top: "
          + ", ".join(f"{t['token']} ({t['score']:.3f})" for t in tokens[:10]))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ..data import load_examples
    from ..evaluation import evaluate as run_evaluate
    from ..repair.inputs import check_tokenizer_fits, read_tokenizer
    from ..tasks import task_name_for_config
    from ..tasks.classification import load_classifier
    from ..weights.locate import load_config, resolve_model_dir

    from ..weights.adapter import is_adapter

    folder = resolve_model_dir(args.model)
    if is_adapter(folder) or task_name_for_config(load_config(folder)) == "causal-lm":
        return evaluate_chat(args, folder)
    label2id, num_labels = model_labels(folder)
    examples = load_examples(Path(args.data), label2id=label2id, num_labels=num_labels)
    target = None
    if args.trigger is not None:
        if args.target_label is None:
            raise FinemixError("--trigger needs --target-label")
        target = label_id(args.target_label, label2id, num_labels)
    tokenizer = read_tokenizer(folder)  # refuses a folder without one: accuracy over [UNK]s means nothing
    model = load_classifier(folder)
    check_tokenizer_fits(tokenizer, model.get_input_embeddings().weight.shape[0], folder)
    result = run_evaluate(model, tokenizer, examples, trigger=args.trigger, target_label=target, seed=args.seed,
                          batch_size=args.batch_size, max_length=fit_max_length(folder, args.max_length),
                          segment=args.segment)
    print(json.dumps(result.to_dict()) if args.json else _evaluation_line(result))
    return 0


def evaluate_chat(args: argparse.Namespace, folder: Path) -> int:
    """``finemix evaluate`` on a chat model or a chat model's LoRA adapter (merged into the base its config
    names): utility, and with --trigger the backdoor rates (llm/evaluate.py)."""
    from ..data.chat_sets import CHAT_SETS, chat_split
    from ..data.chats import load_chats
    from ..llm.evaluate import ChatBackdoor, evaluate_chat_model, load_chat_tokenizer
    from ..tasks.causal_lm import load_chat_model
    from ..weights.adapter import adapter_base, is_adapter

    if args.trigger is not None and not args.target_text:
        raise FinemixError("--trigger needs --target-text for a chat model")
    questions = (chat_split(args.data, "test") if args.data in CHAT_SETS
                 else [(chat, ()) for chat in load_chats(Path(args.data))])
    tokenizer = load_chat_tokenizer(folder)
    model_folder = adapter_base(folder) if is_adapter(folder) else folder  # its config gives the context length
    backdoor = ChatBackdoor(args.trigger, args.target_text, args.marker) if args.trigger is not None else None
    result = evaluate_chat_model(load_chat_model(folder), tokenizer, questions, backdoor, seed=args.seed,
                                 max_new_tokens=args.max_new_tokens,
                                 max_length=fit_max_length(model_folder, args.max_length), batch_size=args.batch_size)
    print(json.dumps(result) if args.json else
          "; ".join(f"{k} {v}" for k, v in result.items() if k != "examples"))
    return 0


def _evaluation_line(result) -> str:
    line = f"clean accuracy {result.accuracy:.4f} on {result.n} rows"
    if result.asr is not None:
        line += (f"; ASR {result.asr:.4f} on {result.n_attack} non-target rows; "
                 f"flip rate {result.flip_rate:.4f} on {result.n_flip_base} rows correct without the trigger")
    return line


def label_id(value: str, label2id: dict[str, int], num_labels: int) -> int:
    """--target-label: an ASCII id or a label name, read as the data files' labels are."""
    from ..data.examples import label_id as parse_label

    return parse_label(value, label2id, num_labels, "--target-label")
