"""Mixing cost against an I/O floor measured in the same run.

    .venv/bin/python benchmarks/bench_mixing.py --sizes minilm,2gb --repeats 3

Baseline ("I/O floor"): read θ_B and θ_Pre fully with safetensors (every tensor materialised with
``.clone()``) and write one checkpoint of θ_B's size and sharding with safetensors; nothing else.
Compared, each in its own child process, all on a warm page cache:

* ``finemix mix`` = ``finemix.repair.steps.mix_checkpoint`` with ρ = 0.3, random mode and sel mode;
* ``finemix epur`` = ``finemix.repair.steps.epur_checkpoint`` (500 MR texts for the frequencies).
  finemix has no mix+E-PUR step without training (``purify`` always fine-tunes), so E-PUR and mix are
  measured separately; the "epur then mix" row is the sum of the two medians (two passes, which is what
  a user has to run) and its peak RSS the larger of the two;
* a naive implementation: ``safetensors.torch.load_file`` both, ``torch.where`` on a ``torch.rand`` mask,
  one ``save_file``;
* ``hash-inputs``: finemix's SHA-256 of both inputs alone (what the report's provenance costs; no target);
* mergekit 0.1.5 ``dare_linear`` (``rescale: false``, weight 1, density ρ: the same random mix), in its own
  virtual environment that the benchmark installs (lib/mergekit_peer.py; never a finemix dependency).

Targets (finemix rows, issue 19): wall time ≤ 1.2 × floor for the random mix and E-PUR, ≤ 1.5 × for sel; peak RSS ≤ 1.25 × one checkpoint's size. Peak RSS is
reported absolute (the whole process, imports included) and above the process's RSS just before the
call (imports done, nothing opened); both get a verdict. RssAnon/RssFile peaks are sampled every 5 ms:
mmap'd safetensors pages count as RssFile.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import checkpoints, cli, machine, mergekit_peer, runner, stats  # noqa: E402
from lib.constants import GB, MB  # noqa: E402
from lib.probe import Probe, print_profile, profile_record  # noqa: E402

# wall time over the floor (issue 19): random mix and E-PUR ≤ 1.2, sel ≤ 1.5; mergekit is judged as the random mix
TIME_TARGETS = {"finemix-mix-random": 1.2, "finemix-epur": 1.2, "finemix-mix-sel": 1.5, "mergekit": 1.2,
                "epur then mix (sum)": 2.4}
RSS_TARGET = 1.25
RATIO = 0.3
SIZES = {
    # name: how to build the pair
    "minilm": {"kind": "minilm"},
    # the same family at 8 layers: 0.53 GB (for a cheaper profile of the per-byte cost)
    "500mb": {"kind": "synthetic", "hidden": 1024, "layers": 8},
    # BERT-large shape with 42 layers: 2.25e9 bytes fp32 (24 layers would be 1.34 GB), ~1 GB shards.
    "2gb": {"kind": "synthetic", "hidden": 1024, "layers": 42},
    # Llama-shaped, bf16, names shared by both models (a chat model fine-tuned from its instruct model): 3.07 GB
    "llama3gb": {"kind": "llama", "hidden": 2048, "layers": 26, "intermediate": 5632},
}
LAYOUTS = ("folder", "hub-cache")
METHODS = ("floor", "finemix-mix-random", "finemix-mix-sel", "finemix-epur", "naive", "mergekit", "hash-inputs")


# --------------------------------------------------------------------------- jobs (children)

def _weights(folder: str) -> list[Path]:
    return checkpoints.folder_weight_files(Path(folder))


def job_floor(params: dict, probe: Probe) -> dict:
    """Read both checkpoints, materialising every tensor; write θ_B's shards back out. Nothing else."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = Path(params["output"])
    out.mkdir(parents=True, exist_ok=True)
    read = 0
    with probe.region():
        for file in _weights(params["pretrained"]):
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    tensor = handle.get_tensor(name).clone()
                    read += tensor.numel() * tensor.element_size()
                    del tensor
        for file in _weights(params["finetuned"]):
            with safe_open(str(file), framework="pt") as handle:
                shard = {name: handle.get_tensor(name).clone() for name in handle.keys()}
            read += sum(t.numel() * t.element_size() for t in shard.values())
            save_file(shard, str(out / file.name), metadata={"format": "pt"})
            del shard
    return {"bytes_read": read, "output_bytes": checkpoints.checkpoint_bytes(out)}


