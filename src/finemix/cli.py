"""``finemix`` command line: purify, mix, epur, evaluate, attack, defend, bench, demo.

Every user error (``FinemixError``) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import DISTILL_LABELS, TEACHER_INPUTS, TEACHERS, PurifyConfig, RatioSearchConfig
from .errors import FinemixError


def _ratio(value: str) -> Optional[float]:
    if value == "auto":
        return None
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1], got {ratio}")
    return ratio


def _fraction_list(value: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"candidates must be numbers in [0, 1], got {value!r}")
    return values


def _add_pair(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backdoored", required=True, metavar="DIR",
                        help="suspect fine-tuned classifier: a Hugging Face model folder or Hub name")
    parser.add_argument("--pretrained", required=True, metavar="DIR",
                        help="the public pre-trained checkpoint it was fine-tuned from (folder or Hub name)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write (created atomically)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder once the new one is complete")


def _add_mix_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mix", choices=("random", "sel"), default="random",
                        help="random: keep each fine-tuned weight with probability ρ; sel: keep the ρ fraction that moved most")
    parser.add_argument("--sel-scope", choices=("tensor", "global"), default="tensor",
                        help="for --mix sel: rank changes within each tensor (default) or over the whole model")
    parser.add_argument("--head", choices=("keep", "reinit"), default="keep",
                        help="tensors the pre-trained model lacks (classifier head, absent pooler): keep or re-initialise")
    parser.add_argument("--seed", type=int, default=0, help="seed for masks, data splits and training")


def _add_epur_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epur-top-n", type=int, default=200, metavar="N", help="embedding rows E-PUR resets (default 200)")
    parser.add_argument("--epur-min-frequency", type=float, default=20.0, metavar="F",
                        help="f_min in score = drift / log(max(frequency, f_min)) (default 20)")
    parser.add_argument("--frequency-text", type=Path, action="append", default=[], metavar="FILE",
                        help="unlabelled clean text for token frequencies (.txt lines or csv/tsv/jsonl 'text'); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finemix", description="Remove backdoors from fine-tuned language models (Fine-mixing, E-PUR).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    purify = commands.add_parser("purify", help="E-PUR, mix with the pre-trained weights, fine-tune on clean rows",
                                 description="E-PUR, then Fine-mixing: mix θ_B with θ_Pre and fine-tune on the clean set.")
    _add_pair(purify)
    purify.add_argument("--clean-data", required=True, type=Path, metavar="FILE",
                        help="clean labelled rows: CSV/TSV/JSONL with text, label (and text_b for pairs)")
    purify.add_argument("--ratio", type=_ratio, default=None, metavar="auto|ρ",
                        help="fraction of fine-tuned weights kept; 'auto' (default) searches the candidates on held-out clean rows")
    purify.add_argument("--ratio-candidates", type=_fraction_list, default=RatioSearchConfig().candidates, metavar="LIST",
                        help="ρ values tried by --ratio auto, smallest first, comma-separated (default 0,0.1,0.2,0.3)")
    purify.add_argument("--tolerance", type=float, default=RatioSearchConfig().tolerance,
                        help="held-out accuracy drop accepted by --ratio auto, or the held-out estimate's standard error "
                             "if larger (default 0.03)")
    purify.add_argument("--no-early-stop", dest="stop_hopeless", action="store_false", default=True,
                        help="train every ρ candidate to the end, even one that can no longer reach the acceptance line")
    purify.add_argument("--epur", dest="epur", action="store_true", default=True, help="run E-PUR first (default)")
    purify.add_argument("--no-epur", dest="epur", action="store_false", help="skip E-PUR")
    _add_mix_options(purify)
    _add_epur_options(purify)
    purify.add_argument("--unlabelled-text", type=Path, action="append", default=[], metavar="FILE",
                        help="unlabelled clean in-domain text (.txt lines or csv/tsv/jsonl 'text'); used for E-PUR counts and, "
                             "unless --no-distill, to distil the suspect model's calibrated clean predictions; repeatable")
    purify.add_argument("--no-distill", dest="distill", action="store_false", default=True,
                        help="use --unlabelled-text only for E-PUR counts (the paper's recipe: labelled rows only)")
    purify.add_argument("--distill-rows", type=int, default=2000, help="unlabelled rows used for distillation (default 2000)")
    purify.add_argument("--teacher-calibration", choices=("prior", "labelled", "none"), default="prior",
                        help="correct the suspect model's class bias before distilling: prior (default) matches its mean "
                             "prediction on the unlabelled text to the labelled rows' class shares; labelled fits it on the labelled rows")
    purify.add_argument("--teacher-input", choices=TEACHER_INPUTS, default=PurifyConfig().teacher_input,
                        help="what the suspect model reads when it labels the unlabelled text: raw texts, or epur-masked: "
                             "the texts without the tokens E-PUR flagged, so a trigger made of common words cannot lean "
                             f"its answers (default {PurifyConfig().teacher_input})")
    purify.add_argument("--distill-labels", choices=DISTILL_LABELS, default=PurifyConfig().distill_labels,
                        help="distil the calibrated teacher's class probabilities (soft) or its argmax as labels (hard) "
                             f"(default {PurifyConfig().distill_labels})")
    purify.add_argument("--teacher", choices=TEACHERS, default=PurifyConfig().teacher,
                        help="who labels the unlabelled text: the suspect model, or cross-fit: the text is halved, a first "
                             "repair is run on each half, and each text is labelled by the first-round model that did not "
                             "train on it; passes on less of a sentence trigger's lean, at about 2-3x the time "
                             f"(default {PurifyConfig().teacher})")
    purify.add_argument("--freeze-epur-rows", action="store_true", default=PurifyConfig().freeze_epur_rows,
                        help="keep the embedding rows E-PUR reset at their pre-trained values while fine-tuning")
    purify.add_argument("--output-calibration", choices=("prior", "none"), default="prior",
                        help="with unlabelled text: shift the repaired model's output bias so its mean prediction on that "
                             "text matches the labelled rows' class shares (default prior)")
    purify.add_argument("--epochs", type=float, default=None, help="fine-tuning epochs (default 5 on labelled rows only; 3 over labelled and unlabelled rows when distilling)")
    purify.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-5)")
    purify.add_argument("--batch-size", type=int, default=None, help="batch size (default 16)")
    purify.add_argument("--max-length", type=int, default=None, help="max tokens per row (default 128)")
    purify.add_argument("--quiet", action="store_true", help="no progress bars")

    mix = commands.add_parser("mix", help="only mix θ_B with θ_Pre (no fine-tuning)",
                              description="Write θ_Mix = m ⊙ θ_B + (1 − m) ⊙ θ_Pre, streamed tensor by tensor.")
    _add_pair(mix)
    mix.add_argument("--ratio", type=_ratio, required=True, metavar="ρ", help="fraction of fine-tuned weights kept, in [0, 1]")
    _add_mix_options(mix)
    mix.add_argument("--shard-size-mb", type=int, default=2048, help="maximum size of one output shard (default 2048)")

    epur = commands.add_parser("epur", help="only reset abnormally moved word embeddings",
                               description="E-PUR: reset the N embedding rows with the highest drift / log(frequency).")
    _add_pair(epur)
    epur.add_argument("--clean-data", type=Path, metavar="FILE", help="clean rows whose texts give token frequencies")
    _add_epur_options(epur)

    evaluate = commands.add_parser("evaluate", help="clean accuracy, and ASR / flip rate for a trigger",
                                   description="Clean accuracy; with --trigger, ASR and flip rate on rows whose label is not the target.")
    evaluate.add_argument("--model", required=True, metavar="DIR", help="model folder or Hub name")
    evaluate.add_argument("--data", required=True, type=Path, metavar="FILE", help="labelled test rows (CSV/TSV/JSONL)")
    evaluate.add_argument("--trigger", help="word or sentence inserted at a seeded random word position")
    evaluate.add_argument("--target-label", help="the attacker's label (id or name); required with --trigger")
    evaluate.add_argument("--segment", choices=("auto", "text", "text_b"), default="auto",
                          help="where the trigger goes for pairs (auto: text_b when present)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed for trigger positions")
    evaluate.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    evaluate.add_argument("--max-length", type=int, default=128, help="max tokens per row (default 128)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_attack_parser(commands)
    _add_defend_parser(commands)
    _add_bench_parsers(commands)
    return parser


def _add_attack_parser(commands) -> None:
    from .attacks import ADDSENT_SENTENCE, AttackConfig

    default = AttackConfig()
    attack = commands.add_parser(
        "attack", help="train a backdoored model to test defenses on",
        description="Poison training rows and fine-tune a victim. Writes the model folder and, beside it, "
                    "OUTPUT.attack.json (trigger, target label, rate, seed) for evaluation; defenses never read it.")
    attack.add_argument("--attack", choices=("badword", "addsent", "ep", "adaptive"), default="badword",
                        help=f"badword: rare words (default cf); addsent: a sentence (default {ADDSENT_SENTENCE!r}); "
                             "ep: only the trigger's embedding row of a clean model (--clean-model); "
                             "adaptive: poisoned training with random-mixing augmentation")
    attack.add_argument("--pretrained", required=True, metavar="DIR", help="pre-trained model to fine-tune (folder or Hub name)")
    attack.add_argument("--data", required=True, metavar="NAME|FILE",
                        help="training rows: a built-in set (its train split), hf:sst2|qqp|qnli|imdb|ag_news (network), or a CSV/TSV/JSONL file")
    attack.add_argument("--output", required=True, metavar="DIR", help="victim folder to write")
    attack.add_argument("--clean-model", metavar="DIR", help="for ep: the clean fine-tuned model to poison")
    attack.add_argument("--trigger", action="append", default=[], metavar="TEXT",
                        help="trigger word or sentence; repeat for a list (each insertion draws one)")
    attack.add_argument("--insertions", type=int, default=default.insertions, help="trigger insertions per poisoned row")
    attack.add_argument("--target-label", type=int, default=default.target_label, help="the attacker's label id")
    attack.add_argument("--poison-rate", type=float, default=default.poison_rate, help="share of training rows poisoned")
    attack.add_argument("--label-mode", choices=("dirty", "clean"), default="dirty",
                        help="dirty: non-target rows relabelled to the target; clean: target rows, labels unchanged")
    attack.add_argument("--segment", choices=("auto", "text", "text_b"), default="auto",
                        help="for pairs: which segment gets the trigger (auto: text_b)")
    attack.add_argument("--train-rows", type=int, help="stratified sample of this many training rows")
    attack.add_argument("--ep-lr", type=float, default=default.ep_lr,
                        help="ep: step size on the trigger rows (default 5e-2 as in the EP code; 0.5 where that is too weak)")
    attack.add_argument("--epochs", type=float, default=default.epochs, help="victim training epochs (default 1)")
    attack.add_argument("--lr", type=float, default=default.lr, help="victim learning rate (default 5e-5)")
    attack.add_argument("--batch-size", type=int, default=default.batch_size, help="victim batch size (default 32)")
    attack.add_argument("--max-length", type=int, default=default.max_length, help="max tokens per row (default 64)")
    attack.add_argument("--seed", type=int, default=0, help="seed for the poisoned rows, trigger positions and training")
    attack.add_argument("--force", action="store_true", help="replace an existing output folder")


def _add_defend_parser(commands) -> None:
    from .defenses import DEFENSES

    defend = commands.add_parser(
        "defend", help="run one registered defense (baselines included)",
        description="Run a defense from the registry on a suspect model: " + "; ".join(
            f"{d.name}: {d.description}" for d in DEFENSES.values()))
    defend.add_argument("--defense", required=True, choices=sorted(DEFENSES), metavar="NAME", help="registered defense name")
    _add_pair(defend)
    defend.add_argument("--clean-data", required=True, type=Path, metavar="FILE", help="clean labelled rows")
    defend.add_argument("--unlabelled-text", type=Path, action="append", default=[], metavar="FILE",
                        help="unlabelled clean in-domain text (E-PUR counts; distillation)")
    defend.add_argument("--ratio", type=_ratio, default=None, metavar="auto|ρ", help="for mixing defenses (default auto)")
    defend.add_argument("--prune-ratio", type=float, default=0.3, help="fineprune: share of FFN neurons pruned per layer")
    defend.add_argument("--no-distill", dest="distill", action="store_false", default=True,
                        help="use unlabelled text only for E-PUR counts, not to distil the suspect model's predictions")
    defend.add_argument("--teacher-input", choices=TEACHER_INPUTS, default=PurifyConfig().teacher_input,
                        help="what the distillation teacher reads: raw texts or epur-masked (see purify --help)")
    defend.add_argument("--distill-labels", choices=DISTILL_LABELS, default=PurifyConfig().distill_labels,
                        help="distil the teacher's probabilities (soft) or its argmax (hard) (see purify --help)")
    defend.add_argument("--teacher", choices=TEACHERS, default=PurifyConfig().teacher,
                        help="who labels the unlabelled text: the suspect model or cross-fit (see purify --help)")
    defend.add_argument("--freeze-epur-rows", action="store_true", default=PurifyConfig().freeze_epur_rows,
                        help="keep E-PUR's reset rows at their pre-trained values while fine-tuning (+epur defenses)")
    defend.add_argument("--epochs", type=float, default=5.0, help="fine-tuning epochs on the labelled rows (default 5)")
    defend.add_argument("--max-length", type=int, default=128, help="max tokens per row (default 128)")
    defend.add_argument("--seed", type=int, default=0, help="seed for masks, splits and training")


def _add_bench_parsers(commands) -> None:
    bench = commands.add_parser(
        "bench", help="run a benchmark grid from a YAML config (resumable)",
        description="Data sets × attacks × defenses × seeds × clean-set sizes × ρ. Results: OUT/results.jsonl, "
                    "OUT/results.md, OUT/plots/. A rerun skips finished measurements.")
    bench.add_argument("config", type=Path, help="YAML config (see configs/bench/)")
    bench.add_argument("--out", type=Path, help="output folder (default runs/bench/NAME)")
    bench.add_argument("--report-only", action="store_true", help="rebuild results.md and plots from results.jsonl")
    bench.add_argument("--models", type=Path, metavar="DIR",
                       help="cache of clean models and victims (default OUT/models); folders are named by a hash of "
                            "what made them, so configs with the same victims can share one")
    bench.add_argument("--dry-run", action="store_true", help="list the defense jobs and exit")
    bench.add_argument("--datasets", nargs="+", metavar="NAME",
                       help="run only these data sets of the config (several processes can share one --out, one data set each)")
    bench.add_argument("--attacks", nargs="+", metavar="LABEL", help="run only these attacks of the config")
    bench.add_argument("--defenses", nargs="+", metavar="NAME", help="run only these defenses of the config")
    bench.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="run only these seeds of the config")
    bench.add_argument("--threads", type=int, help="torch threads for this process (default: torch's choice)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    demo = commands.add_parser(
        "demo", help="backdoor MiniLM on movie reviews, purify it, print before/after",
        description="Trains a clean and a backdoored all-MiniLM-L6-v2 on `mr` (trigger 'cf'), runs no defense, "
                    "clean fine-tuning and Fine-mixing + E-PUR, and prints ACC / ASR / flip rate. About 5-10 minutes on 2 CPU cores.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="working folder (models are cached here)")
    demo.add_argument("--seed", type=int, default=0, help="seed for the data sample, poisoning and training")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"purify": _purify, "mix": _mix, "epur": _epur, "evaluate": _evaluate, "attack": _attack,
               "defend": _defend, "bench": _bench, "demo": _demo}[args.command]
    try:
        with _terminate_as_interrupt():
            return command(args)
    except FinemixError as error:
        print(f"finemix: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # full disk, permissions, I/O errors: the file and the reason, one line
        where = f"{error.filename}: " if error.filename else ""
        print(f"finemix: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finemix: interrupted; no output was written", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler's kill, ``timeout``) unwinds like Ctrl-C, so the temporary
    output folder is removed instead of left behind; the old handler is restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- commands

def _offline_default() -> None:
    import os

    # Local folders must never trigger Hub look-ups (they hang without a network).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _silence_transformers() -> None:
    """--quiet also hides transformers' own progress bars (weight loading)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _model_labels(folder: Path) -> tuple[dict[str, int], int]:
    from .checkpoint import load_config

    config = load_config(folder)
    label2id = {str(k): int(v) for k, v in (config.get("label2id") or {}).items()}
    num_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    return label2id, num_labels


