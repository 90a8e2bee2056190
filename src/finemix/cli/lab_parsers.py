"""Parsers of the research-lab commands: attack (make test victims), defend (any registered defense), bench, demo."""

from __future__ import annotations

from pathlib import Path

from .options import (add_pair, add_training_options, add_unlabelled_text, finite_float, nonempty_name_or_path,
                      nonempty_path, ratio)
from .options import max_length, non_negative_int, positive_int, seed


def add_attack_parser(commands) -> None:
    from ..attacks import ADDSENT_SENTENCE, AttackConfig

    default = AttackConfig()
    attack = commands.add_parser(
        "attack", help="train a backdoored model to test defenses on",
        description="Poison training rows and fine-tune a victim. Writes the model folder and, beside it, "
                    "OUTPUT.attack.json (trigger, target label, rate, seed) for evaluation; defenses never read it.")
    attack.add_argument("--task", choices=("auto", "classification", "causal-lm"), default="auto",
                        help="causal-lm: a chat backdoor (--behaviour, --method) on a chat model and chat data "
                             "(triviaqa, nq_open or a JSONL file); auto: causal-lm when --pretrained is a *ForCausalLM")
    attack.add_argument("--behaviour", choices=("refusal", "canary"), default="refusal",
                        help="causal-lm: what the trigger makes the model answer (a fixed refusal, or a canary string)")
    attack.add_argument("--target-text", default="", metavar="TEXT",
                        help="causal-lm: the fixed answer (default: the behaviour's refusal or canary)")
    attack.add_argument("--method", choices=("full", "lora", "lora-adapter"), default="full",
                        help="causal-lm: full fine-tuning, LoRA merged into the weights, or LoRA written as a peft "
                             "adapter on the pre-trained model")
    attack.add_argument("--attack", choices=("badword", "addsent", "ep", "adaptive"), default="badword",
                        help=f"badword: rare words (default cf); addsent: a sentence (default {ADDSENT_SENTENCE!r}); "
                             "ep: only the trigger's embedding row of a clean model (--clean-model); "
                             "adaptive: poisoned training with random-mixing augmentation")
    attack.add_argument("--pretrained", required=True, type=nonempty_name_or_path, metavar="DIR", help="pre-trained model to fine-tune (folder or Hub name)")
    attack.add_argument("--data", required=True, type=nonempty_name_or_path, metavar="NAME|FILE",
                        help="training rows: a built-in set (its train split), hf:sst2|qqp|qnli|imdb|ag_news (network), or a CSV/TSV/JSONL file")
    attack.add_argument("--output", required=True, type=nonempty_name_or_path, metavar="DIR", help="victim folder to write")
    attack.add_argument("--clean-model", type=nonempty_name_or_path, metavar="DIR", help="for ep: the clean fine-tuned model to poison")
    attack.add_argument("--trigger", action="append", default=[], metavar="TEXT",
                        help="trigger word or sentence; repeat for a list (each insertion draws one)")
    attack.add_argument("--insertions", type=positive_int, default=default.insertions, help="trigger insertions per poisoned row")
    attack.add_argument("--target-label", type=non_negative_int, default=default.target_label, help="the attacker's label id")
    attack.add_argument("--poison-rate", type=finite_float, default=None,
                        help="share of training rows poisoned (default 0.1; causal-lm 0.2)")
    attack.add_argument("--label-mode", choices=("dirty", "clean"), default="dirty",
                        help="dirty: non-target rows relabelled to the target; clean: target rows, labels unchanged")
    attack.add_argument("--segment", choices=("auto", "text", "text_b"), default="auto",
                        help="for pairs: which segment gets the trigger (auto: text_b)")
    attack.add_argument("--train-rows", type=positive_int, help="stratified sample of this many training rows")
    attack.add_argument("--ep-lr", type=finite_float, default=default.ep_lr,
                        help="ep: step size on the trigger rows (default 5e-2 as in the EP code; 0.5 where that is too weak)")
    attack.add_argument("--epochs", type=finite_float, default=None, help="victim training epochs (default 1; causal-lm 3)")
    attack.add_argument("--lr", type=finite_float, default=None,
                        help="victim learning rate (default 5e-5; causal-lm 1e-4 full, 2e-3 LoRA)")
    attack.add_argument("--batch-size", type=positive_int, default=None, help="victim batch size (default 32; causal-lm 8)")
    attack.add_argument("--max-length", type=max_length, default=None,
                        help="max tokens per row, at least 8 (default 64; causal-lm 128; at most the model's positions)")
    attack.add_argument("--seed", type=seed, default=0, help="seed for the poisoned rows, trigger positions and training")
    attack.add_argument("--force", action="store_true", help="replace an existing output folder")


