"""The ``finemix`` argument parser: one sub-command per job."""

from __future__ import annotations

import argparse

from .options import (add_epur_options, add_mix_options, add_pair, add_training_options, add_unlabelled_text,
                      nonempty_name_or_path, nonempty_path, ratio)
from .options import max_length, non_negative_int, positive_int, seed


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as the CLI's other errors: one line ``finemix: error: ...`` and exit status 2
    (argparse prints the whole usage block first). Sub-command parsers inherit the class."""

    def error(self, message: str):
        command = self.prog[len("finemix"):].strip() if self.prog.startswith("finemix") else self.prog
        where = f"{command}: " if command else ""
        message = " ".join(str(message).split())
        self.exit(2, f"finemix: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="finemix", description="Remove backdoors from fine-tuned language models (Fine-mixing, E-PUR).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_purify_parser(commands)
    _add_mix_parser(commands)
    _add_epur_parser(commands)
    _add_evaluate_parser(commands)
    from .lab_parsers import add_attack_parser, add_bench_parsers, add_defend_parser

    add_attack_parser(commands)
    add_defend_parser(commands)
    add_bench_parsers(commands)
    return parser


def _add_purify_parser(commands) -> None:
    purify = commands.add_parser(
        "purify", help="E-PUR, mix with the pre-trained weights, fine-tune on clean rows",
        description="E-PUR, then Fine-mixing: mix θ_B with θ_Pre and fine-tune on the clean set. Options not listed "
                    "here (ρ candidates and tolerance, E-PUR's f_min, distillation and calibration) go in --config.")
    add_pair(purify)
    purify.add_argument("--clean-data", required=True, type=nonempty_path, metavar="FILE",
                        help="clean labelled rows: CSV/TSV/JSONL with text, label (and text_b for pairs); for a causal "
                             "LM, JSONL chats (instruction, optional input, response; or messages)")
    purify.add_argument("--task", choices=("auto", "classification", "causal-lm"), default="auto",
                        help="what the model does (default: read from its config.json architectures)")
    add_unlabelled_text(purify)
    purify.add_argument("--config", type=nonempty_path, metavar="FILE",
                        help="YAML file of further purify settings (mix, search, epur, train, distill, distill_rows, "
                             "distill_epochs, calibrate_teacher, calibrate_student, distill_state_weight, finetune); unknown keys are refused; "
                             "command-line options win")
    purify.add_argument("--ratio", type=ratio, default=None, metavar="auto|ρ",
                        help="fraction of fine-tuned weights kept; 'auto' (default) searches the candidates on held-out clean rows")
    purify.add_argument("--no-epur", dest="epur", action="store_false", default=True, help="skip E-PUR")
    purify.add_argument("--epur-top-n", type=non_negative_int, default=None, metavar="N", help="embedding rows E-PUR resets (default 200)")
    add_mix_options(purify, sel_scope=False)
    add_training_options(purify, "fine-tuning epochs (default 5 on labelled rows only; 3 over labelled and unlabelled "
                                 "rows when distilling)")
    purify.add_argument("--quiet", action="store_true", help="no progress bars")
    purify.add_argument("--strict", action="store_true",
                        help="exit with status 3 (the output still written) when the verdict has warnings: no held-out "
                             "check was possible, no ρ candidate was accepted, or the repair lost held-out accuracy")


def _add_mix_parser(commands) -> None:
    mix = commands.add_parser("mix", help="only mix θ_B with θ_Pre (no fine-tuning)",
                              description="Write θ_Mix = m ⊙ θ_B + (1 − m) ⊙ θ_Pre, streamed tensor by tensor.")
    add_pair(mix)
    mix.add_argument("--ratio", type=ratio, required=True, metavar="ρ", help="fraction of fine-tuned weights kept, in [0, 1]")
    add_mix_options(mix)
    mix.add_argument("--shard-size-mb", type=positive_int, default=2048, help="maximum size of one output shard (default 2048)")
    mix.add_argument("--granularity", choices=("element", "element-svd", "component"), default="element",
                     help="a LoRA adapter as --backdoored (a folder with adapter_config.json): mix the entries of its "
                          "update Δ = s·B·A and write a merged model (element, default) or an adapter refactored by "
                          "truncated SVD at its rank, with the reconstruction error in the report (element-svd); or "
                          "keep whole rank-1 components and write an adapter of the same rank (component)")


def _add_epur_parser(commands) -> None:
    epur = commands.add_parser("epur", help="only reset abnormally moved word embeddings",
                               description="E-PUR: reset the N embedding rows with the highest drift / log(frequency).")
    add_pair(epur)
    epur.add_argument("--clean-data", type=nonempty_path, metavar="FILE", help="clean rows whose texts give token frequencies")
    add_epur_options(epur)


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="clean accuracy, and ASR / flip rate for a trigger",
                                   description="Clean accuracy; with --trigger, ASR and flip rate on rows whose label is not the target.")
    evaluate.add_argument("--model", required=True, type=nonempty_name_or_path, metavar="DIR", help="model folder or Hub name")
    evaluate.add_argument("--data", required=True, type=nonempty_name_or_path, metavar="FILE",
                          help="labelled test rows (CSV/TSV/JSONL); for a chat model, JSONL chats or a built-in chat "
                               "set's test split (triviaqa, nq_open)")
    evaluate.add_argument("--trigger", help="word or sentence inserted at a seeded random word position")
    evaluate.add_argument("--target-label", help="the attacker's label (id or name); required with --trigger")
    evaluate.add_argument("--target-text", metavar="TEXT",
                          help="chat models: the attacker's fixed answer (strict ASR: the output contains it; "
                               "lenient: a refusal, or --marker); required with --trigger")
    evaluate.add_argument("--marker", metavar="TEXT", help="chat models: a canary's distinctive part for lenient ASR")
    evaluate.add_argument("--max-new-tokens", type=positive_int, default=32,
                          help="chat models: greedy answer length (default 32)")
    evaluate.add_argument("--segment", choices=("auto", "text", "text_b"), default="auto",
                          help="where the trigger goes for pairs (auto: text_b when present)")
    evaluate.add_argument("--seed", type=seed, default=0, help="seed for trigger positions")
    evaluate.add_argument("--batch-size", type=positive_int, default=64, help="rows per forward pass (default 64)")
    evaluate.add_argument("--max-length", type=max_length, default=128,
                          help="max tokens per row, at least 8 (default 128; at most the model's positions)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