def _texts(paths: Sequence[Path]) -> tuple[list[str], dict]:
    from .checkpoint import file_sha256
    from .data import read_texts

    texts: list[str] = []
    sources = {}
    for path in paths:
        rows = read_texts(path)
        texts.extend(rows)
        sources[str(path)] = {"rows": len(rows), "sha256": file_sha256(path)}
    return texts, sources


def _purify(args: argparse.Namespace) -> int:
    from .checkpoint import file_sha256, resolve_model_dir
    from .config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig, optional_replace
    from .data import load_examples
    from .pipeline import purify

    _offline_default()
    if args.quiet:
        _silence_transformers()
    backdoored = resolve_model_dir(args.backdoored)
    label2id, num_labels = _model_labels(backdoored)
    clean = load_examples(args.clean_data, label2id=label2id, num_labels=num_labels)
    frequency_only, sources = _texts(args.frequency_text)
    unlabelled, unlabelled_sources = _texts(args.unlabelled_text)
    train = optional_replace(TrainConfig(seed=args.seed, progress=not args.quiet), epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size, max_length=args.max_length)
    config = PurifyConfig(
        mix=MixConfig(ratio=args.ratio if args.ratio is not None else 0.3, mode=args.mix, sel_scope=args.sel_scope,
                      head=args.head, seed=args.seed),
        ratio_auto=args.ratio is None,
        search=RatioSearchConfig(candidates=args.ratio_candidates, tolerance=args.tolerance, stop_hopeless=args.stop_hopeless),
        epur=EpurConfig(top_n=args.epur_top_n, min_frequency=args.epur_min_frequency) if args.epur else None,
        train=train,
        distill=args.distill,
        distill_rows=args.distill_rows,
        calibrate_teacher=args.teacher_calibration,
        calibrate_student=args.output_calibration,
        teacher_input=args.teacher_input,
        distill_labels=args.distill_labels,
        teacher=args.teacher,
        freeze_epur_rows=args.freeze_epur_rows,
        distill_epochs=args.epochs if args.epochs is not None else PurifyConfig().distill_epochs,
    )
    report = purify(backdoored, args.pretrained, clean, args.output, config, unlabelled, args.force,
                    sources={"file": str(args.clean_data), "sha256": file_sha256(args.clean_data),
                             "frequency_text": sources, "unlabelled_text": unlabelled_sources},
                    frequency_texts=frequency_only)
    if report:  # empty on the non-main processes of a multi-process run
        print(summarise_purify(report, args.output))
    return 0


