"""The repair, top-down: ``purify`` = checkpoint → E-PUR → mix → fine-tune (ρ rule) → report.

``mix_checkpoint`` and ``epur_checkpoint`` are the single steps (``finemix mix`` / ``epur``).
Every function here receives only what a defender holds (the suspect checkpoint, the public
pre-trained one, clean labelled rows and optional unlabelled text).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..config import EpurConfig, MixConfig, PurifyConfig
from ..errors import FinemixError
from ..report import Timer, base_report, hash_inputs_in_background, write_report
from ..weights.output import atomic_output_dir, check_output_dir, weights_size
from ..weights.pair import CheckpointPair, open_pair
from ..weights.writer import TensorSpec
from .distill import calibrate_output_prior, state_weight_for, teacher_targets
from .epur_check import check_epur_reset, cleared_search, probe_suspect, trigger_guard
from .epur_step import EpurPlan, plan_epur
from .hooks import NO_HOOKS, RelabelContext, RepairHooks, chain_edits
from .inputs import check_chat_rows, check_clean_rows, load_tokenizer
from .mix_step import check_mixable, finetuned_specs, mix_summary, mixed_tensors, tensor_is_finite, write_tensors
from .ratio_search import choose_ratio, split_clean
from .verdict import repair_verdict

if TYPE_CHECKING:
    from ..data import Example


def _check_output(pair: CheckpointPair, output: str | os.PathLike, force: bool) -> None:
    """Fail before any work on outputs that overlap inputs, are not writable, or do not fit."""
    check_output_dir(Path(output), force, (pair.finetuned_dir, pair.pretrained_dir), weights_size(pair.finetuned_dir))


def _atomic_output(pair: CheckpointPair, output: str | os.PathLike, force: bool):
    return atomic_output_dir(output, force, (pair.finetuned_dir, pair.pretrained_dir), weights_size(pair.finetuned_dir))


def _open(backdoored, pretrained, output, force: bool):
    """The checked pair, and its inputs' hashes started in the background."""
    pair = open_pair(backdoored, pretrained)
    _check_output(pair, output, force)
    hashes = hash_inputs_in_background(pair, (backdoored, pretrained))
    return pair, hashes


def mix_checkpoint(
    backdoored: str | os.PathLike,
    pretrained: str | os.PathLike,
    output: str | os.PathLike,
    config: MixConfig,
    force: bool = False,
    max_shard_bytes: int = 2 * 1024**3,
) -> dict:
    """``finemix mix``: θ_Mix written as a model folder, streamed tensor by tensor."""
    timer = Timer()
    pair, hashes = _open(backdoored, pretrained, output, force)
    load_tokenizer(pair, required=False)
    stats: dict = {}
    with _atomic_output(pair, output, force) as folder:
        with timer("mix+write"):
            side_files = write_tensors(pair, finetuned_specs(pair), mixed_tensors(pair, config, None, stats), folder,
                                       max_shard_bytes)
        report = base_report("mix", hashes, {"mix": dataclasses.asdict(config)})
        report["mixing"] = mix_summary(pair, config, stats.get("kept_fraction", 0.0)).to_dict()
        report["side_files"] = side_files
        report["timings_s"] = timer.values
        write_report(folder, report)
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
    timer = Timer()
    pair, hashes = _open(backdoored, pretrained, output, force)
    tokenizer = load_tokenizer(pair)
    with timer("epur"):
        plan = plan_epur(pair, tokenizer, texts, config)
    with _atomic_output(pair, output, force) as folder:
        with timer("write"):
            side_files = write_tensors(pair, finetuned_specs(pair), mixed_tensors(pair, MixConfig(ratio=1.0), plan),
                                       folder)
        report = base_report("epur", hashes, {"epur": dataclasses.asdict(config)})
        report["epur"] = plan.to_dict()
        report["frequency_text"] = text_sources or {}
        report["side_files"] = side_files
        report["timings_s"] = timer.values
        write_report(folder, report)
    return report


