"""Small-budget clean fine-tuning on ``accelerate``: one loop, the loss and held-out measure from the task.

The same code runs in one process or under ``accelerate launch`` (DDP on several
processes or GPUs, or FSDP2 for models whose training state does not fit one device):
the model, optimiser, loader and schedule all go through ``Accelerator.prepare``.
Model selection keeps the weights of the epoch with the best accuracy on a held-out
slice, when the caller provides one.

Under FSDP the caller's model stays unsharded: a copy is sharded and trained, and its
weights are gathered back one tensor at a time (every process takes part), because the
repair goes on with the whole model (the next ρ candidate, the verdict, the writing).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .config import TrainConfig
from .errors import FinemixError

if TYPE_CHECKING:
    import torch

    from .data import Example
    from .tasks.base import Task


@dataclasses.dataclass
class TrainResult:
    steps: int
    epochs: float
    seconds: float
    best_epoch: Optional[int] = None
    eval_accuracy: list[float] = dataclasses.field(default_factory=list)
    stopped_early: bool = False
    sharded: bool = False  # trained as an FSDP2 copy (its weights gathered back)
    # accelerate's autocast setting ("no", "bf16", "fp16"): ACCELERATE_MIXED_PRECISION or `accelerate launch
    # --mixed_precision`; the weights stay float32 either way (docs/performance.md §3)
    mixed_precision: str = "no"

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
    unlabelled_targets: "Optional[torch.Tensor | SoftTargets]" = None,
    stop_early: Optional[Callable[[list[float]], bool]] = None,
    step_hook: Optional[StepHook] = None,
    task: Optional["Task"] = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``train``; keep the best epoch on ``eval_set``.

    ``stop_early(held-out measures so far)`` is asked after each epoch's evaluation; True
    ends training there (the best epoch so far is kept, ``result.stopped_early`` is set).

    With ``unlabelled`` rows and their ``unlabelled_targets`` (class probabilities,
    e.g. a teacher's), training minimises soft cross-entropy over both sets:
    one-hot targets for labelled rows, the given probabilities for the others. ``SoftTargets``
    with teacher states adds their weighted matching on the unlabelled rows (core/distillation.py).

    ``step_hook(model)``, when given, returns a function called after every optimiser step
    (research variants use it, e.g. to hold embedding rows fixed; experiments/variants.py).
    The loss and the held-out measure come from ``task`` (classification by default).
    """
    from accelerate.utils import set_seed

    from .tasks.classification import CLASSIFICATION

    task = task or CLASSIFICATION
    started = time.perf_counter()
    set_seed(config.seed)
    accelerator = _accelerator()
    sharded = _shards_the_model(accelerator)
    run = _prepare(accelerator, copy.deepcopy(model) if sharded else model, tokenizer, train, config, unlabelled,
                   unlabelled_targets, task)
    after_step = step_hook(run.accelerator.unwrap_model(run.model)) if step_hook else None
    result = TrainResult(steps=0, epochs=0.0, seconds=0.0, sharded=sharded)
    best = _BestEpoch()
    bar = _progress_bar(run, config)
    run.model.train()
    try:
        for epoch in range(math.ceil(config.epochs)):
            _train_epoch(run, task, config, result, bar, after_step)
            if eval_set and _evaluate_epoch(run, task, tokenizer, eval_set, config, result, best, stop_early,
                                            last=epoch + 1 >= math.ceil(config.epochs)):
                result.stopped_early = True
                break
    except BaseException:
        bar.leave = False  # interrupted or failed: erase the bar now, before the error line, not redraw it at exit
        bar.close()
        raise
    bar.close()
    _finish(run, best, result)
    if sharded:
        _gather_into(run.accelerator.unwrap_model(run.model), model)
    result.epochs = result.steps / run.steps_per_epoch
    result.seconds = time.perf_counter() - started
    return result


def _evaluate_epoch(run: "_Run", task, tokenizer, eval_set, config: TrainConfig, result: TrainResult, best: "_BestEpoch",
                    stop_early, last: bool) -> bool:
    """Measure the epoch on ``eval_set``, remember it if best; True when training should stop here."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    result.eval_accuracy.append(task.clean_measure(unwrapped, tokenizer, eval_set, config.max_length))
    best.consider(result, unwrapped)
    patience = task.default_patience if config.patience is None else config.patience
    return not last and (_out_of_patience(result, patience) or (stop_early is not None and stop_early(result.eval_accuracy)))


def _out_of_patience(result: TrainResult, patience: int) -> bool:
    """True when the last ``patience`` epochs did not improve on the best held-out measure (0: never)."""
    return patience > 0 and result.best_epoch is not None and len(result.eval_accuracy) - result.best_epoch >= patience


StepHook = Callable[["torch.nn.Module"], Callable[[], None]]


@dataclasses.dataclass
class _Run:
    """What ``accelerator.prepare`` hands back, with the schedule's size."""

    accelerator: object
    model: object
    optimizer: object
    loader: object
    scheduler: object
    steps_per_epoch: int
    total_steps: int


def _shards_the_model(accelerator) -> bool:
    """True under FSDP2; FSDP1 and DeepSpeed are refused (their gathers are not built or tested)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise FinemixError("DeepSpeed is not supported yet: launch with FSDP (configs/accelerate/fsdp.yaml) or DDP")
    if accelerator.distributed_type != DistributedType.FSDP:
        return False
    if not accelerator.is_fsdp2:
        raise FinemixError("FSDP version 1 is not supported: set fsdp_version: 2 (see configs/accelerate/fsdp.yaml)")
    return True


def _gather_into(sharded: "torch.nn.Module", model: "torch.nn.Module") -> None:
    """Copy a sharded model's weights into the unsharded ``model``, one whole tensor at a time."""
    import torch

    target = model.state_dict()
    with torch.no_grad():
        for name, value in sharded.state_dict().items():
            whole = value.full_tensor() if hasattr(value, "full_tensor") else value  # DTensor: every process gathers
            target[name].copy_(whole.to(target[name].device))