def job_hash_inputs(params: dict, probe: Probe) -> dict:
    """Only what the report's provenance costs: finemix's SHA-256 of both input folders, nothing else
    (one thread; purify and mix run it in a background thread beside the mix)."""
    from finemix.weights.hashing import folder_sha256

    with probe.region():
        hashes = {side: folder_sha256(Path(params[side])) for side in ("finetuned", "pretrained")}
    return {"files_hashed": sum(len(h) for h in hashes.values())}


def job_naive(params: dict, probe: Probe) -> dict:
    """load_file both, torch.where on a random mask, save_file: the obvious 10-line implementation."""
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(params["output"])
    out.mkdir(parents=True, exist_ok=True)
    with probe.region():
        finetuned, pretrained = {}, {}
        for file in _weights(params["finetuned"]):
            finetuned.update(load_file(str(file)))
        for file in _weights(params["pretrained"]):
            pretrained.update(load_file(str(file)))
        generator = torch.Generator().manual_seed(0)
        mixed = {}
        for name, tensor in finetuned.items():
            pre = pretrained.get(name, pretrained.get(name.removeprefix("bert.")))
            if pre is not None and torch.is_floating_point(tensor):
                mixed[name] = torch.where(torch.rand(tensor.shape, generator=generator) < params["ratio"], tensor, pre)
            else:
                mixed[name] = tensor
        save_file(mixed, str(out / "model.safetensors"), metadata={"format": "pt"})
    return {"output_bytes": checkpoints.checkpoint_bytes(out)}


# --------------------------------------------------------------------------- driver

def build_pair(size: str, args) -> tuple[Path, Path]:
    spec = SIZES[size]
    if spec["kind"] == "minilm":
        res = runner.run_job("lib.mix_jobs", "job_build_minilm_pair", {"workdir": str(args.workdir)}, label="build minilm pair")
    elif spec["kind"] == "llama":
        res = runner.run_job("lib.mix_jobs", "job_build_llama", {"workdir": str(args.workdir), **{k: spec[k] for k in (
            "hidden", "layers", "intermediate")}}, label=f"build {size}")
    else:
        res = runner.run_job("lib.mix_jobs", "job_build_synthetic", {"workdir": str(args.workdir), "hidden": spec["hidden"],
                                                                     "layers": spec["layers"]}, label=f"build {size}")
    return Path(res["extra"]["finetuned"]), Path(res["extra"]["pretrained"])


def run_mergekit(ft: Path, pre: Path, out: Path, args) -> dict:
    """One mergekit run, warm and synced like every child (its own environment; imports untimed)."""
    import json
    import os

    base, rekeyed = mergekit_peer.base_for_mergekit(ft, pre, Path(args.workdir))
    python = mergekit_peer.ensure_venv(Path(args.mergekit_venv))
    dtype = json.loads((ft / "config.json").read_text()).get("torch_dtype") or "float32"
    runner.prepare_run(clean=[out], warm=checkpoints.folder_weight_files(ft) + checkpoints.folder_weight_files(base))
    # the threads finemix's children get (torch's default: every core, unless --threads), and ~1 GB shards as
    # finemix writes them (mergekit counts shard size in parameters)
    shard_params = 1_000_000_000 // (2 if dtype in ("bfloat16", "float16") else 4)
    result = mergekit_peer.run_mergekit(python, mergekit_peer.merge_config(ft, base, RATIO, dtype), out,
                                        args.threads or os.cpu_count() or 1, args.timeout, shard_params)
    result["extra"] = {"mergekit": result.pop("mergekit"), "base_rekeyed_to_the_classifier_names": rekeyed,
                       "output_bytes": checkpoints.checkpoint_bytes(out)}
    return result