@dataclasses.dataclass
class _Repair:
    """What one ``purify`` run has gathered so far, for the stages and the report."""

    task: object  # tasks/base.Task
    pair: CheckpointPair
    model: object
    tokenizer: object
    clean: list
    clean_notes: dict
    plan: Optional[EpurPlan] = None
    distill: Optional[tuple] = None
    teacher_record: Optional[dict] = None
    search: Optional[dict] = None
    student_record: Optional[dict] = None
    augmented: Optional[list] = None  # rewrites of the labelled rows distilled on, when no unlabelled text was given
    epur_check: Optional[dict] = None  # E-PUR's flagged words tested as triggers (repair/epur_check.py)


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
    hooks: RepairHooks = NO_HOOKS,
    task: str = "auto",
    backdoored_record: Optional[dict] = None,
) -> dict:
    """E-PUR (optional) → mix with θ_Pre → fine-tune on ``clean``, ρ fixed or searched → report. When
    E-PUR's reset clears a trigger confirmed on ``clean`` (``config.stop_when_epur_clears``), no mixing.

    ``task``: "classification" (``clean`` holds labelled ``Example`` rows), "causal-lm"
    (``Chat`` rows), or "auto" (the suspect's config.json decides). ``backdoored_record``
    replaces the report's record of the suspect input (an adapter's merge).

    ``after_mix`` (see ratio_search.choose_ratio) edits each mixed model before it is
    fine-tuned; the fine-pruning defense prunes there. ``hooks`` are research variants'
    (repair/hooks.py); the product passes none.

    ``unlabelled_texts`` (clean, in-domain) serve E-PUR's token counts and, with
    ``config.distill``, distillation of θ_B's clean predictions; ``frequency_texts``
    serve only the token counts.
    """
    from ..train import process_state

    # Fix the device choice before anything else touches accelerate. Under `accelerate launch`
    # every process repairs; only the main one writes.
    process = process_state()
    timer = Timer()
    if len(clean) == 0:
        raise FinemixError("the clean data set is empty")
    with timer("load"):
        repair, hashes = _load(backdoored, pretrained, clean, output, force, task)
        check_mixable(repair.pair, config.mix.head)  # before any work, not when the first candidate mixes
    config = dataclasses.replace(config, distill_state_weight=state_weight_for(config, repair.clean))  # "auto" resolved
    if config.epur is not None:
        with timer("epur"):
            texts = repair.task.texts(repair.clean) + list(unlabelled_texts) + list(frequency_texts)
            repair.plan = plan_epur(repair.pair, repair.tokenizer, texts, config.epur, config.train.max_length)
    if _epur_cleared(repair, config, timer):
        repair.search = cleared_search(repair.epur_check)
    else:
        _mix_and_finetune(repair, config, unlabelled_texts, after_mix, hooks, timer)
    if not process.is_main_process:
        process.wait_for_everyone()
        return {}
    report = _write(repair, config, output, force, hashes, timer, unlabelled_texts, frequency_texts, sources, hooks,
                    backdoored_record)
    process.wait_for_everyone()
    return report


def _epur_cleared(repair: _Repair, config: PurifyConfig, timer: Timer) -> bool:
    """With a searched ρ, E-PUR's flagged words are probed as triggers on the clean rows (repair/epur_check.py)
    for ``stop_when_epur_clears`` or ``flagged_word_guard``. True when the first applies and E-PUR's reset
    cleared every confirmed trigger: ``repair.model`` is then the E-PUR'd suspect and nothing is mixed."""
    if not ((config.stop_when_epur_clears or config.flagged_word_guard) and config.ratio_auto and repair.plan
            and repair.plan.rows and repair.task.name == "classification"):
        return False
    args = (config.train.max_length, config.train.seed)
    with timer("epur check"):
        if config.stop_when_epur_clears:
            repair.epur_check = check_epur_reset(repair.model, repair.tokenizer, repair.pair, repair.clean,
                                                 repair.plan, *args, config.search.tolerance)
        else:
            repair.epur_check = probe_suspect(repair.model, repair.tokenizer, repair.clean, repair.plan, *args)
    return repair.epur_check["cleared"]


def _mix_and_finetune(repair: _Repair, config: PurifyConfig, unlabelled_texts: Sequence[str], after_mix,
                      hooks: RepairHooks, timer: Timer) -> None:
    """Distillation targets, the ρ search (mix → fine-tune per candidate), then the output calibration."""
    if hooks.after_mix is not None:
        after_mix = chain_edits(after_mix, hooks.after_mix(repair.pair, repair.plan))
    repair_config = _distill_stage(repair, config, unlabelled_texts, after_mix, hooks, timer)
    with timer("ratio+finetune"):
        step_hook = hooks.step_hook(repair.plan) if hooks.step_hook else None
        guard = trigger_guard(repair.epur_check, repair.tokenizer, repair.clean, config.train.max_length,
                              config.train.seed) if config.flagged_word_guard else None
        repair.search = choose_ratio(repair.pair, repair.model, repair.tokenizer, repair.clean, repair_config,
                                     repair.plan, repair.distill, after_mix, step_hook, repair.task, guard)
    _calibrate_stage(repair, config, timer)


