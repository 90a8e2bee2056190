"""The purification pipeline: E-PUR, mixing, clean fine-tuning, report.

Defense boundary: every function here receives only what a defender holds (the
suspect checkpoint, the public pre-trained one, clean labelled rows and optional
unlabelled text). None takes a trigger, target label or poison flag; evaluation
with a trigger lives in evaluation.py and is never called from here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

from . import epur as epur_math
from . import mixing
from .checkpoint import (
    CheckpointPair,
    ShardedWriter,
    TensorSpec,
    all_finite,
    atomic_output_dir,
    check_output_dir,
    copy_side_files,
    folder_sha256,
    open_pair,
    weights_size,
)
from .config import EpurConfig, MixConfig, PurifyConfig
from .errors import FinemixError

if TYPE_CHECKING:
    import torch

    from .data import Example


# --------------------------------------------------------------------------- E-PUR

@dataclasses.dataclass
class EpurPlan:
    """Which embedding rows E-PUR resets, and why."""

    tensor: str
    rows: list[int]
    tokens: list[dict]  # {"id", "token", "score", "drift", "frequency"} per reset row, highest score first
    frequency_rows: int  # texts the frequencies were counted on

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_epur(pair: CheckpointPair, tokenizer, texts: Sequence[str], config: EpurConfig, max_length: int = 512) -> EpurPlan:
    """Score every vocabulary row and pick the top N to reset."""
    name = pair.embedding_name()
    finetuned, pretrained = pair.finetuned.get(name), pair.pretrained.get(pair.names.pairs[name])
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"] if texts else []
    frequency = epur_math.token_frequencies(encoded, finetuned.shape[0])
    rows, scores = epur_math.select_rows(finetuned, pretrained, frequency, config.top_n, config.min_frequency)
    drift = epur_math.embedding_drift(finetuned, pretrained)
    ids = rows.tolist()
    strings = tokenizer.convert_ids_to_tokens(ids)
    tokens = [
        {"id": i, "token": s, "score": round(float(scores[i]), 6), "drift": round(float(drift[i]), 6), "frequency": int(frequency[i])}
        for i, s in zip(ids, strings)
    ]
    return EpurPlan(tensor=name, rows=ids, tokens=tokens, frequency_rows=len(texts))


# --------------------------------------------------------------------------- mixing

@dataclasses.dataclass
class MixSummary:
    rule: str  # how names were paired
    mixed_tensors: int
    kept_fraction: float  # over all mixed elements
    head_policy: str
    head_tensors: list[str]  # tensors θ_Pre lacks
    ignored_pretrained: list[str]  # tensors only θ_Pre has

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mixed_tensors(
    pair: CheckpointPair, config: MixConfig, epur_plan: Optional[EpurPlan] = None, summary: Optional[dict] = None,
    workers: int = 2,
) -> Iterator[tuple[str, "torch.Tensor"]]:
    """Yield (name, θ_Mix tensor) one at a time, in the fine-tuned checkpoint's order.

    E-PUR, when planned, is applied to θ_B first: the reset rows equal θ_Pre, so
    mixing leaves them there whatever the mask. ``workers`` tensors are read and mixed
    at once in threads (torch and file reads release the GIL), so reading, mask drawing
    and the caller's writing overlap; results still come out in order.
    """
    threshold = _global_threshold(pair, config) if config.mode == "sel" and config.sel_scope == "global" else None
    embedding = None if config.mix_embeddings else pair.embedding_name()  # kept whole when not mixed
    kept = total = 0
    mix_one = functools.partial(_mix_one, pair, config, epur_plan, threshold, embedding)
    for name, (tensor, kept_here, total_here) in _ordered_map(mix_one, pair.finetuned.names(), workers):
        kept, total = kept + kept_here, total + total_here
        yield name, tensor
    if summary is not None:
        summary["kept_fraction"] = kept / max(1, total)


def _mix_one(pair: CheckpointPair, config: MixConfig, epur_plan: Optional[EpurPlan], threshold: Optional[float],
             embedding: Optional[str], name: str) -> tuple["torch.Tensor", int, int]:
    """θ_Mix for one tensor, with how many of its elements were kept and mixed."""
    import torch

    tensor = pair.finetuned.get(name)
    if name not in pair.names.pairs:
        return _head_tensor(tensor, name, config, pair.config), 0, 0
    if not torch.is_floating_point(tensor):
        return tensor, 0, 0  # integer buffers (position ids) are not weights
    pretrained = pair.pretrained.get(pair.names.pairs[name])
    if epur_plan is not None and name == epur_plan.tensor:
        tensor = epur_math.reset_rows(tensor, pretrained, torch.as_tensor(epur_plan.rows, dtype=torch.long))
    if (not config.mix_embeddings and name == embedding) or (config.mode == "random" and config.ratio >= 1.0):
        return tensor, tensor.numel(), tensor.numel()
    if config.mode == "random" and config.ratio <= 0.0:
        return pretrained.to(tensor.dtype), 0, tensor.numel()
    if threshold is not None:
        keep = mixing.threshold_keep_mask(tensor, pretrained, threshold)
    elif config.mode == "sel":
        keep = mixing.sel_keep_mask(tensor, pretrained, config.ratio)
    else:
        keep = mixing.random_keep_mask(tensor.shape, config.ratio, config.seed, name)
    kept = int(keep.count_nonzero())
    return mixing.apply_mask(tensor, pretrained, keep), kept, keep.numel()


def _ordered_map(function, items: Sequence, workers: int) -> Iterator:
    """(item, function(item)) in order, computing up to ``workers`` items ahead in threads."""
    import collections
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


def _head_tensor(tensor: "torch.Tensor", name: str, config: MixConfig, model_config: dict) -> "torch.Tensor":
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
    )


def write_tensors(pair: CheckpointPair, specs: list[TensorSpec], tensors: Iterator[tuple[str, "torch.Tensor"]],
                  folder: Path, max_shard_bytes: int = 2 * 1024**3) -> None:
    """Stream ``tensors`` (in the order of ``specs``) into ``folder``, then copy config and tokenizer."""
    writer = ShardedWriter(folder, specs, max_shard_bytes)
    try:
        for name, tensor in tensors:
            writer.add(name, tensor)
        writer.close()
    finally:
        writer.abort()
    copy_side_files(pair.finetuned_dir, folder)


def finetuned_specs(pair: CheckpointPair) -> list[TensorSpec]:
    """What a mix writes: the fine-tuned checkpoint's tensors, names, dtypes and shapes."""
    reader = pair.finetuned
    return [TensorSpec(name, reader.dtype(name), reader.shape(name)) for name in reader.names()]