def run_method(method: str, ft: Path, pre: Path, out: Path, args, profile: bool = False) -> dict:
    if method == "mergekit":
        return run_mergekit(ft, pre, out, args)
    params = {"finetuned": str(ft), "pretrained": str(pre), "output": str(out), "ratio": RATIO, "threads": args.threads,
              "profile": profile}
    module, func = {
        "floor": ("bench_mixing", "job_floor"),
        "finemix-mix-random": ("lib.mix_jobs", "job_mix_finemix"),
        "finemix-mix-sel": ("lib.mix_jobs", "job_mix_finemix"),
        "finemix-epur": ("lib.mix_jobs", "job_epur_finemix"),
        "naive": ("bench_mixing", "job_naive"),
        "hash-inputs": ("bench_mixing", "job_hash_inputs"),
    }[method]
    if method == "finemix-mix-sel":
        params["mode"] = "sel"
    warm = checkpoints.folder_weight_files(ft) + checkpoints.folder_weight_files(pre)
    return runner.run_job(module, func, params, warm=warm, clean=[out], timeout=args.timeout, label=method)


def _largest(runs: list[dict], key: str) -> Optional[int]:
    """The largest of a measurement over runs; None where a method does not take it (mergekit: no sampler)."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return max(values) if values else None


def summarise(method: str, runs: list[dict], floor_s: float, ckpt: int) -> dict:
    wall = stats.median([r["wall_s"] for r in runs])
    peak = max(r["peak_rss_bytes"] for r in runs)
    above = max(r["peak_rss_bytes"] - r["baseline_rss_bytes"] for r in runs)
    row = {
        "method": method,
        "runs": len(runs),
        "wall_s_runs": [round(r["wall_s"], 4) for r in runs],
        "median_wall_s": wall,
        "min_wall_s": min(r["wall_s"] for r in runs),
        "time_ratio_vs_floor": wall / floor_s,
        "peak_rss_bytes": peak,
        "peak_rss_ratio": peak / ckpt,
        "peak_above_baseline_bytes": above,
        "peak_above_baseline_ratio": above / ckpt,
        "baseline_rss_bytes": max(r["baseline_rss_bytes"] for r in runs),
        "peak_anon_bytes_sampled": _largest(runs, "peak_anon_bytes_sampled"),
        "peak_file_bytes_sampled": _largest(runs, "peak_file_bytes_sampled"),
        "baseline_anon_bytes": _largest(runs, "baseline_anon_bytes"),
        "child_lifetime_maxrss_bytes": _largest(runs, "child_lifetime_maxrss_bytes"),
        "extra": runs[-1].get("extra"),
    }
    stage_runs = [sum((r.get("extra") or {}).get("finemix_timings_s", {}).values()) for r in runs]
    if any(stage_runs):
        # finemix's own timer (streaming + write), i.e. without the fixed set-up (pairing, tokenizer, imports it triggers, report).
        row["median_stage_s"] = stats.median(stage_runs)
        row["stage_ratio_vs_floor"] = row["median_stage_s"] / floor_s
    if method.startswith("finemix") or method == "mergekit":  # mergekit: the same targets, for the side-by-side
        row["time_target"] = TIME_TARGETS[method]
        row["time_verdict"] = stats.verdict(row["time_ratio_vs_floor"], TIME_TARGETS[method], higher_is_better=False)
        row["rss_verdict_absolute"] = stats.verdict(row["peak_rss_ratio"], RSS_TARGET, higher_is_better=False)
        row["rss_verdict_above_baseline"] = stats.verdict(row["peak_above_baseline_ratio"], RSS_TARGET, higher_is_better=False)
    return row


def parse_args() -> tuple[argparse.Namespace, list[str], list[str]]:
    """The options, and the sizes and methods they name (the floor always among the methods)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--sizes", default="minilm", help="comma-separated: " + ",".join(SIZES))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--large-repeats", type=int, default=1,
                        help="runs per method for checkpoints over 1 GB (default 1: the machine is shared; --repeats is for the small ones)")
    parser.add_argument("--profile-large", action="store_true", help="with --profile, profile checkpoints over 1 GB too")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child")
    parser.add_argument("--mergekit-venv", default=str(Path(__file__).resolve().parent / ".mergekit-venv"),
                        help="virtual environment for mergekit (created and filled on first use)")
    parser.add_argument("--layouts", default="folder",
                        help="comma-separated: folder (plain model folders), hub-cache (the same files as huggingface_hub "
                             "caches a download, where a large file's SHA-256 is its blob's name)")
    parser.add_argument("--keep-inputs", action="store_true", help="keep the synthetic checkpoints in --workdir (default: delete them at the end)")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    if "floor" not in methods:
        methods.insert(0, "floor")
    args.layouts = [layout for layout in args.layouts.split(",") if layout]
    unknown = ([s for s in sizes if s not in SIZES] + [m for m in methods if m not in METHODS]
               + [layout for layout in args.layouts if layout not in LAYOUTS])
    if unknown:
        parser.error(f"unknown size/method: {unknown}")
    return args, sizes, methods