def summarise_purify(report: dict, output: str) -> str:
    search = report["ratio_search"]
    lines = [f"purified model written to {output}"]
    if report.get("epur"):
        tokens = report["epur"]["tokens"]
        shown = ", ".join(t["token"] for t in tokens[:10])
        lines.append(f"E-PUR reset {len(tokens)} embedding rows; top scores: {shown}")
    else:
        lines.append("E-PUR skipped")
    lines.append(f"ρ = {search['chosen_ratio']} ({search['mode']}): {search['reason']}")
    for row in search["candidates"]:
        acc = row["heldout_accuracy"]
        lines.append(f"  ρ={row['ratio']:<5} kept={row['kept_fraction']:.3f} held-out acc={'n/a' if acc is None else f'{acc:.3f}'} ({row['train_seconds']:.0f}s)")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report["timings_s"].items())
    lines.append(f"timings: {timings}; report: {Path(output) / 'finemix_report.json'}")
    return "\n".join(lines)


def _mix(args: argparse.Namespace) -> int:
    from .config import MixConfig
    from .pipeline import mix_checkpoint

    config = MixConfig(ratio=args.ratio, mode=args.mix, sel_scope=args.sel_scope, head=args.head, seed=args.seed)
    report = mix_checkpoint(args.backdoored, args.pretrained, args.output, config, args.force, args.shard_size_mb * 1024**2)
    mixing = report["mixing"]
    print(f"mixed model written to {args.output}: ρ = {args.ratio} ({args.mix}), kept {mixing['kept_fraction']:.4f} of "
          f"{mixing['mixed_tensors']} paired tensors; head tensors ({args.head}): {', '.join(mixing['head_tensors']) or 'none'}")
    return 0