# --------------------------------------------------------------------------- single steps

def _check_output(pair: CheckpointPair, output: str | os.PathLike, force: bool) -> None:
    """Fail before any work on outputs that overlap inputs, are not writable, or do not fit."""
    check_output_dir(Path(output), force, (pair.finetuned_dir, pair.pretrained_dir), weights_size(pair.finetuned_dir))


def _atomic_output(pair: CheckpointPair, output: str | os.PathLike, force: bool):
    return atomic_output_dir(output, force, (pair.finetuned_dir, pair.pretrained_dir), weights_size(pair.finetuned_dir))


def mix_checkpoint(
    backdoored: str | os.PathLike,
    pretrained: str | os.PathLike,
    output: str | os.PathLike,
    config: MixConfig,
    force: bool = False,
    max_shard_bytes: int = 2 * 1024**3,
) -> dict:
    """``finemix mix``: θ_Mix written as a model folder, streamed tensor by tensor."""
    timer = _Timer()
    pair = open_pair(backdoored, pretrained)
    _check_output(pair, output, force)
    hashes = hash_inputs_in_background(pair)
    _load_tokenizers(pair, required=False)
    stats: dict = {}
    with _atomic_output(pair, output, force) as folder:
        with timer("mix+write"):
            write_tensors(pair, finetuned_specs(pair), mixed_tensors(pair, config, None, stats), folder, max_shard_bytes)
        report = _base_report("mix", hashes, {"mix": dataclasses.asdict(config)})
        report["mixing"] = mix_summary(pair, config, stats.get("kept_fraction", 0.0)).to_dict()
        report["timings_s"] = timer.values
        _write_report(folder, report)
    return report


