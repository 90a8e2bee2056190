"""Where a mix's time goes: every step of finemix's per-tensor pipeline timed on its own, in one
thread, over a whole synthetic checkpoint (cProfile cannot see into the worker threads).

    .venv/bin/python benchmarks/profile_mix_stages.py --hidden 1024 --layers 8

Prints seconds per step summed over all tensors and each step as a multiple of the floor's own
steps (read θ_B + read θ_Pre + write), and writes benchmarks/results/profile_mix_stages.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import checkpoints, machine, runner, stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finemix-bench"))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--llama", action="store_true", help="a bf16 Llama-shaped pair instead of the fp32 BERT one")
    parser.add_argument("--intermediate", type=int, default=5632, help="--llama: MLP width")
    args = parser.parse_args()

    import torch  # noqa: F401  (loaded before the timed stages, not inside the first one)
    from safetensors import safe_open

    from finemix.core import mixing
    from finemix.weights.pair import open_pair
    from finemix.weights.reader import all_finite
    from finemix.weights.writer import ShardedWriter, TensorSpec

    if args.llama:  # bf16, Llama-shaped (bench_mixing's llama3gb at fewer layers)
        ft_dir, pre_dir = checkpoints.build_llama_pair(args.workdir, args.hidden, args.layers, args.intermediate)
    else:
        ft_dir, pre_dir = checkpoints.build_synthetic_pair(args.workdir, args.hidden, args.layers)
    runner.warm_files(checkpoints.folder_weight_files(ft_dir) + checkpoints.folder_weight_files(pre_dir))
    pair = open_pair(ft_dir, pre_dir)
    seconds: dict[str, float] = defaultdict(float)

    def timed(step: str, function):
        start = time.perf_counter()
        value = function()
        seconds[step] += time.perf_counter() - start
        return value

    def read(reader, name):
        with safe_open(str(reader._where[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    out = Path(tempfile.mkdtemp(dir=args.workdir))
    specs = [TensorSpec(n, pair.finetuned.dtype(n), pair.finetuned.shape(n)) for n in pair.finetuned.names()]
    writer = ShardedWriter(out, specs, 2 * 1024**3)
    for name in pair.finetuned.names():
        ft = timed("read θ_B (floor)", lambda: read(pair.finetuned, name))
        timed("finite check θ_B", lambda: all_finite(ft))
        if name in pair.names.pairs:
            pre = timed("read θ_Pre (floor)", lambda: read(pair.pretrained, pair.names.pairs[name]))
            timed("finite check θ_Pre", lambda: all_finite(pre))
            timed("sel mix (|Δ|, radix threshold, select), for comparison",
                  lambda: mixing.mix_tensor(ft, pre, args.ratio, "sel", 0, name))
            timed("random mask draws alone (SFC64 + compare), for comparison",
                  lambda: mixing.random_keep_mask(ft.shape, args.ratio, 0, name))
            ft, _ = timed("random mix (draws + select, chunked)", lambda: mixing.random_mix(ft, pre, args.ratio, 0, name))
        timed("write (floor)", lambda: writer.add(name, ft))
    writer.close()
    shutil.rmtree(out, ignore_errors=True)

    floor = sum(v for k, v in seconds.items() if "(floor)" in k)
    rows = [(step, f"{value:.3f}", f"{value / floor:.2f}") for step, value in seconds.items()]
    print(f"checkpoint: {checkpoints.checkpoint_bytes(ft_dir) / 1e9:.2f} GB, ρ = {args.ratio}, one thread, warm cache")
    print(stats.table(["step", "seconds", "× floor steps"], rows))
    random_total = sum(v for k, v in seconds.items() if "for comparison" not in k)
    print(f"random mix, all steps in one thread: {random_total:.2f} s = {random_total / floor:.2f} × the floor's steps")
    machine.write_results("profile_mix_stages", {
        "machine": machine.machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
        "checkpoint_bytes": checkpoints.checkpoint_bytes(ft_dir), "seconds": dict(seconds),
        "floor_steps_s": floor, "random_mix_one_thread_s": random_total,
    })


if __name__ == "__main__":
    main()