def _calibrate_stage(repair: _Repair, config: PurifyConfig, timer: Timer) -> None:
    """A classifier distilled from predictions gets its output prior matched (repair/distill.py)."""
    state = repair.model.state_dict()
    _check_finite(state, list(state))  # before the output calibration fits on its logits
    num_labels = repair.model.config.num_labels
    if repair.distill and repair.task.distils == "predictions" and config.student_calibration(num_labels) == "prior":
        with timer("calibrate"):
            repair.student_record = calibrate_output_prior(repair.model, repair.tokenizer, repair.distill[0],
                                                           repair.clean, repair.pair, config)


def _load(backdoored, pretrained, clean, output, force: bool, task_name: str) -> tuple[_Repair, object]:
    from ..tasks import task_for_config

    pair, hashes = _open(backdoored, pretrained, output, force)
    task = task_for_config(pair.config, pair.finetuned_dir, task_name)
    tokenizer = load_tokenizer(pair)
    model = task.load_model(pair.finetuned_dir)
    if task.name == "causal-lm":
        rows, notes = check_chat_rows(clean, tokenizer, pair.finetuned_dir)
    else:
        rows, notes = check_clean_rows(clean, model.config.num_labels)
    return _Repair(task, pair, model, tokenizer, rows, notes), hashes


def _distill_stage(repair: _Repair, config: PurifyConfig, unlabelled_texts: Sequence[str], after_mix,
                   hooks: RepairHooks, timer: Timer) -> PurifyConfig:
    """The suspect's calibrated targets on the unlabelled texts (or a hook's); the config the repair runs with."""
    if repair.task.distils == "answers":
        return _answer_stage(repair, config, unlabelled_texts, timer)
    texts = unlabelled_texts or _augmented(repair, config)
    if hooks.distill_texts is not None:
        texts = hooks.distill_texts(list(texts), config.train.seed)
    if not (config.finetune and config.distill and texts and config.distill_rows > 0):
        return config
    with timer("teacher"):
        hidden = hooks.teacher_hidden_tokens(repair.tokenizer, repair.plan) if hooks.teacher_hidden_tokens else frozenset()
        rows, targets, states, repair.teacher_record = teacher_targets(repair.model, repair.tokenizer, texts,
                                                                       repair.clean, config, hooks, hidden)
        if hidden:
            repair.teacher_record["hidden_tokens"] = len(hidden)
    # Rewrites are trained for their own budget (config.augment_epochs), real unlabelled text for distill_epochs.
    repair_config = dataclasses.replace(config, distill_epochs=config.augment_epochs) if repair.augmented else config
    if hooks.relabel is not None or hooks.extra_rows is not None:
        with timer("relabel"):
            context = RelabelContext(repair.pair, repair.model, repair.tokenizer, repair.clean, repair_config, repair.plan,
                                     rows, targets, after_mix, repair.teacher_record,
                                     rewrites=bool(repair.augmented) and hooks.distill_texts is None)
            rows, targets, repair_config = _research_targets(context, hooks)
    repair.distill = (rows, _soft_targets(targets, states, rows, repair_config, repair.teacher_record))
    return repair_config


def _soft_targets(targets, states, rows: list, config: PurifyConfig, record: dict):
    """The trainer's targets: probabilities, with the teacher's states when they are matched (not when
    a research variant added rows they do not cover)."""
    from ..train import SoftTargets

    if states is not None and len(states) != len(rows):
        record["state_matching"] = "off: a research variant added rows the teacher's states do not cover"
        states = None
    if states is None:
        return targets
    record["state_matching"] = {"weight": config.distill_state_weight, "width": states.shape[1]}
    return SoftTargets(targets, states, config.distill_state_weight)


def _research_targets(context: RelabelContext, hooks: RepairHooks) -> tuple:
    """(rows, targets, config) after a research variant's relabelling and extra rows."""
    import torch

    rows, targets, config = context.rows, context.suspect_targets, context.config
    if hooks.relabel is not None:
        targets, config = hooks.relabel(context)
    if hooks.extra_rows is not None:
        more, more_targets = hooks.extra_rows(dataclasses.replace(context, suspect_targets=targets, config=config))
        rows, targets = list(rows) + list(more), torch.cat([targets, more_targets.to(targets.dtype)])
    return rows, targets, config


