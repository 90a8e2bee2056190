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
def test_two_process_purify(tmp_path, bert_pair, tiny_text_csv):
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "finemix", "purify",
               "--backdoored", str(bert_pair.finetuned), "--pretrained", str(bert_pair.pretrained),
               "--clean-data", str(tiny_text_csv), "--output", str(out), "--epochs", "1", "--batch-size", "8", "--quiet"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "finemix_report.json").read_text())
    assert report["processes"] == 2
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