def epur_checkpoint(
    backdoored: str | os.PathLike,
    pretrained: str | os.PathLike,
    output: str | os.PathLike,
    texts: Sequence[str],
    config: EpurConfig,
    force: bool = False,
    text_sources: Optional[dict] = None,
) -> dict:
    """``finemix epur``: only the top-N embedding rows reset, everything else θ_B."""
    timer = _Timer()
    pair = open_pair(backdoored, pretrained)
    _check_output(pair, output, force)
    hashes = hash_inputs_in_background(pair)
    tokenizer = _load_tokenizers(pair)
    with timer("epur"):
        plan = plan_epur(pair, tokenizer, texts, config)
    keep_all = MixConfig(ratio=1.0)
    with _atomic_output(pair, output, force) as folder:
        with timer("write"):
            write_tensors(pair, finetuned_specs(pair), mixed_tensors(pair, keep_all, plan), folder)
        report = _base_report("epur", hashes, {"epur": dataclasses.asdict(config)})
        report["epur"] = plan.to_dict()
        report["frequency_text"] = text_sources or {}
        report["timings_s"] = timer.values
        _write_report(folder, report)
    return report


# --------------------------------------------------------------------------- purify

def purify(
    backdoored: str | os.PathLike,
    pretrained: str | os.PathLike,
    clean: Sequence["Example"],
    output: str | os.PathLike,
    config: PurifyConfig,
    unlabelled_texts: Sequence[str] = (),
    force: bool = False,
    sources: Optional[dict] = None,
    frequency_texts: Sequence[str] = (),
    after_mix: Optional[Callable] = None,
) -> dict:
    """E-PUR (optional) → mix with θ_Pre → fine-tune on ``clean``, ρ fixed or searched.

    ``after_mix`` (see ratio_search.choose_ratio) edits each mixed model before it is
    fine-tuned; the fine-pruning defense prunes there.

    ``unlabelled_texts`` (clean, in-domain) serve E-PUR's token counts and, with
    ``config.distill``, distillation of θ_B's clean predictions; ``frequency_texts``
    serve only the token counts.
    """
    from .finetune import process_state
    from .ratio_search import choose_ratio

    # Fix the device choice before anything else touches accelerate. Under `accelerate launch`
    # every process repairs; only the main one writes.
    process = process_state()
    timer = _Timer()
    if len(clean) == 0:
        raise FinemixError("the clean data set is empty")
    with timer("load"):
        pair = open_pair(backdoored, pretrained)
        _check_output(pair, output, force)
        hashes = hash_inputs_in_background(pair)
        tokenizer = _load_tokenizers(pair)
        model = load_classifier(pair.finetuned_dir)
    clean, clean_notes = check_clean_rows(clean, model.config.num_labels)
    plan = None
    if config.epur is not None:
        with timer("epur"):
            texts = [t for e in clean for t in (e.text, e.text_b) if t] + list(unlabelled_texts) + list(frequency_texts)
            plan = plan_epur(pair, tokenizer, texts, config.epur, config.train.max_length)
    distill, repair_config = None, config
    if config.finetune and config.distill and unlabelled_texts and config.distill_rows > 0:
        with timer("teacher"):
            hidden = teacher_hidden_tokens(tokenizer, plan, config)
            distill_rows, distill_probabilities, teacher_record = teacher_targets(model, tokenizer, unlabelled_texts, clean, config, hidden)
        if config.teacher == "cross-fit":
            with timer("cross-fit teacher"):
                distill_probabilities, teacher_record["cross_fit"] = cross_fitted_targets(
                    pair, model, tokenizer, clean, config, plan, distill_rows, distill_probabilities, after_mix)
            repair_config = second_round_config(config, teacher_record["cross_fit"]["first_round_ratios"])
        distill = (distill_rows, distill_probabilities)
    with timer("ratio+finetune"):
        search = choose_ratio(pair, model, tokenizer, clean, repair_config, plan, distill, after_mix)
    student_record = None
    if distill and config.calibrate_student == "prior":
        with timer("calibrate"):
            student_record = calibrate_output_prior(model, tokenizer, distill[0], clean, pair, config)
    if not process.is_main_process:
        process.wait_for_everyone()
        return {}
    with _atomic_output(pair, output, force) as folder:
        with timer("write"):
            state = model.state_dict()
            names = [n for n in pair.finetuned.names() if n in state]
            write_tensors(pair, [TensorSpec.of(n, state[n]) for n in names], ((n, state[n]) for n in names), folder)
        report = _base_report("purify", hashes, _settings(config))
        report["clean_data"] = {"rows": len(clean), "label_counts": _label_counts(clean), **clean_notes, **(sources or {})}
        report["unlabelled_text"] = {
            "rows": len(unlabelled_texts),
            "used_for": (["E-PUR token frequencies"] if unlabelled_texts and plan else [])
            + ([f"distillation of the suspect model's predictions ({len(distill[0])} rows)"] if distill else []),
            "frequency_only_rows": len(frequency_texts),
            "teacher": teacher_record if distill else None,
            "repaired_model_calibration": student_record,
        }
        report["epur"] = plan.to_dict() if plan else None
        report["mixing"] = mix_summary(pair, dataclasses.replace(config.mix, ratio=search["chosen_ratio"]), search["kept_fraction"]).to_dict()
        report["ratio_search"] = search
        report["processes"] = process.num_processes
        report["timings_s"] = timer.values
        _write_report(folder, report)
    process.wait_for_everyone()
    return report