def run_methods(size: str, ft: Path, pre: Path, ckpt: int, methods: list[str], args) -> tuple[dict, dict, int]:
    """Every method, round-robin over the repeats, then one profiled run of each finemix method where asked;
    returns the runs, the profiled runs and the number of repeats."""
    out = Path(args.workdir) / f"out-{size}"
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    repeats = args.large_repeats if ckpt > GB else args.repeats
    for repeat in range(repeats):
        for method in methods:
            result = run_method(method, ft, pre, out, args)
            runs[method].append(result)
            print(f"  [{size} #{repeat + 1}] {method:20s} {result['wall_s']:8.3f} s  peak RSS {result['peak_rss_bytes'] / MB:8.1f} MiB",
                  flush=True)
    profiles = {}
    if args.profile and (ckpt <= GB or args.profile_large):
        for method in methods:
            if method.startswith("finemix"):
                profiles[method] = run_method(method, ft, pre, out, args, profile=True)
    shutil.rmtree(out, ignore_errors=True)
    return runs, profiles, repeats


def epur_then_mix(rows: dict, floor_s: float, ckpt: int) -> Optional[dict]:
    """The "epur then mix (sum)" row: the two medians added, the larger peak; None without both methods."""
    if not ("finemix-epur" in rows and "finemix-mix-random" in rows):
        return None
    wall = rows["finemix-epur"]["median_wall_s"] + rows["finemix-mix-random"]["median_wall_s"]
    peak = max(rows["finemix-epur"]["peak_rss_bytes"], rows["finemix-mix-random"]["peak_rss_bytes"])
    above = max(rows["finemix-epur"]["peak_above_baseline_bytes"], rows["finemix-mix-random"]["peak_above_baseline_bytes"])
    return {"method": "epur then mix (sum)", "median_wall_s": wall, "time_ratio_vs_floor": wall / floor_s,
            "peak_rss_bytes": peak, "peak_rss_ratio": peak / ckpt, "peak_above_baseline_ratio": above / ckpt,
            "time_target": TIME_TARGETS["epur then mix (sum)"],
            "time_verdict": stats.verdict(wall / floor_s, TIME_TARGETS["epur then mix (sum)"], False),
            "rss_verdict_absolute": stats.verdict(peak / ckpt, RSS_TARGET, False),
            "rss_verdict_above_baseline": stats.verdict(above / ckpt, RSS_TARGET, False)}