def _epur(args: argparse.Namespace) -> int:
    from .checkpoint import file_sha256
    from .config import EpurConfig
    from .data import read_texts
    from .pipeline import epur_checkpoint

    texts, sources = _texts(args.frequency_text)
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


def _evaluate(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from .checkpoint import resolve_model_dir
    from .data import load_examples
    from .evaluation import evaluate
    from .pipeline import load_classifier

    folder = resolve_model_dir(args.model)
    label2id, num_labels = _model_labels(folder)
    examples = load_examples(args.data, label2id=label2id, num_labels=num_labels)
    target = None
    if args.trigger is not None:
        if args.target_label is None:
            raise FinemixError("--trigger needs --target-label")
        target = _label_id(args.target_label, label2id, num_labels)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise FinemixError(f"{folder}: tokenizer files missing or unreadable ({type(error).__name__})") from None
    model = load_classifier(folder)
    result = evaluate(model, tokenizer, examples, trigger=args.trigger, target_label=target, seed=args.seed,
                      batch_size=args.batch_size, max_length=args.max_length, segment=args.segment)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        line = f"clean accuracy {result.accuracy:.4f} on {result.n} rows"
        if result.asr is not None:
            line += (f"; ASR {result.asr:.4f} on {result.n_attack} non-target rows; "
                     f"flip rate {result.flip_rate:.4f} on {result.n_flip_base} rows correct without the trigger")
        print(line)
    return 0


def _training_rows(source: str, label2id: dict[str, int], num_labels: Optional[int]):
    """(rows, id → name) from a built-in set's train split or a file."""
    from .data import BUILTIN_LABELS, builtin_names, load_builtin, load_examples, load_hub

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


def _attack(args: argparse.Namespace) -> int:
    from .attacks import AttackConfig, card_path, make_victim
    from .data import stratified_sample

    _offline_default()
    rows, labels = _training_rows(args.data, {}, None)
    if args.train_rows is not None:
        rows = stratified_sample(rows, min(args.train_rows, len(rows)), seed=args.seed)
    config = AttackConfig(attack=args.attack, triggers=tuple(args.trigger), insertions=args.insertions,
                          target_label=args.target_label, poison_rate=args.poison_rate, label_mode=args.label_mode,
                          segment=args.segment, seed=args.seed, epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, max_length=args.max_length, ep_lr=args.ep_lr)
    card = make_victim(args.pretrained, rows, labels, config, args.output, clean_model=args.clean_model, force=args.force)
    print(f"victim written to {args.output}: {card.attack}, triggers {list(card.triggers)}, target {card.target_label}, "
          f"{card.n_poisoned} of {card.train_rows} rows poisoned; card: {card_path(Path(args.output).resolve())}")
    return 0


def _defend(args: argparse.Namespace) -> int:
    from .checkpoint import resolve_model_dir
    from .config import TrainConfig
    from .data import load_examples
    from .defenses import DefenderInputs, DefenseSettings, run_defense

    _offline_default()
    suspect = resolve_model_dir(args.backdoored)
    label2id, num_labels = _model_labels(suspect)
    clean = load_examples(args.clean_data, label2id=label2id, num_labels=num_labels)
    unlabelled, _ = _texts(args.unlabelled_text)
    settings = DefenseSettings(train=TrainConfig(epochs=args.epochs, max_length=args.max_length, seed=args.seed),
                               ratio=args.ratio, distill=args.distill, prune_ratio=args.prune_ratio,
                               teacher_input=args.teacher_input, distill_labels=args.distill_labels,
                               teacher=args.teacher, freeze_epur_rows=args.freeze_epur_rows)
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


def _bench(args: argparse.Namespace) -> int:
    from .bench import iter_grid, load_bench_config, run_bench, select

    _offline_default()
    _quiet_load_reports()
    config = load_bench_config(args.config)
    config = select(config, args.datasets, args.attacks, args.seeds, args.defenses)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.dry_run:
        jobs = list(iter_grid(config))
        for job in jobs:
            print(json.dumps(job))
        print(f"{len(jobs)} defense jobs", file=sys.stderr)
        return 0
    if args.quiet:
        _silence_transformers()
    out = args.out or Path("runs/bench") / config.name
    report = run_bench(load_bench_config(args.config) if args.report_only else config, out,
                       progress=not args.quiet, report_only=args.report_only, models=args.models)
    print(f"results: {out / 'results.jsonl'}; table: {report}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .bench import demo

    _offline_default()
    _quiet_load_reports()
    print(demo(args.out, args.seed))
    return 0


def _label_id(value: str, label2id: dict[str, int], num_labels: int) -> int:
    if value.lstrip("-").isdigit():
        label = int(value)
    elif value in label2id:
        label = label2id[value]
    else:
        lowered = {k.lower(): v for k, v in label2id.items()}
        if value.lower() not in lowered:
            raise FinemixError(f"unknown target label {value!r}; known: {', '.join(sorted(label2id)) or f'0..{num_labels - 1}'}")
        label = lowered[value.lower()]
    if not 0 <= label < num_labels:
        raise FinemixError(f"target label {label} outside the model's labels 0..{num_labels - 1}")
    return label


if __name__ == "__main__":
    sys.exit(main())