def check_clean_rows(clean: Sequence["Example"], num_labels: int) -> tuple[list["Example"], dict]:
    """Refuse clean sets that would train a wrong model; drop exact duplicates.

    Duplicates are dropped because a row in both the training and held-out parts of
    the ρ search would inflate held-out accuracy; rows with the same text but
    different labels are kept (label noise is the user's call) and counted.
    """
    bad = sorted({e.label for e in clean if not 0 <= e.label < num_labels})
    if bad:
        raise FinemixError(f"clean labels {bad} are outside the model's labels 0..{num_labels - 1}")
    classes = {e.label for e in clean}
    if len(classes) < 2 <= num_labels:
        raise FinemixError(
            f"the clean data has only one class (label {classes.pop()}); fine-tuning on it would teach "
            "the model to predict that class for everything: give rows of at least two classes"
        )
    unique = list(dict.fromkeys(clean))
    texts: dict[tuple, set] = {}
    for example in unique:
        texts.setdefault((example.text, example.text_b), set()).add(example.label)
    notes = {"duplicates_dropped": len(clean) - len(unique),
             "texts_with_conflicting_labels": sum(len(labels) > 1 for labels in texts.values())}
    return unique, notes


def load_classifier(folder: Path):
    """``AutoModelForSequenceClassification`` from a folder; failures as one line (never remote code)."""
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise FinemixError(f"{folder}: cannot load as a sequence classifier ({_short_error(error)})") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not all_finite(tensor):
            raise FinemixError(f"{folder}: weight {name} contains NaN or Inf values")
    return model


def _short_error(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:160] if lines else type(error).__name__)


def teacher_hidden_tokens(tokenizer, plan: Optional[EpurPlan], config: PurifyConfig) -> frozenset[int]:
    """Token ids the teacher does not read: E-PUR's flagged rows under ``teacher_input="epur-masked"``
    (special tokens never: the classifier reads its [CLS])."""
    if config.teacher_input != "epur-masked" or plan is None:
        return frozenset()
    return frozenset(plan.rows) - set(tokenizer.all_special_ids)


