"""Runs one mergekit merge inside mergekit's own environment (see mergekit_peer.py); prints one JSON line.

    python mergekit_child.py CONFIG.json OUTPUT THREADS SHARD_PARAMS

mergekit and torch are imported before the timed region; the kernel's peak-RSS counter is reset there
(``/proc/self/clear_refs`` ← 5) and ``VmHWM`` read after, as finemix's children do (probe.py).
"""

import json
import re
import sys
import time
from pathlib import Path


def status() -> dict:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}


def main() -> None:
    config_file, output, threads, shard_params = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    torch.set_num_threads(threads)
    config = MergeConfiguration.model_validate(json.loads(Path(config_file).read_text()))
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=0,
                           out_shard_size=shard_params, num_threads=threads)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    baseline = status()
    start = time.perf_counter()
    run_merge(config, output, options=options)
    wall = time.perf_counter() - start
    after = status()
    print(json.dumps({"wall_s": wall, "peak_rss_bytes": after["VmHWM"], "baseline_rss_bytes": baseline["VmRSS"],
                      "mergekit": __import__("importlib.metadata").metadata.version("mergekit")}))


if __name__ == "__main__":
    main()