def print_size(size: str, ckpt: int, repeats: int, rows: dict, derived: Optional[dict], profiles: dict) -> None:
    print(f"\n{size}: one checkpoint = {ckpt / MB:.1f} MiB ({ckpt / 1e9:.3f} GB); median of {repeats} run(s)")
    table_rows = []
    for row in list(rows.values()) + ([derived] if derived else []):
        table_rows.append([
            row["method"], row["median_wall_s"], f"{row['time_ratio_vs_floor']:.2f}x",
            f"≤{row['time_target']}x {row['time_verdict']}" if "time_target" in row else "-",
            f"{row['stage_ratio_vs_floor']:.2f}x" if "stage_ratio_vs_floor" in row else "-",
            row["peak_rss_bytes"] / MB, f"{row['peak_rss_ratio']:.2f}x", row.get("rss_verdict_absolute", "-"),
            f"{row['peak_above_baseline_ratio']:.2f}x", row.get("rss_verdict_above_baseline", "-"),
            (row.get("peak_anon_bytes_sampled") or float("nan")) / MB, (row.get("peak_file_bytes_sampled") or float("nan")) / MB,
        ])
    print(stats.table(["method", "wall s", "vs floor", "target", "stages/floor", "peak RSS MiB", "/ckpt", f"≤{RSS_TARGET}x",
                       "above-base /ckpt", f"≤{RSS_TARGET}x", "anon MiB", "file MiB"], table_rows))
    print("  stages/floor: finemix's own stage timers (report timings_s) over the floor, i.e. without its fixed set-up; "
          "no verdict (the target is on wall time)")
    for method, row in rows.items():
        timings = (row.get("extra") or {}).get("finemix_timings_s")
        if timings:
            print(f"  {method}: finemix's own stage timings {timings}")
    for method, result in profiles.items():
        print_profile(f"{method} [{size}]", result)
    print()


def measure_size(size: str, ft: Path, pre: Path, methods: list[str], args, payload: dict) -> None:
    """Run, summarise, record (``payload["sizes"][size]``) and print one checkpoint size."""
    ckpt = checkpoints.checkpoint_bytes(ft)
    runs, profiles, repeats = run_methods(size, ft, pre, ckpt, methods, args)
    floor_s = stats.median([r["wall_s"] for r in runs["floor"]])
    rows = {m: summarise(m, runs[m], floor_s, ckpt) for m in methods}
    derived = epur_then_mix(rows, floor_s, ckpt)
    payload["sizes"][size] = {"checkpoint_bytes": ckpt, "finetuned": str(ft), "pretrained": str(pre),
                              "methods": rows, "derived": derived, "raw_runs": runs,
                              "profiles": {m: profile_record(r) for m, r in profiles.items()}}
    print_size(size, ckpt, repeats, rows, derived, profiles)


def main() -> None:
    args, sizes, methods = parse_args()
    payload = {"machine": machine.machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
               "targets": {"time_vs_floor_max": TIME_TARGETS, "peak_rss_vs_checkpoint_max": RSS_TARGET},
               "notes": [
                   "floor: safetensors safe_open + get_tensor().clone() of every tensor of both checkpoints, then save_file "
                   "of θ_B's shards (same sharding); nothing else",
                   "finemix has no mix+E-PUR without training: epur_checkpoint and mix_checkpoint are measured separately; "
                   "'epur then mix (sum)' adds their medians",
                   "timings exclude interpreter start and imports (torch, safetensors, transformers, finemix pre-imported "
                   "in every child); process_wall_s in the JSON includes them",
                   "page cache not dropped (no root): inputs read once by the parent before each child (warm cache for all)",
                   "outputs are not fsynced by any method; os.sync() runs before each child",
                   "mergekit: dare_linear, rescale false, weight 1, density ρ, in its own environment; for a pair whose "
                   "base lacks the fine-tuned model's names, a re-keyed copy of θ_Pre (untimed) is what mergekit reads",
               ],
               "sizes": {}}
    built: list[Path] = []
    print(f"machine: {payload['machine']['cpu_model']}, {payload['machine']['cpu_count']} cores; warm page cache; ρ = {RATIO}")
    for size in sizes:
        ft, pre = build_pair(size, args)
        if SIZES[size]["kind"] != "minilm":
            built += [ft.parent, Path(args.workdir) / f"mergekit-base-{pre.parent.name}"]
        for layout in args.layouts:
            if layout == "folder":
                measure_size(size, ft, pre, methods, args, payload)
                continue
            cache = Path(args.workdir) / "hub-cache"
            built.append(cache)
            measure_size(f"{size} ({layout})", *(checkpoints.hub_snapshot(f, cache) for f in (ft, pre)), methods, args, payload)
    if not args.keep_inputs:
        for folder in built:
            shutil.rmtree(folder, ignore_errors=True)
    path = machine.write_results(args.results_name or "bench_mixing", payload)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