def teacher_targets(model, tokenizer, texts: Sequence[str], clean: Sequence["Example"], config: PurifyConfig,
                    hidden_tokens: frozenset[int] = frozenset()):
    """(rows, class probabilities, calibration record) of the unrepaired model for distillation.

    The suspect model's answers on clean text are its clean behaviour: a rare
    trigger is absent, so nothing of the backdoor is taught by these targets. Its
    class prior is not clean, though: dirty-label poisoning relabels rows to the
    target, which shifts the prior towards it. So the teacher's logits get one bias
    per class before they become targets: by default chosen so that its mean
    prediction on ``texts`` matches the labelled rows' class shares
    (``config.calibrate_teacher``; "labelled" fits it on the labelled rows instead).

    The teacher reads every text without ``hidden_tokens`` (see ``teacher_hidden_tokens``);
    the student is later trained on the full texts.
    """
    import random

    from .data import Example
    from .evaluation import predict_logits

    texts = [t for t in dict.fromkeys(t.strip() for t in texts) if t]
    if len(texts) > config.distill_rows:
        texts = random.Random(config.train.seed).sample(texts, config.distill_rows)
    rows = [Example(text, 0) for text in texts]  # the label is a placeholder, never used
    length = config.train.max_length
    logits = predict_logits(model, tokenizer, rows, max_length=length, hidden_tokens=hidden_tokens)
    clean_logits = predict_logits(model, tokenizer, clean, max_length=length, hidden_tokens=hidden_tokens)
    labels = [e.label for e in clean]
    bias = teacher_bias(logits, clean_logits, labels, config.calibrate_teacher)
    record = {
        "rows": len(rows),
        "calibration": config.calibrate_teacher,
        "class_bias": [round(float(b), 4) for b in bias],
        "predicted_class_share": [round(float(v), 4) for v in logits.softmax(-1).mean(0)],
        "predicted_class_share_calibrated": [round(float(v), 4) for v in (logits + bias).softmax(-1).mean(0)],
        "labelled_class_share": [round(float(v), 4) for v in class_frequencies(labels, logits.shape[1])],
        "teacher_clean_accuracy": _accuracy_of(clean_logits, labels),
        "teacher_clean_accuracy_calibrated": _accuracy_of(clean_logits + bias, labels),
        "input": "epur-masked" if hidden_tokens else "raw",
    }
    if hidden_tokens:
        record["hidden_tokens"] = len(hidden_tokens)
        record["rows_with_hidden_tokens"] = _rows_containing(tokenizer, rows, hidden_tokens, length)
        record["teacher_clean_accuracy_raw_input"] = _accuracy_of(predict_logits(model, tokenizer, clean, max_length=length), labels)
    record["labels"] = config.distill_labels
    return rows, distillation_targets(logits + bias, config.distill_labels), record


def teacher_bias(logits: "torch.Tensor", clean_logits: "torch.Tensor", labels: Sequence[int], calibration: str) -> "torch.Tensor":
    """One bias per class for the teacher's logits (see ``teacher_targets``)."""
    if calibration == "prior":
        return fit_prior_bias(logits, class_frequencies(labels, logits.shape[1]))
    if calibration == "labelled":
        return fit_class_bias(clean_logits, labels)
    return logits.new_zeros(logits.shape[1])


def distillation_targets(logits: "torch.Tensor", labels: str) -> "torch.Tensor":
    """Class probabilities ("soft") or the argmax as one-hot rows ("hard")."""
    import torch

    targets = logits.softmax(dim=-1)
    if labels == "hard":
        targets = torch.nn.functional.one_hot(targets.argmax(dim=-1), targets.shape[1]).to(targets.dtype)
    return targets


def second_round_config(config: PurifyConfig, first_round_ratios: Sequence[float]) -> PurifyConfig:
    """The final repair of a cross-fitted run keeps the smallest ρ the first round chose instead of
    searching again: a search would hold the student-taught repair to the suspect's held-out accuracy,
    a bar a slightly weaker teacher misses at small ρ, and a larger ρ brings the backdoor back (measured:
    mr / addsent seed 0 re-searched to ρ = 0.2, flip rate 22.8; docs/results.md)."""
    ratio = min(first_round_ratios)
    return dataclasses.replace(config, ratio_auto=False, mix=dataclasses.replace(config.mix, ratio=ratio))


