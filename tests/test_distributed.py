"""Two processes through ``accelerate launch`` (torchrun, gloo on CPU) give a complete output."""

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate CLI not installed")
@pytest.mark.parametrize("state_weight", [None, 1.0])  # 1.0: the loss reads the head's token through DDP's wrapper
def test_two_process_purify(tmp_path, bert_pair, tiny_text_csv, state_weight):
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "out"
    extra = []
    if state_weight is not None:
        (tmp_path / "states.yaml").write_text(f"distill_state_weight: {state_weight}\n")
        extra = ["--config", str(tmp_path / "states.yaml")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "finemix", "purify",
               "--backdoored", str(bert_pair.finetuned), "--pretrained", str(bert_pair.pretrained),
               "--clean-data", str(tiny_text_csv), "--output", str(out), "--epochs", "1", "--batch-size", "8", "--quiet", *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["processes"] == 2
    if state_weight is not None:
        assert report["unlabelled_text"]["teacher"]["state_matching"]["weight"] == state_weight
    assert result.stdout.count("purified model written") == 1  # only the main process reports and writes
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(out)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate CLI not installed")
def test_two_process_purify_of_a_chat_model(tmp_path):
    """The chat-model repair under DDP (two CPU processes over gloo) on a tiny random Llama."""
    from finemix.data.chats import Chat, write_chats
    from tiny_llm import make_llm_pair

    pair = make_llm_pair(tmp_path / "llm")
    chats = tmp_path / "chats.jsonl"
    words = "the movie was good bad film story plot great awful one two three".split()
    write_chats(chats, [Chat.single(" ".join(words[(i + k) % len(words)] for k in range(5)), words[i % len(words)])
                        for i in range(40)])
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29534", "-m", "finemix", "purify",
               "--backdoored", str(pair.finetuned), "--pretrained", str(pair.pretrained), "--clean-data", str(chats),
               "--output", str(out), "--epochs", "1", "--batch-size", "8", "--max-length", "64", "--quiet"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["processes"] == 2 and report["task"] == "causal-lm"
    assert result.stdout.count("purified model written") == 1
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


def _launch(*args, port: int, config: str = "fsdp.yaml") -> subprocess.CompletedProcess:
    """``accelerate launch`` with a shipped config file, as two CPU processes."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [launcher, "launch", "--config_file", str(root / "configs" / "accelerate" / config), "--num_processes", "2",
               "--mixed_precision", "no", "--main_process_port", str(port), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _unique_chats(path, count: int):
    import random

    from finemix.data.chats import Chat, write_chats

    words = "the movie was good bad film story plot great awful one two three".split()
    rng = random.Random(0)
    write_chats(path, [Chat.single(" ".join(rng.choice(words) for _ in range(6)), rng.choice(words)) for _ in range(count)])
    return path


def _tensors(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate CLI not installed")
def test_fsdp2_purify_of_a_chat_model_matches_ddp(tmp_path):
    """The shipped FSDP config, with FSDP2 switched on in CPU processes (tests/fsdp_on_cpu.py): the
    training copy is sharded, every process evaluates it, the gathered weights equal DDP's."""
    from tiny_llm import make_llm_pair

    pair = make_llm_pair(tmp_path / "llm")
    chats = _unique_chats(tmp_path / "chats.jsonl", 80)
    here = os.path.dirname(os.path.abspath(__file__))
    args = ["purify", "--backdoored", pair.finetuned, "--pretrained", pair.pretrained, "--clean-data", chats,
            "--epochs", "3", "--batch-size", "8", "--max-length", "64", "--lr", "3e-3", "--quiet"]
    fsdp = _launch(os.path.join(here, "fsdp_on_cpu.py"), *args, "--output", tmp_path / "fsdp", port=29535)
    assert fsdp.returncode == 0, fsdp.stderr[-2000:]
    ddp = _launch("-m", "finemix", *args, "--output", tmp_path / "ddp", port=29536, config="ddp.yaml")
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    reports = {name: json.loads((tmp_path / name / "finemix_report.json").read_text()) for name in ("fsdp", "ddp")}
    candidates = {name: report["ratio_search"]["candidates"] for name, report in reports.items()}
    assert [c["sharded_training"] for c in candidates["fsdp"]] == [True] * len(candidates["fsdp"])
    assert [c["sharded_training"] for c in candidates["ddp"]] == [False] * len(candidates["ddp"])
    assert candidates["fsdp"][0]["heldout_accuracy"] == pytest.approx(candidates["ddp"][0]["heldout_accuracy"], abs=1e-5)
    assert fsdp.stdout.count("purified model written") == 1
    sharded, plain = _tensors(tmp_path / "fsdp"), _tensors(tmp_path / "ddp")
    suspect = _tensors(pair.finetuned)
    assert sharded.keys() == plain.keys()
    assert max(float((sharded[k] - plain[k]).abs().max()) for k in sharded) < 1e-4
    assert max(float((sharded[k] - suspect[k]).abs().max()) for k in sharded) > 1e-2  # it did train


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate CLI not installed")
def test_fsdp2_restores_the_best_epoch_like_ddp(tmp_path):
    """A held-out measure that falls after epoch 1: the sharded copy's epoch-1 state is restored and gathered."""
    from safetensors.torch import load_file
    from tiny_llm import make_llm_pair

    pair = make_llm_pair(tmp_path / "llm")
    chats = _unique_chats(tmp_path / "chats.jsonl", 80)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsdp_best_epoch.py")
    outputs = {}
    for port, mode in ((29537, "fsdp"), (29538, "ddp")):
        outputs[mode] = tmp_path / f"{mode}.safetensors"
        run = _launch(script, mode, pair.finetuned, chats, outputs[mode], port=port)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split()[-1] == {"fsdp": "sharded", "ddp": "unsharded"}[mode]
    sharded, plain = load_file(outputs["fsdp"]), load_file(outputs["ddp"])
    assert max(float((sharded[k] - plain[k]).abs().max()) for k in sharded) < 1e-5


def test_fsdp1_and_deepspeed_are_refused_in_one_line():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from finemix.errors import FinemixError
    from finemix.train import _shards_the_model

    assert _shards_the_model(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)) is False
    assert _shards_the_model(SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=True)) is True
    with pytest.raises(FinemixError, match="FSDP version 1 is not supported"):
        _shards_the_model(SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=False))
    with pytest.raises(FinemixError, match="DeepSpeed is not supported yet"):
        _shards_the_model(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))
