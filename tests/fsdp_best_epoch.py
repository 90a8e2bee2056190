"""Fine-tunes the tiny chat model for 3 epochs in 2 processes whose held-out measure falls after
epoch 1, so the best epoch (1) must be restored; saves the result. Run by tests/test_distributed.py:

    accelerate launch ... tests/fsdp_best_epoch.py {fsdp|ddp} MODEL CHATS OUT

``fsdp`` switches accelerate's FSDP2 on in CPU processes the way tests/fsdp_on_cpu.py does.
"""

import dataclasses
import sys
from pathlib import Path

import torch

import finemix.train as train
from finemix.config import TrainConfig
from finemix.data.chats import load_chats
from finemix.tasks.causal_lm import CAUSAL_LM, load_causal_lm

mode, model_dir, chats_file, out = sys.argv[1:5]
if mode == "fsdp":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fsdp_on_cpu import switch_fsdp_on

    switch_fsdp_on()


@dataclasses.dataclass(frozen=True)
class FallingMeasure:
    """The real held-out loss is computed (in FSDP every process must run the forward passes), then
    replaced by a measure that is best after the first epoch."""

    task: object
    calls: list

    def __getattr__(self, name):
        return getattr(self.task, name)

    def clean_measure(self, model, tokenizer, rows, max_length):
        self.task.clean_measure(model, tokenizer, rows, max_length)
        self.calls.append(None)
        return -float(len(self.calls))


from transformers import AutoTokenizer  # noqa: E402

model, tokenizer = load_causal_lm(Path(model_dir)), AutoTokenizer.from_pretrained(model_dir)
chats = load_chats(Path(chats_file))
config = TrainConfig(epochs=3, lr=3e-3, batch_size=8, max_length=64, seed=0, progress=False, patience=0)
result = train.finetune(model, tokenizer, chats[:60], config, eval_set=chats[60:], task=FallingMeasure(CAUSAL_LM, []))
assert result.best_epoch == 1 and len(result.eval_accuracy) == 3, result
if int(torch.distributed.get_rank()) == 0:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, out)
    print("sharded" if result.sharded else "unsharded")
