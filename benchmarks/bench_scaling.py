"""Cost model: how finemix's time and memory grow, and a labelled extrapolation to a 7B model.

    .venv/bin/python benchmarks/bench_scaling.py                       # all three parts
    .venv/bin/python benchmarks/bench_scaling.py --parts mix --layers 1,8

Parts (each point its own child process; median of --repeats):
* ``mix``      ``finemix.repair.steps.mix_checkpoint`` (random, ρ 0.3) on synthetic fp32 BERT-like pairs, hidden 1024,
               vocab 30522, ``--layers`` (default 1,8,42 ≈ 0.18, 0.53, 2.25 GB per checkpoint), warm page cache.
               Fit: time and peak RSS linear in checkpoint bytes.
* ``finetune`` one epoch of ``finemix.train.finetune`` on MiniLM against clean-set size (``--rows`` 32,128,512).
               Fit: time linear in rows.
* ``purify``   ``finemix.repair.steps.purify`` with ``--ratio auto`` against the number of ρ candidates (1, 2, 4),
               every candidate forced to train (``ratio_search.acceptance_margin`` monkeypatched to −1),
               64 clean rows, 100 unlabelled texts, 1 epoch. Fit: time linear in candidates.
* ``llm-mix``  ``mix_checkpoint`` (random, MB-Defense's ρ 0.5) on synthetic sharded **bf16** Llama-shaped pairs
               (hidden 2048, intermediate 5632, vocab 49152, ``--llm-layers``, default 2,8,26 ≈ 0.6, 1.3, 3.1 GB),
               beside the I/O floor of bench_mixing.py on the same pair. Fit: time and peak RSS linear in bytes;
               predicted for Llama-2-7B and -70B in bf16.
* ``adapter-mix`` ``finemix mix`` of a synthetic rank-16 LoRA adapter on the largest ``--llm-layers`` base, element
               (a merged model) and component (an adapter) granularity, beside that base's I/O floor.
* ``llm-finetune`` one epoch on SmolLM2-135M-Instruct over ``--llm-rows`` TriviaQA chats (tokens counted);
               predicted for 7B and 70B as compute ∝ non-embedding parameters × tokens (on this CPU, and on
               GPUs from 6·N·tokens FLOPs at a stated utilisation), with FSDP's training-state memory.

The 7B and 70B figures are EXTRAPOLATIONS of these linear fits far outside the measured range (and, for
training, of a compute-scaling assumption stated next to them), not measurements.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import checkpoints, cli, fixtures, machine, runner, stats  # noqa: E402
from lib.constants import GB, MB  # noqa: E402

SEVEN_B = {"bf16_bytes": 14e9, "fp32_bytes": 28e9, "params": 7e9, "non_embedding_params": 6.5e9}
# Llama-2 7B and 70B (vocab 32000, untied head): total and non-embedding parameters.
LLAMA2 = {"7B": {"params": 6.738e9, "non_embedding_params": 6.476e9},
          "70B": {"params": 68.977e9, "non_embedding_params": 68.453e9}}
GPU_BF16_PEAK = 989e12  # H100 SXM dense bf16 FLOP/s (H200: the same compute)
GPU_UTILISATION = 0.35  # an assumption: model FLOP utilisation of a small-batch FSDP fine-tune


def job_minilm_params(params: dict, probe) -> dict:
    model, _ = fixtures.load_minilm_classifier(0)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    return {"params": total, "non_embedding_params": total - embedding}


def measure(module: str, func: str, params: dict, repeats: int, **kw) -> dict:
    runs = [runner.run_job(module, func, params, **kw) for _ in range(repeats)]
    return {"wall_s": stats.median([r["wall_s"] for r in runs]), "wall_s_runs": [r["wall_s"] for r in runs],
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            "peak_above_baseline_bytes": max(r["peak_rss_bytes"] - r["baseline_rss_bytes"] for r in runs),
            "peak_anon_bytes_sampled": max(r["peak_anon_bytes_sampled"] for r in runs),
            "peak_file_bytes_sampled": max(r["peak_file_bytes_sampled"] for r in runs),
            "extra": runs[-1]["extra"]}


def part_mix(args, payload: dict) -> None:
    points, built = [], []
    for layers in [int(x) for x in args.layers.split(",") if x]:
        res = runner.run_job("lib.mix_jobs", "job_build_synthetic", {"workdir": str(args.workdir), "hidden": 1024, "layers": layers},
                             label=f"build l{layers}")
        ft, pre = Path(res["extra"]["finetuned"]), Path(res["extra"]["pretrained"])
        built.append(ft.parent)
        size = checkpoints.checkpoint_bytes(ft)
        out = Path(args.workdir) / "out-scaling-mix"
        params = {"finetuned": str(ft), "pretrained": str(pre), "output": str(out), "ratio": 0.3, "mode": "random",
                  "threads": args.threads}
        point = measure("lib.mix_jobs", "job_mix_finemix", params, args.repeats, warm=checkpoints.folder_weight_files(ft) + checkpoints.folder_weight_files(pre),
                        clean=[out], label=f"mix l{layers}")
        shutil.rmtree(out, ignore_errors=True)
        point.update(layers=layers, checkpoint_bytes=size)
        points.append(point)
        print(f"  mix  {layers:3d} layers  {size / GB:6.2f} GiB  {point['wall_s']:8.2f} s  peak RSS {point['peak_rss_bytes'] / MB:8.1f} MiB "
              f"(anon {point['peak_anon_bytes_sampled'] / MB:.0f}, file {point['peak_file_bytes_sampled'] / MB:.0f})", flush=True)
        if not args.keep_inputs and size > GB:
            shutil.rmtree(ft.parent, ignore_errors=True)
    if not args.keep_inputs:
        for folder in built:
            shutil.rmtree(folder, ignore_errors=True)
    xs = [p["checkpoint_bytes"] for p in points]
    fits = {key: stats.fit_linear(xs, [p[key] for p in points])
            for key in ("wall_s", "peak_rss_bytes", "peak_above_baseline_bytes", "peak_anon_bytes_sampled", "peak_file_bytes_sampled")}
    predictions = {}
    for label, size in (("7B bf16 (14 GB)", SEVEN_B["bf16_bytes"]), ("7B fp32 (28 GB)", SEVEN_B["fp32_bytes"])):
        predictions[label] = {key: fit["intercept"] + fit["slope"] * size for key, fit in fits.items()}
    payload["mix"] = {"points": points, "fits_vs_checkpoint_bytes": fits, "extrapolation_7b": predictions}
    print("\nmix: per-size measurements")
    print(stats.table(["layers", "ckpt GB", "wall s", "s/GB", "peak RSS MiB", "peak/ckpt", "anon MiB", "file MiB"],
                      [[p["layers"], p["checkpoint_bytes"] / 1e9, p["wall_s"], p["wall_s"] / (p["checkpoint_bytes"] / 1e9),
                        p["peak_rss_bytes"] / MB, f"{p['peak_rss_bytes'] / p['checkpoint_bytes']:.2f}x",
                        p["peak_anon_bytes_sampled"] / MB, p["peak_file_bytes_sampled"] / MB] for p in points]))
    print(f"fit: time = {fits['wall_s']['intercept']:.2f} s + {fits['wall_s']['slope'] * 1e9:.2f} s/GB (R² {fits['wall_s']['r2']:.3f}); "
          f"peak RSS = {fits['peak_rss_bytes']['intercept'] / MB:.0f} MiB + {fits['peak_rss_bytes']['slope']:.2f} × checkpoint bytes "
          f"(R² {fits['peak_rss_bytes']['r2']:.3f})")
    print("EXTRAPOLATION (linear fit far outside the measured range; fp32 synthetic inputs — for bf16 finemix's mask is still one "
          "fp32 random number per element, so per-byte cost is likely higher than this):")
    for label, pred in predictions.items():
        print(f"  {label}: mix ≈ {pred['wall_s']:.0f} s, peak RSS ≈ {pred['peak_rss_bytes'] / GB:.1f} GiB "
              f"(anon ≈ {pred['peak_anon_bytes_sampled'] / GB:.1f} GiB, file-backed ≈ {pred['peak_file_bytes_sampled'] / GB:.1f} GiB)")


def part_finetune(args, payload: dict, minilm: dict) -> None:
    points = []
    for rows in [int(x) for x in args.rows.split(",") if x]:
        point = measure("lib.finetune_jobs", "job_finetune_finemix", {"rows": rows, "epochs": 1.0, "batch_size": 16, "max_length": 128,
                                                                      "threads": args.threads}, args.repeats, label=f"finetune {rows}")
        point["rows"] = rows
        points.append(point)
        print(f"  fine-tune 1 epoch  {rows:5d} rows  {point['wall_s']:8.2f} s  peak RSS {point['peak_rss_bytes'] / MB:8.1f} MiB", flush=True)
    fit = stats.fit_linear([p["rows"] for p in points], [p["wall_s"] for p in points])
    scale = SEVEN_B["non_embedding_params"] / minilm["non_embedding_params"]
    predictions = {f"{n} rows": (fit["intercept"] + fit["slope"] * n) * scale for n in (128, 512)}
    payload["finetune"] = {"points": points, "fit_vs_rows": fit, "minilm": minilm, "compute_scale_to_7b": scale,
                           "extrapolation_7b_epoch_s": predictions,
                           "adamw_fp32_state_bytes_7b": 16 * SEVEN_B["params"]}
    print("\nfine-tune: one epoch, MiniLM, batch 16, max_length 128")
    print(stats.table(["rows", "wall s", "rows/s", "peak RSS MiB"],
                      [[p["rows"], p["wall_s"], p["rows"] / p["wall_s"], p["peak_rss_bytes"] / MB] for p in points]))
    print(f"fit: epoch time = {fit['intercept']:.2f} s + {fit['slope']:.4f} s/row (R² {fit['r2']:.3f})")
    print(f"EXTRAPOLATION (assumes time ∝ non-embedding parameters × tokens: MiniLM {minilm['non_embedding_params'] / 1e6:.1f} M "
          f"→ 7B ≈ {SEVEN_B['non_embedding_params'] / 1e9:.1f} B, ×{scale:.0f}; ignores memory limits):")
    for label, seconds in predictions.items():
        print(f"  7B, one epoch over {label} on this CPU ≈ {seconds / 3600:.1f} h")
    print(f"  7B weights + grads + AdamW state in fp32 ≈ {16 * SEVEN_B['params'] / 1e9:.0f} GB "
          f"(> this machine's {payload['machine']['memory_total_gib']} GiB): not runnable here at all")


def part_purify(args, payload: dict, minilm: dict) -> None:
    victim = args.backdoored
    if victim is None:
        victim = Path(runner.run_job("lib.purify_jobs", "job_build_victim", {"workdir": str(args.workdir), "rows": 1000,
                                                                              "threads": args.threads}, label="victim")["extra"]["victim"])
    out = Path(args.workdir) / "out-scaling-purify"
    candidate_sets = {1: [0.0], 2: [0.0, 0.1], 4: [0.0, 0.1, 0.2, 0.3]}
    points = []
    for k in [int(x) for x in args.candidates.split(",") if x]:
        params = {"backdoored": str(victim), "output": str(out), "clean_rows": args.purify_clean_rows,
                  "unlabelled_rows": args.purify_unlabelled_rows, "epochs": args.purify_epochs, "ratio": "auto",
                  "candidates": candidate_sets.get(k, [round(i / (2 * k), 4) for i in range(k)]),
                  "force_all_candidates": True, "threads": args.threads}
        point = measure("lib.purify_jobs", "job_purify", params, args.purify_repeats, clean=[out], label=f"purify k={k}")
        point["candidates"] = k
        points.append(point)
        print(f"  purify  {k} candidate(s)  {point['wall_s']:8.2f} s  trained {point['extra']['candidates_trained']}  "
              f"stages {point['extra']['timings_s']}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    fit = stats.fit_linear([p["candidates"] for p in points], [p["wall_s"] for p in points])
    scale = SEVEN_B["non_embedding_params"] / minilm["non_embedding_params"]
    payload["purify"] = {"points": points, "fit_vs_candidates": fit, "victim": str(victim),
                         "extrapolation_7b_s": {f"{k} candidates": (fit["intercept"] + fit["slope"] * k) * scale for k in (1, 4)}}
    print(f"\npurify --ratio auto, every candidate trained, {args.purify_clean_rows} clean rows, "
          f"{args.purify_unlabelled_rows} unlabelled texts, {args.purify_epochs} epoch(s)")
    print(stats.table(["candidates", "wall s", "ρ search+ft s", "peak RSS MiB"],
                      [[p["candidates"], p["wall_s"], p["extra"]["timings_s"].get("ratio+finetune"), p["peak_rss_bytes"] / MB] for p in points]))
    print(f"fit: purify time = {fit['intercept']:.2f} s + {fit['slope']:.2f} s per candidate (R² {fit['r2']:.3f})")
    print(f"EXTRAPOLATION (same compute-scaling assumption, ×{scale:.0f}): 7B purify ≈ "
          + ", ".join(f"{k} candidate(s) {((fit['intercept'] + fit['slope'] * k) * scale) / 3600:.1f} h" for k in (1, 4)))


def part_llm_mix(args, payload: dict) -> None:
    points = []
    for layers in [int(x) for x in args.llm_layers.split(",") if x]:
        res = runner.run_job("lib.mix_jobs", "job_build_llama", {"workdir": str(args.workdir), "hidden": 2048, "layers": layers,
                                                                 "intermediate": 5632}, label=f"build llama l{layers}")
        ft, pre = Path(res["extra"]["finetuned"]), Path(res["extra"]["pretrained"])
        inputs = checkpoints.folder_weight_files(ft) + checkpoints.folder_weight_files(pre)
        out = Path(args.workdir) / "out-scaling-llm-mix"
        floor = measure("bench_mixing", "job_floor", {"finetuned": str(ft), "pretrained": str(pre), "output": str(out)},
                        args.repeats, warm=inputs, clean=[out], label=f"floor llama l{layers}")
        params = {"finetuned": str(ft), "pretrained": str(pre), "output": str(out), "ratio": 0.5, "mode": "random",
                  "threads": args.threads}
        point = measure("lib.mix_jobs", "job_mix_finemix", params, args.repeats, warm=inputs, clean=[out], label=f"mix llama l{layers}")
        shutil.rmtree(out, ignore_errors=True)
        point.update(layers=layers, checkpoint_bytes=checkpoints.checkpoint_bytes(ft), floor_wall_s=floor["wall_s"],
                     floor_wall_s_runs=floor["wall_s_runs"], floor_peak_rss_bytes=floor["peak_rss_bytes"])
        points.append(point)
        print(f"  llm mix  {layers:3d} layers  {point['checkpoint_bytes'] / GB:6.2f} GiB  {point['wall_s']:8.2f} s "
              f"(floor {floor['wall_s']:.2f} s, {point['wall_s'] / floor['wall_s']:.2f}x)  peak RSS {point['peak_rss_bytes'] / MB:8.1f} MiB",
              flush=True)
        if not args.keep_inputs:
            shutil.rmtree(ft.parent, ignore_errors=True)
    fits, predictions = llm_mix_prediction(points)
    payload["llm_mix"] = {"points": points, "fits_vs_checkpoint_bytes": fits, "prediction": predictions,
                          "notes": ["time: linear fit in checkpoint bytes", "peak RSS does not grow with the checkpoint but with "
                                    "its largest tensors in flight: the largest point's RSS above the process baseline, "
                                    "in units of its largest tensor, times the target's largest tensor, plus that baseline"]}
    print("\nllm mix: bf16 Llama-shaped pairs, random ρ 0.5, warm page cache")
    print(stats.table(["layers", "ckpt GB", "floor s", "mix s", "× floor", "s/GB", "peak RSS MiB", "peak/ckpt"],
                      [[p["layers"], p["checkpoint_bytes"] / 1e9, p["floor_wall_s"], p["wall_s"], p["wall_s"] / p["floor_wall_s"],
                        p["wall_s"] / (p["checkpoint_bytes"] / 1e9), p["peak_rss_bytes"] / MB,
                        f"{p['peak_rss_bytes'] / p['checkpoint_bytes']:.2f}x"] for p in points]))
    print("PREDICTION (linear fit far outside the measured range, page cache warm; a cold disk adds its read time):")
    for label, pred in predictions.items():
        print(f"  {label}: mix ≈ {pred['wall_s'] / 60:.1f} min (floor ≈ {pred['floor_wall_s'] / 60:.1f} min), "
              f"peak RSS ≈ {pred['peak_rss_bytes'] / GB:.1f} GiB")


LLAMA_LARGEST_TENSOR_BYTES = {"7B": 32000 * 4096 * 2, "70B": 28672 * 8192 * 2}  # bf16 embedding (7B), MLP matrix (70B)


def llm_mix_prediction(points: list[dict]) -> tuple[dict, dict]:
    """Fits of mix and floor time in checkpoint bytes; predictions for Llama-2-7B/70B in bf16 (see the notes)."""
    xs = [p["checkpoint_bytes"] for p in points]
    fits = {key: stats.fit_linear(xs, [p[key] for p in points]) for key in ("wall_s", "floor_wall_s")}
    largest = max(points, key=lambda p: p["checkpoint_bytes"])
    measured_tensor = 49152 * 2048 * 2  # the synthetic pairs' embedding and lm_head, bf16
    baseline = largest["peak_rss_bytes"] - largest["peak_above_baseline_bytes"]
    tensors_in_flight = largest["peak_above_baseline_bytes"] / measured_tensor
    predictions = {}
    for size, spec in LLAMA2.items():
        label = f"Llama-2-{size} bf16 ({spec['params'] * 2 / 1e9:.0f} GB)"
        predictions[label] = {key: fit["intercept"] + fit["slope"] * spec["params"] * 2 for key, fit in fits.items()}
        predictions[label]["peak_rss_bytes"] = baseline + tensors_in_flight * LLAMA_LARGEST_TENSOR_BYTES[size]
    return fits, predictions


def part_adapter_mix(args, payload: dict) -> None:
    """A synthetic rank-16 adapter on every linear weight of the largest bf16 Llama-shaped base (issue 18):
    the element mix (Δ built per module, a merged model written) and the component mix (an adapter written),
    beside the I/O floor of a full mix of the same base (read it twice, write it once)."""
    layers = max(int(x) for x in args.llm_layers.split(",") if x)
    res = runner.run_job("lib.mix_jobs", "job_build_llama", {"workdir": str(args.workdir), "hidden": 2048, "layers": layers,
                                                             "intermediate": 5632}, label=f"build llama l{layers}")
    ft, pre = Path(res["extra"]["finetuned"]), Path(res["extra"]["pretrained"])
    adapter = Path(args.workdir) / f"lora-r16-l{layers}"
    runner.run_job("lib.mix_jobs", "job_build_lora_adapter", {"base": str(pre), "folder": str(adapter), "rank": 16},
                   label="build adapter")
    inputs = checkpoints.folder_weight_files(pre) + [adapter / "adapter_model.safetensors"]
    out = Path(args.workdir) / "out-adapter-mix"
    rows = {"floor": measure("bench_mixing", "job_floor", {"finetuned": str(ft), "pretrained": str(pre), "output": str(out)},
                             args.repeats, warm=checkpoints.folder_weight_files(ft) + inputs, clean=[out], label="floor")}
    for granularity in ("element", "component"):
        params = {"adapter": str(adapter), "pretrained": str(pre), "output": str(out), "granularity": granularity,
                  "ratio": 0.5, "threads": args.threads}
        rows[granularity] = measure("lib.mix_jobs", "job_mix_adapter", params, args.repeats, warm=inputs, clean=[out],
                                    label=f"adapter {granularity}")
    shutil.rmtree(out, ignore_errors=True)
    base_bytes = checkpoints.checkpoint_bytes(pre)
    payload["adapter_mix"] = {"base_bytes": base_bytes, "adapter_bytes": (adapter / "adapter_model.safetensors").stat().st_size,
                              "layers": layers, "rows": rows}
    print(f"\nadapter mix: rank-16 adapter on every linear weight of a {base_bytes / 1e9:.2f} GB bf16 base, ρ 0.5")
    print(stats.table(["method", "wall s", "× floor", "peak RSS MiB", "× base checkpoint"],
                      [[name, row["wall_s"], row["wall_s"] / rows["floor"]["wall_s"], row["peak_rss_bytes"] / MB,
                        row["peak_rss_bytes"] / base_bytes] for name, row in rows.items()]))
    if not args.keep_inputs:
        shutil.rmtree(ft.parent, ignore_errors=True)
        shutil.rmtree(adapter, ignore_errors=True)


def part_llm_finetune(args, payload: dict) -> None:
    run = measure("lib.finetune_jobs", "job_finetune_smollm2", {"rows": args.llm_rows, "threads": args.threads}, 1,
                  label="finetune smollm2")
    extra = run["extra"]
    per_token = run["wall_s"] / extra["tokens"]
    predictions = {}
    for size, spec in LLAMA2.items():
        scale = spec["non_embedding_params"] / extra["non_embedding_params"]
        flops = 6 * spec["non_embedding_params"] * extra["tokens"]
        predictions[size] = {
            "cpu_epoch_s_this_machine": per_token * extra["tokens"] * scale,
            "gpu_epoch_compute_s_per_gpu_count": {n: flops / (n * GPU_BF16_PEAK * GPU_UTILISATION) for n in (1, 8)},
            "training_state_bytes_bf16": 8 * spec["params"],  # bf16 weights + grads + AdamW's two moments
            "training_state_bytes_per_gpu_fsdp8": 8 * spec["params"] / 8,
            "host_bytes_per_process": 2 * 2 * spec["params"],  # the loaded bf16 model and its training copy (train.py)
        }
    payload["llm_finetune"] = {"measured": run, "seconds_per_token": per_token, "prediction": predictions,
                               "assumptions": {"gpu_bf16_peak_flops": GPU_BF16_PEAK, "gpu_utilisation": GPU_UTILISATION}}
    print(f"\nllm fine-tune: SmolLM2-135M, one epoch, {extra['rows']} chats, {extra['tokens']} tokens: {run['wall_s']:.1f} s "
          f"({extra['tokens'] / run['wall_s']:.0f} tokens/s), peak RSS {run['peak_rss_bytes'] / MB:.0f} MiB")
    print("PREDICTION (compute ∝ non-embedding parameters × tokens; GPU at "
          f"{GPU_UTILISATION:.0%} of {GPU_BF16_PEAK / 1e12:.0f} TFLOP/s; evaluation, loading and writing not included):")
    for size, pred in predictions.items():
        gpu = pred["gpu_epoch_compute_s_per_gpu_count"]
        print(f"  {size}: one epoch on this CPU ≈ {pred['cpu_epoch_s_this_machine'] / 3600:.1f} h; on GPUs ≈ {gpu[1]:.1f} s (1) / "
              f"{gpu[8]:.2f} s (8) of compute; bf16 training state {pred['training_state_bytes_bf16'] / 1e9:.0f} GB "
              f"({pred['training_state_bytes_per_gpu_fsdp8'] / 1e9:.0f} GB per GPU under FSDP on 8); host memory "
              f"≈ {pred['host_bytes_per_process'] / 1e9:.0f} GB per process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--parts", default="mix,finetune,purify")
    parser.add_argument("--layers", default="1,8,42", help="synthetic checkpoint depths for the mix part (hidden 1024)")
    parser.add_argument("--rows", default="32,128,512", help="clean-set sizes for the fine-tune part")
    parser.add_argument("--candidates", default="1,2,4", help="numbers of ρ candidates for the purify part")
    parser.add_argument("--purify-clean-rows", type=int, default=64)
    parser.add_argument("--purify-unlabelled-rows", type=int, default=100)
    parser.add_argument("--purify-epochs", type=float, default=1.0)
    parser.add_argument("--purify-repeats", type=int, default=1, help="runs per purify point (default 1; --repeats is for the others)")
    parser.add_argument("--backdoored", type=Path, default=None, help="suspect model for the purify part (default: build one)")
    parser.add_argument("--llm-layers", default="2,8,26", help="synthetic bf16 Llama depths for the llm-mix part")
    parser.add_argument("--llm-rows", type=int, default=96, help="chats for the llm-finetune part")
    parser.add_argument("--keep-inputs", action="store_true", help="keep synthetic checkpoints (default: delete them when done)")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    payload = {"machine": machine.machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
               "notes": ["every 7B number is an extrapolation of a linear fit (plus, for training, a compute-scaling "
                         "assumption), not a measurement",
                         "purify points force every candidate to train (ratio_search.acceptance_margin monkeypatched to -1)"]}
    print(f"machine: {payload['machine']['cpu_model']}, {payload['machine']['cpu_count']} cores")
    minilm = None
    if "finetune" in parts or "purify" in parts:
        minilm = runner.run_job("bench_scaling", "job_minilm_params", {}, label="params")["extra"]
    if "mix" in parts:
        part_mix(args, payload)
    if "finetune" in parts:
        part_finetune(args, payload, minilm)
    if "purify" in parts:
        part_purify(args, payload, minilm)
    if "llm-mix" in parts:
        part_llm_mix(args, payload)
    if "llm-finetune" in parts:
        part_llm_finetune(args, payload)
    if "adapter-mix" in parts:
        part_adapter_mix(args, payload)
    path = machine.write_results(args.results_name or "bench_scaling", payload)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