def cross_fitted_targets(pair: CheckpointPair, suspect, tokenizer, clean: Sequence["Example"], config: PurifyConfig,
                         plan: Optional[EpurPlan], rows: Sequence["Example"], suspect_targets: "torch.Tensor",
                         after_mix: Optional[Callable] = None):
    """(targets, record): each unlabelled row labelled by a first-round student that never trained on it.

    The rows are halved (alternately, after the teacher's seeded sample); each half repairs a fresh
    copy of the loaded ``suspect`` (left untouched) the way ``purify`` does (same ρ rule, same E-PUR plan) from the suspect's
    ``suspect_targets`` on that half, and that student labels the other half. The suspect's lean on
    clean texts resembling a trigger reaches a student only in part, and a student's answers on
    texts it did not fit carry only what it generalised, so the second repair learns less of it.
    Calibrated and made soft or hard as the suspect's targets are. Our addition, not the paper's.
    """
    import copy

    import torch

    from .evaluation import predict_logits
    from .ratio_search import choose_ratio

    if len(rows) < 2:
        raise FinemixError("a cross-fitted teacher needs at least 2 unlabelled texts")
    halves = (list(range(0, len(rows), 2)), list(range(1, len(rows), 2)))
    logits = torch.zeros(len(rows), suspect_targets.shape[1])
    clean_logits, record = [], {"rows_per_half": [len(h) for h in halves], "first_round_ratios": []}
    for learnt, labelled in (halves, halves[::-1]):
        student = copy.deepcopy(suspect)
        search = choose_ratio(pair, student, tokenizer, clean, config, plan,
                              ([rows[i] for i in learnt], suspect_targets[learnt]), after_mix)
        logits[labelled] = predict_logits(student, tokenizer, [rows[i] for i in labelled], max_length=config.train.max_length)
        clean_logits.append(predict_logits(student, tokenizer, clean, max_length=config.train.max_length))
        record["first_round_ratios"].append(search["chosen_ratio"])
        del student
    labels = [e.label for e in clean]
    bias = teacher_bias(logits, torch.cat(clean_logits), labels * 2, config.calibrate_teacher)
    record["class_bias"] = [round(float(b), 4) for b in bias]
    record["student_clean_accuracy"] = [_accuracy_of(c + bias, labels) for c in clean_logits]
    return distillation_targets(logits + bias, config.distill_labels), record


def _rows_containing(tokenizer, rows: Sequence["Example"], token_ids: frozenset[int], max_length: int) -> int:
    from .data import tokenize_examples

    return sum(any(t in token_ids for t in f["input_ids"]) for f in tokenize_examples(tokenizer, rows, max_length))


def calibrate_output_prior(model, tokenizer, rows: Sequence["Example"], clean: Sequence["Example"],
                           pair: CheckpointPair, config: PurifyConfig) -> dict:
    """Shift the repaired model's output bias so its mean prediction on the unlabelled rows
    matches the labelled rows' class shares (the teacher's correction, applied to the result)."""
    import torch

    from .evaluation import predict_logits

    num_labels = model.config.num_labels
    output_bias = _output_bias(model, pair, num_labels)
    if output_bias is None:
        return {"skipped": "no output bias of size num_labels in the head"}
    logits = predict_logits(model, tokenizer, rows, max_length=config.train.max_length)
    shift = fit_prior_bias(logits, class_frequencies([e.label for e in clean], num_labels))
    name, parameter = output_bias
    with torch.no_grad():
        parameter += shift.to(parameter.dtype)
    return {
        "tensor": name,
        "class_bias": [round(float(b), 4) for b in shift],
        "predicted_class_share": [round(float(v), 4) for v in logits.softmax(-1).mean(0)],
        "predicted_class_share_calibrated": [round(float(v), 4) for v in (logits + shift).softmax(-1).mean(0)],
    }


def _output_bias(model, pair: CheckpointPair, num_labels: int):
    """The last bias of shape (num_labels,) among the head tensors (classifier.bias, classifier.out_proj.bias)."""
    head = set(pair.names.finetuned_only)
    found = None
    for name, parameter in model.named_parameters():
        if name in head and name.endswith("bias") and tuple(parameter.shape) == (num_labels,):
            found = (name, parameter)
    return found


def class_frequencies(labels: Sequence[int], num_classes: int) -> "torch.Tensor":
    import torch

    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).float()
    return counts / counts.sum()


def fit_prior_bias(logits: "torch.Tensor", prior: "torch.Tensor", steps: int = 200) -> "torch.Tensor":
    """Per-class logit offsets making the mean predicted distribution over ``logits`` equal ``prior``.

    Minimises KL(prior ‖ mean softmax(logits + b)) (class 0 fixed at 0). Used on
    unlabelled texts, the mean is taken over thousands of rows, so only the class
    shares come from the (small) labelled set.
    """
    target = prior.float().clamp_min(1e-6)

    def loss(bias: "torch.Tensor") -> "torch.Tensor":
        share = (logits.float() + bias).softmax(dim=-1).mean(dim=0).clamp_min(1e-9)
        return (target * (target.log() - share.log())).sum()

    return _fit_bias(logits.shape[1], loss, steps)