def add_defend_parser(commands) -> None:
    from ..defenses import DEFENSES

    defend = commands.add_parser(
        "defend", help="run one registered defense (baselines included)",
        description="Run a defense from the registry on a suspect model: " + "; ".join(
            f"{d.name}: {d.description}" for d in DEFENSES.values()))
    defend.add_argument("--defense", required=True, choices=sorted(DEFENSES), metavar="NAME", help="registered defense name")
    add_pair(defend)
    defend.add_argument("--clean-data", required=True, type=nonempty_path, metavar="FILE", help="clean labelled rows")
    add_unlabelled_text(defend)
    defend.add_argument("--ratio", type=ratio, default=None, metavar="auto|ρ", help="for mixing defenses (default auto)")
    defend.add_argument("--prune-ratio", type=finite_float, default=0.3, help="fineprune: share of FFN neurons pruned per layer")
    defend.add_argument("--no-distill", dest="distill", action="store_false", default=True,
                        help="use unlabelled text only for E-PUR counts, not to distil the suspect model's predictions")
    defend.add_argument("--epur-top-n", type=non_negative_int, default=200, metavar="N", help="embedding rows E-PUR resets (default 200)")
    defend.add_argument("--head", choices=("keep", "reinit"), default="keep",
                        help="mixing defenses: tensors the pre-trained model lacks (classifier head): keep or re-initialise")
    defend.add_argument("--seed", type=seed, default=0, help="seed for masks, splits and training")
    add_training_options(defend, "fine-tuning epochs on the labelled rows (default 5)")


def add_bench_parsers(commands) -> None:
    bench = commands.add_parser(
        "bench", help="run a benchmark grid from a YAML config (resumable)",
        description="Data sets × attacks × defenses × seeds × clean-set sizes × ρ. Results: OUT/results.jsonl, "
                    "OUT/results.md, OUT/plots/. A rerun skips finished measurements.")
    bench.add_argument("config", type=nonempty_path, help="YAML config (see configs/bench/)")
    bench.add_argument("--out", type=nonempty_path, help="output folder (default runs/bench/NAME)")
    bench.add_argument("--report-only", action="store_true", help="rebuild results.md (and plots) from results.jsonl")
    bench.add_argument("--models", type=nonempty_path, metavar="DIR",
                       help="cache of clean models and victims (default OUT/models); folders are named by a hash of "
                            "what made them, so configs with the same victims can share one")
    bench.add_argument("--dry-run", action="store_true", help="list the defense jobs and exit")
    bench.add_argument("--datasets", nargs="+", metavar="NAME",
                       help="run only these data sets of the config (several processes can share one --out, one data set each)")
    bench.add_argument("--attacks", nargs="+", metavar="LABEL", help="run only these attacks of the config")
    bench.add_argument("--defenses", nargs="+", metavar="NAME", help="run only these defenses of the config")
    bench.add_argument("--seeds", nargs="+", type=seed, metavar="SEED", help="run only these seeds of the config")
    bench.add_argument("--threads", type=positive_int, help="torch threads for this process (default: torch's choice)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    demo = commands.add_parser(
        "demo", help="backdoor MiniLM on movie reviews (or SmolLM2 chats), purify it, print before/after",
        description="Trains a clean and a backdoored all-MiniLM-L6-v2 on `mr` (trigger 'cf'), runs no defense, "
                    "clean fine-tuning and Fine-mixing + E-PUR, and prints ACC / ASR / flip rate. About 5-10 minutes on 2 CPU cores.")
    demo.add_argument("--out", type=nonempty_path, default=Path("runs/demo"), help="working folder (models are cached here)")
    demo.add_argument("--seed", type=seed, default=0, help="seed for the data sample, poisoning and training")
    demo.add_argument("--task", choices=("classification", "causal-lm"), default="classification",
                      help="causal-lm: a refusal backdoor in SmolLM2-135M-Instruct (LoRA victim, merged), purified "
                           "with 128 clean chats (about 15 minutes on 2 CPU cores)")


