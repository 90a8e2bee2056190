"""mergekit, the peer a user would pick instead, on the same pair (issue 19 item 3).

mergekit's ``dare_linear`` with ``rescale: false``, weight 1 and ``density: ρ`` is finemix's random mix:
θ_Pre + m ⊙ Δ with m ~ Bernoulli(ρ). It is installed by the benchmark in its own virtual environment
(``--mergekit-venv``, never a project dependency), with torch at finemix's pin and the other shared
libraries held to constraints.txt. It runs there through ``mergekit_child.py``, which imports mergekit
before the timed region and reads the same kernel peak-RSS counter as finemix's children, so both are
timed without interpreter start and imports.

mergekit reads the base by the fine-tuned model's architecture (``BertForSequenceClassification``:
``bert.``-prefixed names and a head), so for the BERT-shaped pair the benchmark writes a re-keyed copy of
θ_Pre (untimed): every tensor renamed with the ``bert.`` prefix, θ_B's config, and θ_B's head tensors (a
zero Δ there, so the head stays θ_B's, as finemix keeps it). Llama-shaped pairs share names already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MERGEKIT_VERSION = "0.1.5"
TORCH_VERSION = "2.13.0"
ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().with_name("mergekit_child.py")


def ensure_venv(venv: Path) -> Path:
    """The python of a virtual environment holding mergekit ``MERGEKIT_VERSION`` (created when missing)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mergekit, importlib.metadata as m; print(m.version('mergekit'))"]
    if python.is_file() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == MERGEKIT_VERSION:
        return python
    print(f"installing mergekit {MERGEKIT_VERSION} into {venv} (its own environment; not a finemix dependency)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "--no-input", "--disable-pip-version-check", "-q", "install",
           "-c", str(ROOT / "constraints.txt")]
    index = os.environ.get("TORCH_INDEX_URL")
    subprocess.run(pip + ([f"--index-url={index}"] if index else []) + [f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run(pip + [f"mergekit=={MERGEKIT_VERSION}"], check=True)
    return python


def base_for_mergekit(finetuned: Path, pretrained: Path, workdir: Path) -> tuple[Path, bool]:
    """(the base mergekit reads, whether it is a re-keyed copy): θ_Pre as it is when its names are θ_B's,
    else a copy under θ_B's names with θ_B's config and head (see the module docstring)."""
    from safetensors import safe_open

    from lib.checkpoints import _cached_or_emptied, _write_shards, folder_weight_files, mark_cache_complete

    def names(folder: Path) -> set[str]:
        found: set[str] = set()
        for file in folder_weight_files(folder):
            with safe_open(str(file), framework="pt") as handle:
                found.update(handle.keys())
        return found

    ft_names, pre_names = names(finetuned), names(pretrained)
    if ft_names <= pre_names:
        return pretrained, False
    # the prefix θ_B adds to θ_Pre's names (bert.): taken from a name that exists once stripped, not the head's
    prefix = next(n.split(".")[0] + "." for n in sorted(ft_names) if n.split(".", 1)[-1] in pre_names)
    target = workdir / f"mergekit-base-{pretrained.parent.name}"
    spec = {"pretrained": str(pretrained.resolve()), "finetuned": str(finetuned.resolve()), "prefix": prefix,
            "files": {str(f): [f.stat().st_size, f.stat().st_mtime_ns]
                      for f in folder_weight_files(pretrained) + folder_weight_files(finetuned)}}
    if not _cached_or_emptied(target, spec):  # rebuilt when either input changed
        def tensors():
            for file in folder_weight_files(pretrained):
                with safe_open(str(file), framework="pt") as handle:
                    for name in handle.keys():
                        yield prefix + name, handle.get_tensor(name)
            for file in folder_weight_files(finetuned):  # what θ_Pre lacks under any name: the head
                with safe_open(str(file), framework="pt") as handle:
                    for name in handle.keys():
                        if name.removeprefix(prefix) not in pre_names:
                            yield name, handle.get_tensor(name)

        target.mkdir(parents=True, exist_ok=True)
        _write_shards(target, tensors(), 1_000_000_000)
        (target / "config.json").write_text((finetuned / "config.json").read_text())
        mark_cache_complete(target, spec)
    return target, True


def merge_config(finetuned: Path, base: Path, ratio: float, dtype: str) -> dict:
    """``dare_linear`` with ``rescale: false``, weight 1, density ρ: θ_Pre + Bernoulli(ρ) ⊙ Δ."""
    return {"merge_method": "dare_linear", "base_model": str(base), "dtype": dtype,
            "parameters": {"rescale": False, "normalize": False},
            "models": [{"model": str(finetuned), "parameters": {"weight": 1.0, "density": ratio}}]}


def run_mergekit(python: Path, config: dict, output: Path, threads: int, timeout: float, shard_params: int) -> dict:
    """One mergekit run in a fresh process of its environment: wall time of ``run_merge`` and peak RSS."""
    output.parent.mkdir(parents=True, exist_ok=True)
    config_file = output.parent / "mergekit-config.json"
    config_file.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([str(python), str(CHILD), str(config_file), str(output), str(threads), str(shard_params)],
                          capture_output=True,
                          text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"mergekit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
