"""Jobs (run in children by ``run_job``) on checkpoints without training: building the input pairs,
``finemix mix`` and ``finemix epur`` through the Python API."""

from __future__ import annotations

from pathlib import Path

from lib.checkpoints import build_minilm_pair, build_synthetic_pair, checkpoint_bytes
from lib.fixtures import mr_texts
from lib.probe import Probe


def job_build_minilm_pair(params: dict, probe: Probe) -> dict:
    ft, pre = build_minilm_pair(Path(params["workdir"]))
    return {"finetuned": str(ft), "pretrained": str(pre)}


def job_build_synthetic(params: dict, probe: Probe) -> dict:
    ft, pre = build_synthetic_pair(Path(params["workdir"]), params["hidden"], params["layers"])
    return {"finetuned": str(ft), "pretrained": str(pre)}


def job_mix_finemix(params: dict, probe: Probe) -> dict:
    """``finemix mix`` through the Python API (``mix_checkpoint``)."""
    from finemix.config import MixConfig
    from finemix.repair.steps import mix_checkpoint

    config = MixConfig(ratio=params.get("ratio", 0.3), mode=params.get("mode", "random"), seed=0)
    with probe.region():
        report = mix_checkpoint(params["finetuned"], params["pretrained"], params["output"], config, force=True)
    return {"finemix_timings_s": report.get("timings_s"), "kept_fraction": report["mixing"]["kept_fraction"],
            "output_bytes": checkpoint_bytes(Path(params["output"]))}


def job_epur_finemix(params: dict, probe: Probe) -> dict:
    """``finemix epur`` through the Python API (``epur_checkpoint``); frequency texts loaded untimed."""
    from finemix.config import EpurConfig
    from finemix.repair.steps import epur_checkpoint

    texts = mr_texts(params.get("texts", 500))
    with probe.region():
        report = epur_checkpoint(params["finetuned"], params["pretrained"], params["output"], texts, EpurConfig(), force=True)
    return {"finemix_timings_s": report.get("timings_s"), "reset_rows": len(report["epur"]["rows"]),
            "output_bytes": checkpoint_bytes(Path(params["output"]))}


def job_build_llama(params: dict, probe: Probe) -> dict:
    from lib.checkpoints import build_llama_pair

    ft, pre = build_llama_pair(Path(params["workdir"]), params["hidden"], params["layers"], params["intermediate"])
    return {"finetuned": str(ft), "pretrained": str(pre)}


def job_build_lora_adapter(params: dict, probe: Probe) -> dict:
    from lib.checkpoints import build_lora_adapter

    folder = build_lora_adapter(Path(params["base"]), Path(params["folder"]), params.get("rank", 16))
    return {"adapter": str(folder)}


def job_mix_adapter(params: dict, probe: Probe) -> dict:
    """``finemix mix`` on a LoRA adapter through the Python API (``mix_adapter``)."""
    from finemix.config import MixConfig
    from finemix.repair.adapter_mix import mix_adapter

    config = MixConfig(ratio=params.get("ratio", 0.5), mode="random", seed=0)
    with probe.region():
        report = mix_adapter(params["adapter"], params["pretrained"], params["output"], config, params["granularity"],
                             force=True)
    return {"kept_fraction": report["mixing"]["kept_fraction"]}