def _answer_stage(repair: _Repair, config: PurifyConfig, unlabelled_texts: Sequence[str], timer: Timer) -> PurifyConfig:
    """Chat models: the suspect's own answers to the unlabelled prompts become training chats (no rewrites)."""
    from ..tasks.causal_lm import suspect_answers

    if not (config.finetune and config.distill and config.distill_answers and unlabelled_texts and config.distill_rows > 0):
        return config
    with timer("teacher"):
        prompts = list(unlabelled_texts)[: config.distill_rows]
        chats = suspect_answers(repair.model, repair.tokenizer, prompts, config.distill_answer_tokens,
                                config.train.max_length)
    repair.teacher_record = {"prompts": len(prompts), "answers_kept": len(chats),
                             "max_new_tokens": config.distill_answer_tokens}
    if chats:
        repair.distill = (chats, None)  # rows that carry their own answers: no soft targets
    return config


def _augmented(repair: _Repair, config: PurifyConfig) -> list:
    """Rewrites of the labelled *training* rows (the held-out part must stay unseen: it judges ρ)."""
    if config.augment_rows <= 0 or not (config.finetune and config.distill):
        return []
    from ..data.augment import augment_rows

    train, _ = split_clean(repair.clean, config)
    repair.augmented = augment_rows(train, config.augment_rows, config.train.seed, max_words=4 * config.train.max_length)
    return repair.augmented


def _check_finite(state: dict, names) -> None:
    """A diverged repair is refused, naming a tensor, and leaves nothing behind."""
    bad = next((n for n in names if not tensor_is_finite(state[n])), None)
    if bad is not None:
        raise FinemixError(f"the repaired model is not finite (tensor {bad} holds NaN or Inf): fine-tuning diverged; "
                           "try a lower --lr; nothing was written")


def _write(repair: _Repair, config: PurifyConfig, output, force: bool, hashes, timer: Timer,
           unlabelled_texts, frequency_texts, sources, hooks: RepairHooks, backdoored_record: Optional[dict]) -> dict:
    """The repaired model's tensors (the suspect checkpoint's names), side files and the report."""
    pair, search = repair.pair, repair.search
    state = repair.model.state_dict()
    names = [n for n in pair.finetuned.names() if n in state]
    _check_finite(state, names)  # again after calibration, before the output folder exists
    with _atomic_output(pair, output, force) as folder:
        with timer("write"):
            specs = [TensorSpec.of(n, state[n]) for n in names]
            side_files = write_tensors(pair, specs, ((n, state[n]) for n in names), folder)
        report = base_report("purify", hashes, dataclasses.asdict(config))
        if backdoored_record is not None:
            report["inputs"]["backdoored"] = backdoored_record
        report["task"] = repair.task.name
        if hooks.options:
            report["research_variant"] = dict(hooks.options)
        report["clean_data"] = {"rows": len(repair.clean), **repair.clean_notes, **(sources or {})}
        report["unlabelled_text"] = _unlabelled_record(repair, unlabelled_texts, frequency_texts)
        report["epur"] = repair.plan.to_dict() if repair.plan else None
        report["epur_check"] = repair.epur_check
        report["mixing"] = mix_summary(pair, dataclasses.replace(config.mix, ratio=search["chosen_ratio"]),
                                       search["kept_fraction"]).to_dict()
        report["ratio_search"] = search
        report["verdict"] = repair_verdict(search, config.search.tolerance, repair.task)
        report["side_files"] = side_files
        report["processes"] = _processes()
        report["timings_s"] = timer.values
        write_report(folder, report)
    return report


def _unlabelled_record(repair: _Repair, unlabelled_texts, frequency_texts) -> dict:
    distill = repair.distill
    return {
        "rows": len(unlabelled_texts),
        "used_for": (["E-PUR token frequencies"] if unlabelled_texts and repair.plan else [])
        + ([f"distillation of the suspect model's {repair.task.distils} ({len(distill[0])} rows)"]
           if distill and not repair.augmented else [])
        + ([f"(none given) distillation on {len(distill[0])} rewrites of the labelled training rows"] if distill and repair.augmented else []),
        "augmented_labelled_rows": len(repair.augmented) if repair.augmented else 0,
        "frequency_only_rows": len(frequency_texts),
        "teacher": repair.teacher_record if distill else None,
        "repaired_model_calibration": repair.student_record,
    }


def _processes() -> int:
    from ..train import process_state

    return process_state().num_processes