def _fused_optimizer(accelerator) -> bool:
    """AdamW's fused kernel on CPU. torch's CPU default steps one tensor at a time, which took a
    quarter of a MiniLM repair's training time (benchmarks/bench_finetune.py, ``finemix-unfused``).
    Off under FSDP (sharded parameters) and on accelerators, where torch's default (foreach) stays."""
    return accelerator.device.type == "cpu" and not _shards_the_model(accelerator)


def _prepare(accelerator, model, tokenizer, train, config: TrainConfig, unlabelled, unlabelled_targets,
             task: "Task") -> _Run:
    import torch
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    features = _features(tokenizer, train, config, unlabelled, unlabelled_targets, task)
    sampler = _EpochBatches([len(f["input_ids"]) for f in features], config.batch_size, config.seed)
    loader = DataLoader(features, batch_sampler=sampler, collate_fn=task.collator(tokenizer))
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr,
                                  fused=_fused_optimizer(accelerator) or None)
    steps_per_epoch = len(sampler)  # global batches: the same count on any number of processes
    total_steps = max(1, int(round(config.epochs * steps_per_epoch)))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    return _Run(accelerator, model, optimizer, loader, scheduler, steps_per_epoch, total_steps)


def _progress_bar(run: _Run, config: TrainConfig):
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, desc="fine-tuning",
                disable=not (config.progress and run.accelerator.is_local_main_process))


def _train_epoch(run: _Run, task, config: TrainConfig, result: TrainResult, bar, after_step) -> None:
    for batch in run.loader:
        if result.steps >= run.total_steps:
            break
        loss = task.loss(run.model, batch)
        run.accelerator.backward(loss)
        run.accelerator.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
        run.optimizer.step()
        if after_step is not None:
            after_step()
        run.scheduler.step()
        run.optimizer.zero_grad()
        result.steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")


class _BestEpoch:
    """The weights of the epoch with the best held-out measure. ">" keeps the earliest best
    epoch: fewer steps away from the starting point."""

    def __init__(self) -> None:
        self.measure, self.state = -math.inf, None  # a negated loss is below -1

    def consider(self, result: TrainResult, model) -> None:
        if result.eval_accuracy[-1] > self.measure:
            self.measure, result.best_epoch = result.eval_accuracy[-1], len(result.eval_accuracy)
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _finish(run: _Run, best: _BestEpoch, result: TrainResult) -> None:
    """Load the best epoch back (unless it is the last), leave the model in eval mode. Under mixed precision
    accelerate wraps the model's forward in autocast; the wrapper is taken off here, so the returned model
    (the held-out measure, calibration, later candidates' starting forward) runs as it was given."""
    unwrapped = run.accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)
    result.mixed_precision = str(run.accelerator.mixed_precision)
    if best.state is not None and result.best_epoch != len(result.eval_accuracy):
        unwrapped.load_state_dict(best.state)
    unwrapped.eval()
    run.accelerator.free_memory()


@dataclasses.dataclass(frozen=True)
class SoftTargets:
    """A teacher's targets for the unlabelled rows: class probabilities and, optionally, its hidden
    states at the head's token, matched with weight ``state_weight`` (labelled rows: weight 0)."""

    probabilities: "torch.Tensor"
    states: Optional["torch.Tensor"] = None
    state_weight: float = 0.0


def _features(tokenizer, train, config: TrainConfig, unlabelled, unlabelled_targets, task: "Task") -> list[dict]:
    """The task's features; with ``unlabelled`` rows and their targets (classifiers), soft-label rows for
    both sets; with ``unlabelled`` rows and no targets (a chat model's distilled answers), more rows."""
    features = task.features(tokenizer, train, config.max_length)
    if not unlabelled:
        return features
    if unlabelled_targets is None:
        return features + task.features(tokenizer, unlabelled, config.max_length)
    targets = unlabelled_targets if isinstance(unlabelled_targets, SoftTargets) else SoftTargets(unlabelled_targets)
    states_count = len(unlabelled) if targets.states is None else len(targets.states)
    if len(targets.probabilities) != len(unlabelled) or states_count != len(unlabelled):
        raise ValueError("unlabelled rows need one target distribution (and state, if any) each")
    num_labels = targets.probabilities.shape[1]
    for feature in features:
        one_hot = [0.0] * num_labels
        one_hot[feature.pop("labels")] = 1.0
        feature["soft_labels"] = one_hot
    extra = task.features(tokenizer, unlabelled, config.max_length)
    for feature, target in zip(extra, targets.probabilities.tolist()):
        feature.pop("labels")
        feature["soft_labels"] = target
    if targets.states is not None and targets.state_weight > 0:
        _attach_states(features, extra, targets)
    return features + extra


def _attach_states(labelled: list[dict], extra: list[dict], targets: SoftTargets) -> None:
    """Teacher states on the unlabelled rows at ``state_weight``; zeros at weight 0 on the labelled rows
    (the collator needs every row to carry the same keys)."""
    zeros = [0.0] * targets.states.shape[1]
    for feature in labelled:
        feature["teacher_states"], feature["state_weights"] = zeros, 0.0
    for feature, state in zip(extra, targets.states.tolist()):
        feature["teacher_states"], feature["state_weights"] = state, float(targets.state_weight)


def _param_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