def fit_class_bias(logits: "torch.Tensor", labels: Sequence[int], steps: int = 200) -> "torch.Tensor":
    """Per-class logit offsets minimising cross-entropy on labelled rows (class 0 fixed at 0)."""
    import torch

    target = torch.as_tensor(list(labels), dtype=torch.long)
    return _fit_bias(logits.shape[1], lambda bias: torch.nn.functional.cross_entropy(logits.float() + bias, target), steps)


def _fit_bias(num_classes: int, loss_of_bias, steps: int) -> "torch.Tensor":
    """Minimise ``loss_of_bias(b)`` over per-class offsets b with b[0] = 0 (LBFGS)."""
    import torch

    free = torch.zeros(num_classes - 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([free], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_of_bias(torch.cat([free.new_zeros(1), free]))
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.cat([torch.zeros(1), free.detach()])


def _accuracy_of(logits: "torch.Tensor", labels: Sequence[int]) -> float:
    import torch

    return round(float((logits.argmax(dim=-1) == torch.as_tensor(list(labels))).float().mean()), 4)


def _load_tokenizers(pair: CheckpointPair, required: bool = True):
    """The suspect model's tokenizer, checked against the pre-trained one when both exist.

    With ``required`` False (a mix needs no tokenizer, only the check), nothing is
    imported or loaded when the vocabulary files are byte-identical or absent: importing
    transformers' tokenizer classes alone takes over a second.
    """
    from .checkpoint import check_same_vocabulary, has_tokenizer_files, same_tokenizer_files

    same_files = same_tokenizer_files(pair.finetuned_dir, pair.pretrained_dir)
    if not required and (same_files or not has_tokenizer_files(pair.finetuned_dir)):
        return None
    from transformers import AutoTokenizer as auto_tokenizer
    try:
        tokenizer = auto_tokenizer.from_pretrained(pair.finetuned_dir)
    except Exception as error:
        if not required:
            return None
        raise FinemixError(f"{pair.finetuned_dir}: tokenizer files missing or unreadable ({type(error).__name__})") from None
    if same_files:
        return tokenizer
    try:
        pre_tokenizer = auto_tokenizer.from_pretrained(pair.pretrained_dir)
    except Exception:
        pre_tokenizer = None  # a bare pre-trained folder may ship weights only
    if pre_tokenizer is not None:
        check_same_vocabulary(tokenizer, pre_tokenizer)
    return tokenizer


def load_mixed_state(model: "torch.nn.Module", pair: CheckpointPair, config: MixConfig, plan: Optional[EpurPlan]) -> float:
    """Load θ_Mix into ``model`` (in place); return the kept fraction."""
    stats: dict = {}
    state = dict(mixed_tensors(pair, config, plan, stats))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise FinemixError(f"checkpoint tensors the model does not have: {', '.join(unexpected[:5])}")
    return stats.get("kept_fraction", 0.0)


# --------------------------------------------------------------------------- report helpers

class _Timer:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def __call__(self, stage: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.values[stage] = round(time.perf_counter() - self.start, 3)

        return _Stage()


def _settings(config: PurifyConfig) -> dict:
    return dataclasses.asdict(config)


def _label_counts(examples: Sequence["Example"]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for example in examples:
        counts[str(example.label)] = counts.get(str(example.label), 0) + 1
    return dict(sorted(counts.items()))


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("finemix", "torch", "transformers", "safetensors", "accelerate", "tokenizers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hash_inputs_in_background(pair: CheckpointPair):
    """Start hashing both input folders in a thread (hashlib releases the GIL), so the
    report's SHA-256s cost little wall time next to the mix; ``.result()`` gives them."""
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finemix-hash")
    future = executor.submit(lambda: {
        "backdoored": {"path": str(pair.finetuned_dir), "sha256": folder_sha256(pair.finetuned_dir)},
        "pretrained": {"path": str(pair.pretrained_dir), "sha256": folder_sha256(pair.pretrained_dir)},
    })
    executor.shutdown(wait=False)
    return future


def _base_report(command: str, inputs, settings: dict) -> dict:
    return {"command": command, "inputs": inputs.result(), "settings": settings, "versions": library_versions()}


def _write_report(folder: Path, report: dict) -> None:
    import json

    (folder / "finemix_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
