"""Mixing as a step of the repair: θ_Mix streamed tensor by tensor from a weight source.

Per tensor: E-PUR's planned rows are reset first (they then equal θ_Pre, so the mask
leaves them there), and ``core.mixing.mix_tensor`` applies the Fine-mixing formula.
Tensors the pre-trained model lacks (a classification head) follow the head policy.
Non-float tensors are refused (``check_mixable``) unless they are id buffers equal in both.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from ..config import MixConfig
from ..core import epur as epur_math
from ..core import mixing, topk
from ..errors import FinemixError
from ..weights.pair import CheckpointPair
from ..weights.source import FullCheckpointSource, TensorDelta
from ..weights.writer import ShardedWriter, TensorSpec, copy_side_files
from .epur_step import EpurPlan

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass
class MixSummary:
    rule: str  # how names were paired
    mixed_tensors: int
    kept_fraction: float  # over all mixed elements
    head_policy: str
    head_tensors: list[str]  # tensors θ_Pre lacks
    ignored_pretrained: list[str]  # tensors only θ_Pre has
    mask_generator: str = ""  # random masks: the generator's version (core.mixing.MASK_GENERATOR)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mixed_tensors(
    pair: CheckpointPair, config: MixConfig, epur_plan: Optional[EpurPlan] = None, summary: Optional[dict] = None,
    workers: int = 2,
) -> Iterator[tuple[str, "torch.Tensor"]]:
    """(name, θ_Mix tensor) one at a time, in the fine-tuned checkpoint's order.

    E-PUR, when planned, is applied to θ_B first: the reset rows equal θ_Pre, so
    mixing leaves them there whatever the mask. ``workers`` tensors are read and mixed
    at once in threads (torch and file reads release the GIL), so reading, mask drawing
    and the caller's writing overlap; results still come out in order. Tensors the mix
    could only pass through untouched are refused here, before the first one is read
    (``check_mixable``).
    """
    check_mixable(pair, config.head, epur_plan.tensor if epur_plan is not None else None)
    return _mixed_tensors(pair, config, epur_plan, summary, workers)


def _mixed_tensors(pair: CheckpointPair, config: MixConfig, epur_plan: Optional[EpurPlan], summary: Optional[dict],
                   workers: int) -> Iterator[tuple[str, "torch.Tensor"]]:
    source = FullCheckpointSource(pair)
    threshold = _global_threshold(pair, config) if config.mode == "sel" and config.sel_scope == "global" else None
    unmixed = None if config.mix_embeddings else pair.embedding_name()  # kept whole when not mixed
    kept = total = 0
    mix_one = functools.partial(_mix_one, source, config, epur_plan, threshold, unmixed, pair.config)
    with threads_per_worker(workers), topk.reused_change_buffers():
        for name, (tensor, kept_here, total_here) in ordered_map(mix_one, source.names(), workers):
            kept, total = kept + kept_here, total + total_here
            yield name, tensor
    if summary is not None:
        summary["kept_fraction"] = kept / max(1, total)


@contextlib.contextmanager
def threads_per_worker(workers: int) -> Iterator[None]:
    """torch's intra-op threads shared out among ``workers`` mixing threads while they run, then restored:
    two workers each running ops on every core's OpenMP threads oversubscribe the cores (a loaded 2-core
    machine measured the random mix 2.1× and ``sel`` 1.7× slower with 2 intra-op threads than with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // max(1, workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mix_one(source: FullCheckpointSource, config: MixConfig, epur_plan: Optional[EpurPlan], threshold: Optional[float],
             unmixed: Optional[str], model_config: dict, name: str) -> tuple["torch.Tensor", int, int]:
    """θ_Mix for one tensor, with how many of its elements were kept and mixed."""
    import torch

    if config.ratio >= 1.0 and source.paired(name) and not (epur_plan is not None and epur_plan.resets(name)):
        # ρ = 1 (``finemix epur``) keeps θ_B whole: θ_Pre is not read, a third of the floor's bytes
        finetuned = source.finetuned(name)
        if torch.is_floating_point(finetuned):
            return finetuned, finetuned.numel(), finetuned.numel()
    entry = source.tensor(name)
    if entry.pretrained is None:
        return head_tensor(entry.finetuned, name, config, model_config), 0, 0
    if not (torch.is_floating_point(entry.finetuned) and torch.is_floating_point(entry.pretrained)):
        # Only id buffers get here (check_mixable): integer in both checkpoints and equal, so θ_B is θ_Pre.
        problem = _id_buffer_problem(name, entry.finetuned, entry.pretrained)
        if problem:
            raise FinemixError(problem)
        return entry.finetuned, 0, 0
    finetuned = _with_epur(entry, epur_plan)
    if name == unmixed:
        return finetuned, finetuned.numel(), finetuned.numel()
    mixed, kept = mixing.mix_tensor(finetuned, entry.pretrained, config.ratio, config.mode, config.seed, name, threshold)
    return mixed, kept, finetuned.numel()


