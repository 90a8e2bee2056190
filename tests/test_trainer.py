"""The trainer's optimiser: AdamW's fused kernel on CPU, the same training as torch's one-tensor-at-a-time step."""

import torch

from finemix import train
from finemix.config import TrainConfig
from finemix.data import Example
from finemix.tasks.classification import load_classifier, predict_logits
from tiny_models import quiet_transformers

ROWS = [Example(f"row {i} {'good' if i % 2 else 'bad'} film", i % 2) for i in range(24)]
CONFIG = TrainConfig(epochs=2, batch_size=8, max_length=16, lr=1e-3, progress=False)


def _trained(bert_pair, monkeypatch, fused: bool):
    """The weights and logits after fine-tuning, and the ``fused`` setting each AdamW was built with."""
    from transformers import AutoTokenizer

    built = []

    class Recording(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.defaults["fused"])

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    if not fused:
        monkeypatch.setattr(train, "_fused_optimizer", lambda accelerator: False)
    with quiet_transformers():
        model = load_classifier(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    train.finetune(model, tokenizer, ROWS, CONFIG)
    return model.state_dict(), predict_logits(model, tokenizer, ROWS, max_length=16), built


def test_cpu_training_uses_the_fused_adamw_and_trains_as_the_unfused_one(bert_pair, monkeypatch):
    fused_state, fused_logits, fused_built = _trained(bert_pair, monkeypatch, fused=True)
    monkeypatch.undo()
    plain_state, plain_logits, plain_built = _trained(bert_pair, monkeypatch, fused=False)
    assert fused_built == [True] and plain_built == [None]
    start = load_classifier(bert_pair.finetuned).state_dict()
    moved = max((plain_state[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the comparison below means something only if training moved the weights
    assert max((fused_state[k] - plain_state[k]).abs().max().item() for k in plain_state) < 1e-4
    assert torch.allclose(fused_logits, plain_logits, atol=1e-4)


def test_accelerate_mixed_precision_reaches_training_and_is_reported(bert_pair, monkeypatch):
    """``ACCELERATE_MIXED_PRECISION=bf16`` (what ``accelerate launch --mixed_precision bf16`` sets) makes the
    trainer's forward passes run under bf16 autocast with float32 weights, and the result says so."""
    from accelerate.state import AcceleratorState
    from transformers import AutoTokenizer

    with quiet_transformers():
        model = load_classifier(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    seen = set()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype) if module.training else None)
    AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    try:
        result = train.finetune(model, tokenizer, ROWS, CONFIG)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert result.mixed_precision == "bf16" and seen == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    seen.clear()
    assert train.finetune(model, tokenizer, ROWS, CONFIG).mixed_precision == "no"
    assert seen == {torch.float32}
