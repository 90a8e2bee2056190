"""Small-budget clean fine-tuning on ``accelerate``.

The same code runs in one process or under ``accelerate launch`` (DDP on several
processes or GPUs): the model, optimiser, loader and schedule all go through
``Accelerator.prepare``. Model selection keeps the weights of the epoch with the
best accuracy on a held-out slice, when the caller provides one.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .config import TrainConfig

if TYPE_CHECKING:
    import torch

    from .data import Example


@dataclasses.dataclass
class TrainResult:
    steps: int
    epochs: float
    seconds: float
    best_epoch: Optional[int] = None
    eval_accuracy: list[float] = dataclasses.field(default_factory=list)
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, group_factor: int = 50) -> list[list[int]]:
    """Shuffled batches of similar length, so dynamic padding pads little.

    Indices are shuffled, cut into groups of ``group_factor`` batches, each group
    sorted by length and cut into batches; the batch order is then shuffled.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * group_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class _EpochBatches:
    """A batch sampler whose shuffling changes every epoch yet is seeded."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def __iter__(self):
        batches = length_grouped_batches(self.lengths, self.batch_size, self.seed + self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def no_accelerator() -> bool:
    """True where torch sees no GPU: accelerate must then be told ``cpu=True`` to run
    several processes over gloo (``accelerate launch --multi_gpu`` on a CPU-only machine)."""
    import torch

    return not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()))


def process_state():
    """The accelerate process state, created once with the right device choice."""
    from accelerate import PartialState

    return PartialState(cpu=no_accelerator())


def _accelerator():
    """split_batches: each batch of ``batch_size`` rows is shared out among the processes, so
    the optimiser takes the same steps on the same global batches as one process would
    (otherwise n processes train with n × the batch and 1/n of the steps, and a
    small-budget repair ends up under-trained)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    process_state()
    return Accelerator(cpu=no_accelerator(), dataloader_config=DataLoaderConfiguration(split_batches=True))


def finetune(
    model: "torch.nn.Module",
    tokenizer,
    train: Sequence["Example"],
    config: TrainConfig,
    eval_set: Optional[Sequence["Example"]] = None,
    unlabelled: Sequence["Example"] = (),
    unlabelled_targets: Optional["torch.Tensor"] = None,
    stop_early: Optional[Callable[[list[float]], bool]] = None,
    frozen_embedding_rows: Sequence[int] = (),
) -> TrainResult:
    """Fine-tune ``model`` in place on ``train``; keep the best epoch on ``eval_set``.

    ``stop_early(held-out accuracies so far)`` is asked after each epoch's evaluation; True
    ends training there (the best epoch so far is kept, ``result.stopped_early`` is set).

    With ``unlabelled`` rows and their ``unlabelled_targets`` (class probabilities,
    e.g. a teacher's), training minimises soft cross-entropy over both sets:
    one-hot targets for labelled rows, the given probabilities for the others.

    ``frozen_embedding_rows`` (input-embedding row ids) keep their starting values throughout.
    """
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from .data import make_collator
    from .evaluation import predict

    started = time.perf_counter()
    set_seed(config.seed)
    accelerator = _accelerator()
    features = _features(tokenizer, train, config, unlabelled, unlabelled_targets)
    sampler = _EpochBatches([len(f["input_ids"]) for f in features], config.batch_size, config.seed)
    loader = DataLoader(features, batch_sampler=sampler, collate_fn=make_collator(tokenizer))
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = len(sampler)  # global batches: the same count on any number of processes
    epochs = math.ceil(config.epochs)
    total_steps = max(1, int(round(config.epochs * steps_per_epoch)))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    keep_rows = _RowKeeper(accelerator.unwrap_model(model), frozen_embedding_rows)
    result = TrainResult(steps=0, epochs=0.0, seconds=0.0)
    best_accuracy, best_state = -1.0, None
    bar = tqdm(total=total_steps, desc="fine-tuning", disable=not (config.progress and accelerator.is_local_main_process))
    model.train()
    for epoch in range(epochs):
        for batch in loader:
            if result.steps >= total_steps:
                break
            soft = batch.pop("soft_labels", None)
            if soft is None:
                loss = model(**batch).loss
            else:
                loss = -(soft * model(**batch).logits.float().log_softmax(dim=-1)).sum(dim=-1).mean()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            keep_rows.restore()
            scheduler.step()
            optimizer.zero_grad()
            result.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if eval_set:
            accuracy = _accuracy(predict(accelerator.unwrap_model(model), tokenizer, eval_set, max_length=config.max_length), eval_set)
            result.eval_accuracy.append(accuracy)
            # ">" keeps the earliest best epoch: fewer steps away from the starting point.
            if accuracy > best_accuracy:
                best_accuracy, result.best_epoch = accuracy, epoch + 1
                best_state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
            if stop_early is not None and epoch + 1 < epochs and stop_early(result.eval_accuracy):
                result.stopped_early = True
                break
    bar.close()
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None and result.best_epoch != len(result.eval_accuracy):
        unwrapped.load_state_dict(best_state)
    unwrapped.eval()
    accelerator.free_memory()
    result.epochs = result.steps / steps_per_epoch
    result.seconds = time.perf_counter() - started
    return result


class _RowKeeper:
    """Puts chosen input-embedding rows back after every optimiser step. Restoring (rather than
    zeroing their gradient) also undoes AdamW's weight decay and momentum on them."""

    def __init__(self, model: "torch.nn.Module", rows: Sequence[int]) -> None:
        import torch

        self.weight = model.get_input_embeddings().weight if rows else None
        if self.weight is not None:
            self.rows = torch.as_tensor(sorted(set(rows)), dtype=torch.long, device=self.weight.device)
            self.saved = self.weight.detach()[self.rows].clone()

    def restore(self) -> None:
        if self.weight is None:
            return
        import torch

        with torch.no_grad():
            self.weight[self.rows] = self.saved


def _features(tokenizer, train, config: TrainConfig, unlabelled, unlabelled_targets) -> list[dict]:
    from .data import tokenize_examples

    features = tokenize_examples(tokenizer, train, config.max_length)
    if not unlabelled:
        return features
    if unlabelled_targets is None or len(unlabelled_targets) != len(unlabelled):
        raise ValueError("unlabelled rows need one target distribution each")
    num_labels = unlabelled_targets.shape[1]
    for feature in features:
        one_hot = [0.0] * num_labels
        one_hot[feature.pop("labels")] = 1.0
        feature["soft_labels"] = one_hot
    extra = tokenize_examples(tokenizer, unlabelled, config.max_length)
    for feature, target in zip(extra, unlabelled_targets.tolist()):
        feature.pop("labels")
        feature["soft_labels"] = target
    return features + extra


def _param_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _accuracy(predictions: Sequence[int], examples: Sequence["Example"]) -> float:
    return sum(int(p == e.label) for p, e in zip(predictions, examples)) / max(1, len(examples))