def check_mixable(pair: CheckpointPair, head: str = "keep", epur_tensor: Optional[str] = None) -> None:
    """Refuse, naming the tensor, any tensor the mix could not treat as a floating-point weight.

    Mixing, E-PUR and head re-initialisation act on floating-point tensors; transformers loads
    an integer tensor into a float parameter as it is (a word embedding stored as int32 × 1e5
    behind a LayerNorm gives the same logits as the float one), so a non-float tensor passed
    through untouched would bypass all three while the report claimed them. Only id buffers
    pass (``position_ids``, ``token_type_ids``): non-float in both checkpoints and equal, so the
    output holds θ_Pre's values whatever ρ. Refused: a non-float word embedding or E-PUR
    target; a paired tensor that is float on one side only, or non-float and different from
    θ_Pre; with ``head="reinit"``, a non-float parameter (``*.weight``/``*.bias``) θ_Pre lacks.
    Reads only the non-float tensors (ids are small); the rest is decided from the headers.
    """
    from ..weights.formats import dtype_tables
    from ..weights.roles import is_word_embedding, roles_for

    to_torch = dtype_tables()[1]
    roles = roles_for(pair.config)

    def is_float(code: str) -> bool:
        dtype = to_torch.get(code)
        return dtype is not None and dtype.is_floating_point

    for name in pair.finetuned.names():
        ft_code = pair.finetuned.dtype(name)
        pre_name = pair.names.pairs.get(name)
        pre_code = pair.pretrained.dtype(pre_name) if pre_name is not None else None
        if is_float(ft_code) and (pre_code is None or is_float(pre_code)):
            continue
        where = f"tensor {name} is stored as {ft_code} in {pair.finetuned_dir}"
        if name == epur_tensor or is_word_embedding(name, roles):
            pre_side = f" and as {pre_code} in the pre-trained {pair.pretrained_dir}" if pre_code else ""
            raise FinemixError(f"{where}{pre_side}: the word embedding must be floating point (a non-float copy "
                               "would pass through mixing and E-PUR untouched)")
        if pre_name is None:
            if head == "reinit" and name.rsplit(".", 1)[-1] in ("weight", "bias"):
                raise FinemixError(f"{where} and the pre-trained model lacks it: --head reinit cannot "
                                   "re-initialise a non-float weight")
            continue
        if is_float(ft_code) != is_float(pre_code):
            raise FinemixError(f"{where} but as {pre_code} in the pre-trained {pair.pretrained_dir}: a weight must be "
                               "floating point in both to be mixed")
        problem = _id_buffer_problem(name, pair.finetuned.get(name), pair.pretrained.get(pre_name))
        if problem:
            raise FinemixError(problem)


def _id_buffer_problem(name: str, finetuned: "torch.Tensor", pretrained: Optional["torch.Tensor"]) -> Optional[str]:
    """Why a non-float tensor of θ_B cannot pass through the mix untouched (None when it can:
    θ_Pre has it, also non-float, with the same values)."""
    import torch

    if pretrained is None or any(torch.is_floating_point(t) or t.is_complex() for t in (finetuned, pretrained)):
        other = "absent" if pretrained is None else str(pretrained.dtype)
        return (f"tensor {name} is {finetuned.dtype} in the fine-tuned model and {other} in the pre-trained one: "
                "only floating-point weights can be mixed")
    if finetuned.shape != pretrained.shape or not torch.equal(finetuned.to(torch.int64), pretrained.to(torch.int64)):
        return (f"tensor {name} is a non-float tensor ({finetuned.dtype}) that differs from the pre-trained one: "
                "only identical id buffers pass through the mix, and a changed one cannot be mixed")
    return None


def _with_epur(entry: TensorDelta, epur_plan: Optional[EpurPlan]) -> "torch.Tensor":
    """θ_B with E-PUR's planned rows reset to θ_Pre (the tensor itself when E-PUR does not touch it)."""
    import torch

    if epur_plan is None or not epur_plan.resets(entry.name):
        return entry.finetuned
    return epur_math.reset_rows(entry.finetuned, entry.pretrained, torch.as_tensor(epur_plan.rows, dtype=torch.long))


