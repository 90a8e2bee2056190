"""The redesign kept every output bit for bit: purify, mix and epur on a tiny BERT pair give the weights
the code before it gave (issue 14). The hashes were computed with the code at commit 216fe85 (before the
redesign), torch 2.13.0 and the versions in constraints.txt; a change of library version may move them —
then recompute them at a commit known to be right and say why in the commit.

The purify runs step AdamW one tensor at a time, as that code did: the fused CPU kernel finemix uses since
81b79f1 changes weights by rounding only (tests/test_trainer.py), so the pins keep checking everything else.

Training rounds differently on CPUs with other vector units (torch's AVX512 and AVX2 kernels), so the trained
(purify) pins are kept per CPU capability: the AVX512 ones as computed at 216fe85, the AVX2 ones computed on an
AVX2-only machine with the code at 216fe85 itself (2026-12-06), from the same inputs and commands,
one torch thread as conftest.py sets."""

import hashlib
from pathlib import Path

import pytest
import torch

from finemix.cli import main
from tiny_models import make_pair, text_rows, write_text_csv

TRAINED = {  # torch.backends.cpu.get_cpu_capability() → the purify pins on that kind of CPU
    "AVX512": {
        "purify-default": "016c6d32f3f449169c0951e8879f93ae451ba3bf432f9856e2df8a7f570f5c14",
        "purify-distill": "c34469fc8f049cb6758d265456e1358bdec5e2c6cfbae767908b02ebe0bddbf6",
        "purify-sel-fixed": "d6bf0a4b8efefc226d01c996b2e9d518d6bf7279ca8ed0dc77a874d140f5b3e6",
    },
    "AVX2": {
        "purify-default": "3de2683be221b50029a0d87c8a8cb0a197c79d7c77ade2ad17cf3dd45757a0da",
        "purify-distill": "5bb2865d98d217b73b0984526ded3fae1fc67a01f139e0fff179e6311442f941",
        "purify-sel-fixed": "067c00264e0126215af5b492f153ce4675fc7a54930a8cded7466b09a4dc827b",
    },
}
PINNED = {
    **dict.fromkeys(TRAINED["AVX512"]),  # filled in per CPU by the test
    # re-pinned for the random-mask generator v2 (issue 19: 16-bit draws, one generator per chunk); the other
    # outputs did not move (their ρ draws no random mask). v1's hash: e0debe9e…5bd67bce698f
    "mix-random": "4c1d359b31f076943b0ef6e61516a81c1b069fab1adc08358d0090af62490704",
    "mix-sel-global": "9b78f17096c229ea98d73e2b445766b767c78a4d995f340c12700318892f7e94",
    "epur": "f84772a2bf20c48b380e219fad0fdca9231465369f51c77d9839d95adc6e2eaa",
}
TRAIN = ["--batch-size", "8", "--max-length", "32", "--quiet"]


def tensors_digest(folder: Path) -> str:
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    state = load_file(str(folder / "model.safetensors"))
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pinned")
    pair = make_pair("bert", root / "pair")  # a fresh pair: the shared fixtures may be built with other options
    clean = write_text_csv(root / "clean.csv", text_rows() + [(t + " , really", label) for t, label in text_rows()])
    unlabelled = root / "unlabelled.txt"
    unlabelled.write_text("\n".join(t for t, _ in text_rows()) + "\n")
    # Distilling on rewrites of the labelled rows, the E-PUR check and the candidates' probe came after the
    # redesign (issue 16): off here, so the runs do what the code before the redesign did.
    (root / "no-augment.yaml").write_text("augment_rows: 0\nstop_when_epur_clears: false\nflagged_word_guard: false\n")
    return root, ["--backdoored", str(pair.finetuned), "--pretrained", str(pair.pretrained)], clean, unlabelled


def commands(base, clean, unlabelled) -> dict:
    no_augment = str(clean.parent / "no-augment.yaml")
    return {
        "purify-default": ["purify", *base, "--clean-data", str(clean), "--epochs", "2", *TRAIN, "--config", no_augment],
        "purify-distill": ["purify", *base, "--clean-data", str(clean), "--unlabelled-text", str(unlabelled), "--epochs", "1", *TRAIN,
                           "--config", no_augment],
        "purify-sel-fixed": ["purify", *base, "--clean-data", str(clean), "--ratio", "0.3", "--mix", "sel", "--epochs", "1", *TRAIN,
                             "--config", no_augment],
        "mix-random": ["mix", *base, "--ratio", "0.3"],
        "mix-sel-global": ["mix", *base, "--ratio", "0.3", "--mix", "sel", "--sel-scope", "global"],
        "epur": ["epur", *base, "--clean-data", str(clean)],
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PINNED))
def test_outputs_are_bit_identical_to_the_code_before_the_redesign(name, inputs, capsys, monkeypatch):
    from finemix import train

    monkeypatch.setattr(train, "_fused_optimizer", lambda accelerator: False)
    root, base, clean, unlabelled = inputs
    folder = root / name
    assert main(commands(base, clean, unlabelled)[name] + ["--output", str(folder)]) == 0, capsys.readouterr().err
    pinned = PINNED[name]
    if pinned is None:  # a trained output: its pin depends on the CPU's vector unit
        capability = torch.backends.cpu.get_cpu_capability()
        if capability not in TRAINED:
            pytest.skip(f"no purify pins for a {capability} CPU (pinned: {', '.join(TRAINED)})")
        pinned = TRAINED[capability][name]
    assert tensors_digest(folder) == pinned
