"""Clean fine-tuning and evaluation throughput of finemix against plain PyTorch loops, same run.

    .venv/bin/python benchmarks/bench_finetune.py --rows 512 --repeats 3

Model: all-MiniLM-L6-v2 with a fresh 2-class head (same seed everywhere). Data: ``--rows`` MR training
rows (stratified sample, seed 0). Batch size 16, max_length 128 (finemix's default), AdamW
(lr 5e-5, weight decay 0.01 off biases/LayerNorm), linear warm-up 10 % + decay, gradient clipping 1.0,
one epoch, the same torch thread count in every child (``--threads``; default torch's). Each run is
its own child process; model loading is outside the timed region, tokenisation inside (finemix's
trainer tokenises inside too).

Training rows:
* ``plain-maxlen``      baseline: plain loop, every row padded to max_length, shuffled batches;
* ``plain-dynamic``     plain loop, each shuffled batch padded to its longest row;
* ``plain-grouped``     plain loop on finemix's own length-grouped batches (isolates trainer overhead);
* ``finemix``           ``finemix.train.finetune`` (dynamic padding + length grouping, accelerate);
* ``finemix-nogroup``   the same with ``length_grouped_batches`` monkeypatched to shuffled batches —
                        finemix has no switch for grouping, so this is a benchmark-only patch;
* ``finemix-unfused``   ``finetune`` with AdamW's fused CPU kernel patched off (torch's CPU default, one tensor
                        at a time, as the plain loops use): the optimiser's share of finemix's speed.
Target: finemix ≥ 1.2 × plain-maxlen examples/s.

Evaluation rows (``--eval-rows`` MR test rows, batch 64):
* ``eval-plain-maxlen``  baseline: ``torch.inference_mode`` loop, rows padded to max_length, input order;
* ``eval-plain-dynamic`` the same loop, each batch padded to its longest row;
* ``eval-finemix``       ``finemix.evaluation.predict_logits`` (longest-first order, dynamic padding).
Target: finemix ≥ 1.0 × each plain loop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import cli, fixtures, machine, runner, stats  # noqa: E402
from lib.constants import MB  # noqa: E402
from lib.probe import Probe, print_profile, profile_record  # noqa: E402

TRAIN_TARGET = 1.2
EVAL_TARGET = 1.0


# --------------------------------------------------------------------------- jobs (children)

def _plain_batches(features_len: int, batch_size: int, seed: int) -> list[list[int]]:
    import torch

    order = torch.randperm(features_len, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i : i + batch_size] for i in range(0, features_len, batch_size)]


def job_plain_train(params: dict, probe: Probe) -> dict:
    """A plain PyTorch training loop: AdamW, linear schedule, clipping; padding per ``params['padding']``."""
    import math

    import torch
    from transformers import get_linear_schedule_with_warmup

    model, tokenizer = fixtures.load_minilm_classifier(params.get("seed", 0))
    rows = fixtures.train_rows(params["rows"], params.get("seed", 0))
    batch_size, max_length, epochs = params["batch_size"], params["max_length"], params.get("epochs", 1)
    padding = params["padding"]  # "max_length" | "dynamic" | "grouped"
    torch.manual_seed(params.get("seed", 0))
    with probe.region():
        texts, labels = [e.text for e in rows], torch.tensor([e.label for e in rows])
        if padding == "max_length":
            encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        else:
            encoded = tokenizer(texts, truncation=True, max_length=max_length)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-5)
        steps = math.ceil(len(rows) / batch_size) * epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
        model.train()
        done = 0
        for epoch in range(epochs):
            if padding == "grouped":
                from finemix.train import length_grouped_batches

                batches = length_grouped_batches([len(ids) for ids in encoded["input_ids"]], batch_size, params.get("seed", 0) + epoch)
            else:
                batches = _plain_batches(len(rows), batch_size, params.get("seed", 0) + epoch)
            for index in batches:
                if padding == "max_length":
                    batch = {k: v[index] for k, v in encoded.items()}
                else:
                    batch = tokenizer.pad({k: [encoded[k][i] for i in index] for k in encoded.keys()}, return_tensors="pt")
                loss = model(**batch, labels=labels[index]).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                done += 1
    return {"rows": len(rows), "epochs": epochs, "steps": done}


def job_plain_eval(params: dict, probe: Probe) -> dict:
    import torch

    model, tokenizer = fixtures.load_minilm_classifier(0)
    texts = fixtures.mr_texts(params["rows"], "test")
    batch_size, max_length = params["batch_size"], params["max_length"]
    model.eval()
    out = []
    with probe.region():
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                if params["padding"] == "max_length":
                    batch = tokenizer(chunk, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
                else:
                    batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                out.append(model(**batch).logits.float())
        logits = torch.cat(out)
    return {"rows": len(texts), "logits_shape": list(logits.shape)}


def job_finemix_eval(params: dict, probe: Probe) -> dict:
    from finemix.data import Example
    from finemix.tasks.classification import predict_logits

    model, tokenizer = fixtures.load_minilm_classifier(0)
    rows = [Example(t, 0) for t in fixtures.mr_texts(params["rows"], "test")]
    with probe.region():
        logits = predict_logits(model, tokenizer, rows, batch_size=params["batch_size"], max_length=params["max_length"])
    return {"rows": len(rows), "logits_shape": list(logits.shape)}


def job_token_lengths(params: dict, probe: Probe) -> dict:
    """Token-length statistics of the rows (explains what dynamic padding can save)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixtures.minilm_dir())
    out = {}
    for name, texts in (("train", [e.text for e in fixtures.train_rows(params["rows"])]), ("eval", fixtures.mr_texts(params["eval_rows"], "test"))):
        lengths = sorted(len(ids) for ids in tokenizer(texts, truncation=True, max_length=params["max_length"])["input_ids"])
        out[name] = {"mean": sum(lengths) / len(lengths), "median": lengths[len(lengths) // 2], "max": lengths[-1],
                     "truncated_rows": sum(1 for n in lengths if n >= params["max_length"])}
    return out


# --------------------------------------------------------------------------- driver

TRAIN_METHODS = {
    "plain-maxlen": ("bench_finetune", "job_plain_train", {"padding": "max_length"}),
    "plain-dynamic": ("bench_finetune", "job_plain_train", {"padding": "dynamic"}),
    "plain-grouped": ("bench_finetune", "job_plain_train", {"padding": "grouped"}),
    "finemix": ("lib.finetune_jobs", "job_finetune_finemix", {}),
    "finemix-nogroup": ("lib.finetune_jobs", "job_finetune_finemix", {"no_grouping": True}),
    "finemix-unfused": ("lib.finetune_jobs", "job_finetune_finemix", {"unfused": True}),
}
EVAL_METHODS = {
    "eval-plain-maxlen": ("bench_finetune", "job_plain_eval", {"padding": "max_length"}),
    "eval-plain-dynamic": ("bench_finetune", "job_plain_eval", {"padding": "dynamic"}),
    "eval-finemix": ("bench_finetune", "job_finemix_eval", {}),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--rows", type=int, default=512, help="training rows (default 512)")
    parser.add_argument("--eval-rows", type=int, default=1000, help="evaluation rows (default 1000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--skip-eval", action="store_true")
    return parser.parse_args()


def run_methods(args, base: dict, eval_base: dict) -> tuple[dict, dict]:
    """Every training (and, unless --skip-eval, evaluation) method, round-robin over the repeats."""
    train_runs = {m: [] for m in TRAIN_METHODS}
    eval_runs = {m: [] for m in ([] if args.skip_eval else EVAL_METHODS)}
    for repeat in range(args.repeats):
        for name, (module, func, extra) in TRAIN_METHODS.items():
            result = runner.run_job(module, func, {**base, **extra}, label=name)
            train_runs[name].append(result)
            print(f"  [#{repeat + 1}] {name:18s} {result['wall_s']:8.2f} s  {args.rows * args.epochs / result['wall_s']:7.1f} ex/s  "
                  f"threads {result['torch_threads']}", flush=True)
        for name in eval_runs:
            module, func, extra = EVAL_METHODS[name]
            result = runner.run_job(module, func, {**eval_base, **extra}, label=name)
            eval_runs[name].append(result)
            print(f"  [#{repeat + 1}] {name:18s} {result['wall_s']:8.2f} s  {args.eval_rows / result['wall_s']:7.1f} ex/s", flush=True)
    return train_runs, eval_runs


def rate(runs, rows):
    return rows / stats.median([r["wall_s"] for r in runs])


def best(runs, rows):  # fastest run: contention on the shared machine only ever adds time
    return rows / min(r["wall_s"] for r in runs)


def summarise_train(args, train_runs: dict, payload: dict) -> None:
    """Examples/s and ratios against the plain loops, verdicts for finemix; recorded in ``payload`` and printed."""
    baseline = rate(train_runs["plain-maxlen"], args.rows * args.epochs)
    baseline_best = best(train_runs["plain-maxlen"], args.rows * args.epochs)
    train_rows = []
    summary = {}
    for name, runs in train_runs.items():
        ex_s = rate(runs, args.rows * args.epochs)
        row = {"median_wall_s": stats.median([r["wall_s"] for r in runs]), "examples_per_s": ex_s,
               "ratio_vs_plain_maxlen": ex_s / baseline, "wall_s_runs": [r["wall_s"] for r in runs],
               "best_examples_per_s": best(runs, args.rows * args.epochs),
               "best_ratio_vs_plain_maxlen": best(runs, args.rows * args.epochs) / baseline_best,
               "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs), "torch_threads": runs[0]["torch_threads"],
               "steps": runs[0]["extra"].get("steps")}
        if name.startswith("finemix"):
            row["verdict"] = stats.verdict(row["ratio_vs_plain_maxlen"], TRAIN_TARGET, True)
            row["verdict_best"] = stats.verdict(row["best_ratio_vs_plain_maxlen"], TRAIN_TARGET, True)
            row["ratio_vs_plain_dynamic"] = ex_s / rate(train_runs["plain-dynamic"], args.rows * args.epochs)
            row["ratio_vs_plain_grouped"] = ex_s / rate(train_runs["plain-grouped"], args.rows * args.epochs)
        summary[name] = row
        train_rows.append([name, row["median_wall_s"], ex_s, f"{row['ratio_vs_plain_maxlen']:.2f}x",
                           row.get("verdict", "-"), f"{row['best_ratio_vs_plain_maxlen']:.2f}x", row.get("verdict_best", "-"),
                           f"{row['ratio_vs_plain_grouped']:.2f}x" if "ratio_vs_plain_grouped" in row else "-",
                           row["peak_rss_bytes"] / MB])
    payload["train"] = summary
    payload["raw_train_runs"] = train_runs
    print(f"\ntraining: {args.rows} rows x {args.epochs} epoch(s), batch {args.batch_size}, max_length {args.max_length}; "
          f"median of {args.repeats}")
    print(stats.table(["method", "median s", "ex/s", "vs plain-maxlen", f"≥{TRAIN_TARGET}x", "best-run ratio", f"≥{TRAIN_TARGET}x",
                       "vs plain-grouped", "peak RSS MiB"], train_rows))


def summarise_eval(args, eval_runs: dict, payload: dict) -> None:
    """Examples/s and ratios against both plain loops, verdicts for finemix; recorded in ``payload`` and printed."""
    eval_summary, eval_rows = {}, []
    base_max = rate(eval_runs["eval-plain-maxlen"], args.eval_rows)
    base_dyn = rate(eval_runs["eval-plain-dynamic"], args.eval_rows)
    best_max = best(eval_runs["eval-plain-maxlen"], args.eval_rows)
    best_dyn = best(eval_runs["eval-plain-dynamic"], args.eval_rows)
    for name, runs in eval_runs.items():
        ex_s = rate(runs, args.eval_rows)
        row = {"median_wall_s": stats.median([r["wall_s"] for r in runs]), "examples_per_s": ex_s,
               "ratio_vs_plain_maxlen": ex_s / base_max, "ratio_vs_plain_dynamic": ex_s / base_dyn,
               "wall_s_runs": [r["wall_s"] for r in runs],
               "best_ratio_vs_plain_maxlen": best(runs, args.eval_rows) / best_max,
               "best_ratio_vs_plain_dynamic": best(runs, args.eval_rows) / best_dyn}
        if name == "eval-finemix":
            row["verdict_vs_plain_maxlen"] = stats.verdict(row["ratio_vs_plain_maxlen"], EVAL_TARGET, True)
            row["verdict_vs_plain_dynamic"] = stats.verdict(row["ratio_vs_plain_dynamic"], EVAL_TARGET, True)
        eval_summary[name] = row
        eval_rows.append([name, row["median_wall_s"], ex_s, f"{row['ratio_vs_plain_maxlen']:.2f}x", row.get("verdict_vs_plain_maxlen", "-"),
                          f"{row['ratio_vs_plain_dynamic']:.2f}x", row.get("verdict_vs_plain_dynamic", "-"),
                          f"{row['best_ratio_vs_plain_maxlen']:.2f}x / {row['best_ratio_vs_plain_dynamic']:.2f}x"])
    payload["eval"] = eval_summary
    payload["raw_eval_runs"] = eval_runs
    print(f"\nevaluation: {args.eval_rows} rows, batch {args.eval_batch_size}, max_length {args.max_length}")
    print(stats.table(["method", "median s", "ex/s", "vs plain-maxlen", f"≥{EVAL_TARGET}x", "vs plain-dynamic", f"≥{EVAL_TARGET}x",
                       "best-run ratios"], eval_rows))


def main() -> None:
    args = parse_args()
    base = {"rows": args.rows, "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
            "threads": args.threads, "seed": 0}
    eval_base = {"rows": args.eval_rows, "batch_size": args.eval_batch_size, "max_length": args.max_length, "threads": args.threads}
    payload = {"machine": machine.machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
               "targets": {"finemix_train_vs_plain_maxlen_min": TRAIN_TARGET, "finemix_eval_vs_plain_min": EVAL_TARGET},
               "notes": ["finemix has no switch to turn length grouping off: 'finemix-nogroup' monkeypatches "
                         "finemix.train.length_grouped_batches to shuffled batches (benchmark only)",
                         "model loading is outside the timed region; tokenisation, optimiser/scheduler set-up and "
                         "(finemix) accelerate set-up are inside"]}
    lengths = runner.run_job("bench_finetune", "job_token_lengths", {**base, "eval_rows": args.eval_rows}, label="lengths")
    payload["token_lengths"] = lengths["extra"]
    print(f"machine: {payload['machine']['cpu_model']}, {payload['machine']['cpu_count']} cores; token lengths {lengths['extra']}")

    train_runs, eval_runs = run_methods(args, base, eval_base)
    summarise_train(args, train_runs, payload)
    if eval_runs:
        summarise_eval(args, eval_runs, payload)

    if args.profile:
        result = runner.run_job("lib.finetune_jobs", "job_finetune_finemix", {**base, "profile": True}, label="finemix (profiled)")
        payload["profile_finemix_train"] = profile_record(result)
        print_profile("finemix trainer", result)
        if eval_runs:
            result = runner.run_job("bench_finetune", "job_finemix_eval", {**eval_base, "profile": True}, label="eval (profiled)")
            payload["profile_finemix_eval"] = profile_record(result)
            print_profile("finemix predict_logits", result)
    path = machine.write_results(args.results_name or "bench_finetune", payload)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