def ordered_map(function, items: Sequence, workers: int) -> Iterator:
    """(item, function(item)) in order, computing up to ``workers`` items ahead in threads. Not more: with
    one more under way, the mix and E-PUR ran 1.3-1.5× slower where the report's SHA-256 thread shares the
    two cores (bf16 3 GB pair, one quiet run each)."""
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1:
        yield from ((item, function(item)) for item in items)
        return
    pending: collections.deque = collections.deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="finemix-mix")
    try:
        for item in items:
            pending.append((item, executor.submit(function, item)))
            if len(pending) >= workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _global_threshold(pair: CheckpointPair, config: MixConfig) -> float:
    """First pass of global ``sel``: one float32 vector of |Δ| for the whole model."""
    import torch

    changes = []
    for name, pre_name in pair.names.pairs.items():
        tensor = pair.finetuned.get(name)
        if torch.is_floating_point(tensor) and (config.mix_embeddings or name != pair.embedding_name()):
            changes.append((tensor.float() - pair.pretrained.get(pre_name).float()).abs().flatten())
    return mixing.global_threshold(torch.cat(changes), config.ratio)


def head_tensor(tensor: "torch.Tensor", name: str, config: MixConfig, model_config: dict) -> "torch.Tensor":
    """Policy for tensors the pre-trained side lacks: keep θ_B's, or re-initialise."""
    import torch

    if config.head == "keep" or not torch.is_floating_point(tensor):
        return tensor
    # As transformers' _init_weights for BERT-like models: N(0, initializer_range), zero bias, unit norm scale.
    if name.endswith("bias"):
        return torch.zeros_like(tensor)
    if tensor.ndim == 1:
        return torch.ones_like(tensor)
    generator = torch.Generator().manual_seed(mixing.tensor_seed(config.seed, "reinit:" + name))
    std = float(model_config.get("initializer_range", 0.02))
    return (torch.randn(tensor.shape, generator=generator) * std).to(tensor.dtype)


def mix_summary(pair: CheckpointPair, config: MixConfig, kept_fraction: float) -> MixSummary:
    return MixSummary(
        rule=pair.names.rule,
        mixed_tensors=len(pair.names.pairs),
        kept_fraction=round(kept_fraction, 6),
        head_policy=config.head,
        head_tensors=list(pair.names.finetuned_only),
        ignored_pretrained=list(pair.names.pretrained_only),
        mask_generator=mixing.MASK_GENERATOR if config.mode == "random" and 0.0 < config.ratio < 1.0 else "",
    )


def write_tensors(pair: CheckpointPair, specs: list[TensorSpec], tensors: Iterator[tuple[str, "torch.Tensor"]],
                  folder: Path, max_shard_bytes: int = 2 * 1024**3) -> dict:
    """Stream ``tensors`` (in the order of ``specs``) into ``folder``, then copy config and tokenizer;
    return ``copy_side_files``' record of what was copied and left out (for the report)."""
    write_tensor_stream(specs, tensors, folder, max_shard_bytes)
    return copy_side_files(pair.finetuned_dir, folder)


def write_tensor_stream(specs: list[TensorSpec], tensors: Iterator[tuple[str, "torch.Tensor"]], folder: Path,
                        max_shard_bytes: int = 2 * 1024**3) -> None:
    """Stream ``tensors`` (in the order of ``specs``) into safetensors shards in ``folder``, each checked finite."""
    writer = ShardedWriter(folder, specs, max_shard_bytes)
    try:
        for name, tensor in tensors:
            if not tensor_is_finite(tensor):  # as strict as reading: the caller's atomic output is then discarded
                raise FinemixError(f"tensor {name} of the output holds NaN or Inf values; nothing was written")
            writer.add(name, tensor)
        writer.close()
    finally:
        writer.abort()


def tensor_is_finite(tensor: "torch.Tensor") -> bool:
    """False for a floating-point tensor with a NaN or Inf (non-float tensors are always finite)."""
    from ..weights.reader import all_finite

    return not tensor.is_floating_point() or all_finite(tensor)


def finetuned_specs(pair: CheckpointPair) -> list[TensorSpec]:
    """What a mix writes: the fine-tuned checkpoint's tensors, names, dtypes and shapes."""
    reader = pair.finetuned
    return [TensorSpec(name, reader.dtype(name), reader.shape(name)) for name in reader.names()]


def load_mixed_state(model: "torch.nn.Module", pair: CheckpointPair, config: MixConfig, plan: Optional[EpurPlan]) -> float:
    """Load θ_Mix into ``model`` (in place); return the kept fraction."""
    stats: dict = {}
    state = dict(mixed_tensors(pair, config, plan, stats))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise FinemixError(f"checkpoint tensors the model does not have: {', '.join(unexpected[:5])}")
    return stats.get("kept_fraction", 0.0)
