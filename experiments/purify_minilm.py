"""Purify the MiniLM-on-MR victims (experiments/victims.py) and compare with clean models.

Defender's data: ``--clean-rows`` labelled rows drawn (stratified, seeded) from MR's
dev split; optionally the remaining dev texts as *unlabelled* text. The test split
is never seen by the defense. Results go to ``--out/results.jsonl`` and a summary
table is printed (mean ± std over seeds).

    python experiments/purify_minilm.py --variants default --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRETRAINED = "sentence-transformers/all-MiniLM-L6-v2"
TRIGGER, TARGET = "cf", 1


def variants() -> dict:
    from finemix.config import MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig

    shipped = PurifyConfig(train=TrainConfig(progress=False, max_length=64))
    # Every variant below but "default" was measured when the default distilled for 2 epochs;
    # they keep that setting so their committed numbers can be regenerated.
    base = dataclasses.replace(shipped, distill_epochs=2.0)
    # "paper": the recipe as specified (E-PUR, random mixing, ρ auto, labelled rows only)
    table = {
        "default": (shipped, True),  # finemix purify's defaults (3 distillation epochs since they measured better)
        "default-distill2": (base, True),  # the default before: 2 epochs over labelled + distilled rows
        "default-distill3": (dataclasses.replace(base, distill_epochs=3.0), True),  # = "default" now
        "default-hard-targets": (shipped, True, {"distill_labels": "hard"}),  # pseudo-labels (experiments/variants.py)
        # the victim's classification head re-initialised instead of kept: at ρ = 0 it is the only
        # fine-tuned tensor left, and on mr/addsent it carried part of the backdoor (docs/results.md)
        "default-head-reinit": (dataclasses.replace(base, mix=MixConfig(head="reinit")), True),
        # the teacher reads the unlabelled texts without E-PUR's flagged tokens (experiments/variants.py)
        "default-masked-teacher": (base, True, {"teacher_input": "epur-masked"}),
        "distill-labelled-cal": (dataclasses.replace(base, calibrate_student="none"), True, {"calibrate_teacher": "labelled"}),
        "distill-prior-teacher-only": (dataclasses.replace(base, calibrate_student="none"), True),
        "paper": (dataclasses.replace(base, distill=False, search=RatioSearchConfig(candidates=(0.1, 0.2, 0.3, 0.5))), False),
        "default+unlabelled": (base, True),
        "finetune-only": (dataclasses.replace(base, ratio_auto=False, mix=MixConfig(ratio=1.0), epur=None), False),
        "epur+finetune": (dataclasses.replace(base, ratio_auto=False, mix=MixConfig(ratio=1.0)), True),
        "mix0.3-noepur": (dataclasses.replace(base, ratio_auto=False, mix=MixConfig(ratio=0.3), epur=None), False),
        "mix0.3+epur": (dataclasses.replace(base, ratio_auto=False, mix=MixConfig(ratio=0.3)), True),
        "sel-auto+epur": (dataclasses.replace(base, mix=MixConfig(mode="sel")), True),
    }
    kd = dataclasses.replace(base, ratio_auto=False, train=dataclasses.replace(base.train, epochs=3))
    for ratio in (0.0, 0.1, 0.2, 0.3, 1.0):
        table[f"kd-r{ratio}"] = (dataclasses.replace(kd, mix=MixConfig(ratio=ratio)), True)
        table[f"kd-r{ratio}-noepur"] = (dataclasses.replace(kd, mix=MixConfig(ratio=ratio), epur=None), True)
    # labelled rows only (issue 16): the paper's objective, and distillation on rewrites of the labelled rows
    table["labelled-only-paper"] = (dataclasses.replace(shipped, augment_rows=0), False)  # the paper's objective
    table["labelled-only-default"] = (shipped, False)  # purify's default without unlabelled text
    # the teacher's class bias fitted on the labelled rows (docs/results.md, issue 16: seed 0 only, no change)
    table["labelled-only-labelled-cal"] = (shipped, False, {"calibrate_teacher": "labelled"})
    for rows in (1000, 2000):  # 3 epochs: the default before augment_epochs existed
        table[f"labelled-only-augment{rows}"] = (dataclasses.replace(shipped, augment_rows=rows, augment_epochs=3.0), False)
    # about the training steps of augment1000 at 3 epochs, spread over more rewrites (distill_rows lifted
    # so that none is sampled away)
    for rows, epochs in ((2000, 1.5), (3000, 1.0), (4000, 0.75)):
        table[f"labelled-only-augment{rows}-e{epochs}"] = (
            dataclasses.replace(shipped, augment_rows=rows, distill_rows=max(rows, 2000), augment_epochs=epochs), False)
    # half the rewrites replaced by generic English sentences (experiments/variants.py generic_rows)
    table["labelled-only-augment1000-generic1000-e1.5"] = (
        dataclasses.replace(shipped, augment_rows=1000, augment_epochs=1.5), False, {"generic_rows": 1000})
    # each rewrite's target blended with its source row's label (experiments/variants.py)
    for weight in (0.25, 0.5):
        table[f"labelled-only-source{weight}"] = (shipped, False, {"source_label_weight": weight})
    for temperature in (2, 4):  # softened targets (experiments/variants.py)
        table[f"labelled-only-t{temperature}"] = (shipped, False, {"distill_temperature": temperature})
    # the E-PUR'd suspect kept whole (ρ = 1), its top flagged words unlearnt on copies of the rewrites
    unlearn = dataclasses.replace(shipped, ratio_auto=False, mix=MixConfig(ratio=1.0), augment_rows=1000)
    for count in (1, 3, 5):
        table[f"labelled-only-unlearn{count}"] = (unlearn, False, {"unlearn_flagged": count})
    # the teacher's bias fitted for equal recall on the labelled rows (calibrate_teacher: balanced), the
    # student left as it learnt (calibrate_student auto = none after a balanced teacher)
    balanced = dataclasses.replace(shipped, calibrate_teacher="balanced")
    table["labelled-only-balanced"] = (balanced, False)
    table["labelled-only-prior"] = (dataclasses.replace(shipped, calibrate_teacher="prior"), False)  # the default before
    table["labelled-only-labelled-uncal"] = (dataclasses.replace(shipped, calibrate_student="none"), False,
                                             {"calibrate_teacher": "labelled"})  # unweighted fit
    table["labelled-only-unlearn1-balanced"] = (dataclasses.replace(unlearn, calibrate_teacher="balanced"), False,
                                                {"unlearn_flagged": 1})
    slow = dataclasses.replace(unlearn, calibrate_teacher="balanced", train=dataclasses.replace(shipped.train, lr=2e-5))
    table["labelled-only-unlearn1-balanced-lr2e-5"] = (slow, False, {"unlearn_flagged": 1})
    table["kd-auto"] = (dataclasses.replace(kd, ratio_auto=True), True)
    table["kd-r0.1-nocal"] = (dataclasses.replace(kd, mix=MixConfig(ratio=0.1), calibrate_teacher="none"), True)
    kd2 = dataclasses.replace(kd, train=dataclasses.replace(base.train, epochs=2))
    table["kd2-auto"] = (dataclasses.replace(kd2, ratio_auto=True, search=RatioSearchConfig(candidates=(0.1, 0.2, 0.3), tolerance=0.05)), True)
    table["kd2-r0.1"] = (dataclasses.replace(kd2, mix=MixConfig(ratio=0.1)), True)
    for rows in (2000, 3000):
        table[f"kd2-r0.1-u{rows}"] = (dataclasses.replace(kd2, mix=MixConfig(ratio=0.1), distill_rows=rows), True)
        table[f"kd2-r0.0-u{rows}"] = (dataclasses.replace(kd2, mix=MixConfig(ratio=0.0), distill_rows=rows), True)
    return table


def run(variant: str, seed: int, args) -> dict:
    import dataclasses as dc

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.data import load_builtin, stratified_sample
    from finemix.evaluation import evaluate
    from finemix.repair.steps import purify

    from finemix.defenses.variants import research_hooks

    config, use_unlabelled, *options = variants()[variant]
    hooks = research_hooks(options[0] if options else {})
    config = dc.replace(config, mix=dc.replace(config.mix, seed=seed), train=dc.replace(config.train, seed=seed))
    splits = load_builtin("mr")
    clean = stratified_sample(splits["dev"], args.clean_rows, seed=seed)
    chosen = {(e.text, e.label) for e in clean}
    unlabelled = [e.text for e in splits["dev"] if (e.text, e.label) not in chosen] if use_unlabelled else []
    if use_unlabelled and args.extra_unlabelled:
        # more in-domain text: MR train rows the victim was NOT trained on (stratified_sample as in victims.py)
        seen = {e.text for e in stratified_sample(splits["train"], 4000, seed=seed)}
        unseen = [e.text for e in splits["train"] if e.text not in seen]
        unlabelled += unseen[: args.extra_unlabelled]
    victim = args.victims / f"badword-seed{seed}"
    check_split(victim, splits)
    output = args.out / f"{variant}-seed{seed}"
    started = time.perf_counter()
    report = purify(victim, PRETRAINED, clean, output, config, unlabelled, force=True, hooks=hooks)
    seconds = time.perf_counter() - started
    model = AutoModelForSequenceClassification.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    test = splits["test"][: args.test_rows]
    metrics = evaluate(model, tokenizer, test, trigger=TRIGGER, target_label=TARGET, seed=seed, max_length=64)
    return {
        "variant": variant, "seed": seed, "clean_rows": len(clean), "unlabelled_rows": len(unlabelled),
        "purify_seconds": round(seconds, 1), "chosen_ratio": report["ratio_search"]["chosen_ratio"],
        "epur_top_tokens": [t["token"] for t in (report["epur"] or {"tokens": []})["tokens"][:5]],
        "teacher": report["unlabelled_text"].get("teacher"),
        "test": metrics.to_dict(), "ratio_search": report["ratio_search"],
    }


def check_split(victim: Path, splits) -> None:
    """Refuse victims trained when the data split differed (their training rows could be test rows now)."""
    from victims import split_fingerprint

    recorded = json.loads((victim / "metrics.json").read_text()).get("test_split")
    if recorded != split_fingerprint(splits):
        raise SystemExit(f"{victim} was trained on another data split; rerun experiments/victims.py")


def victim_metrics(args, kind: str, seed: int) -> dict:
    """Victim metrics on the same test rows as the purified models."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.data import load_builtin
    from finemix.evaluation import evaluate

    cache = args.out / f"victim-{kind}-seed{seed}-{args.test_rows}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    folder = args.victims / f"{kind}-seed{seed}"
    check_split(folder, load_builtin("mr"))
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    test = load_builtin("mr")["test"][: args.test_rows]
    result = evaluate(model, tokenizer, test, trigger=TRIGGER, target_label=TARGET, seed=seed, max_length=64).to_dict()
    cache.write_text(json.dumps(result))
    return result


def summarise(rows: list[dict], args) -> str:
    def stat(values):
        values = [100 * v for v in values if v is not None and v == v]  # a flip rate is undefined (NaN) when no row was right
        if not values:
            return "  n/a"
        return f"{statistics.mean(values):5.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:4.1f}"

    seeds = sorted({r["seed"] for r in rows})
    lines = ["| model | seeds | ACC | ASR | flip | ρ | seconds |", "|---|---|---|---|---|---|---|"]
    for kind in ("clean", "badword"):
        m = [victim_metrics(args, kind, s) for s in seeds]
        lines.append(f"| {kind} victim | {len(m)} | {stat([x['accuracy'] for x in m])} | {stat([x['asr'] for x in m])} | {stat([x['flip_rate'] for x in m])} | – | – |")
    for variant in [v for v in args.variants if any(r["variant"] == v for r in rows)]:
        m = [r for r in rows if r["variant"] == variant]
        ratios = ",".join(str(r["chosen_ratio"]) for r in m)
        lines.append(f"| {variant} | {len(m)} | {stat([r['test']['accuracy'] for r in m])} | {stat([r['test']['asr'] for r in m])} | "
                     f"{stat([r['test']['flip_rate'] for r in m])} | {ratios} | {statistics.mean(r['purify_seconds'] for r in m):.0f} |")
    return "\n".join(lines)


def target_checks(rows: list[dict], args) -> str:
    """Per seed, the README targets: ASR and flip within 5 points of the clean model's,
    ACC within 3 points of the backdoored model's (bench.tables.meets_targets), purify under 180 s."""
    from finemix.bench.tables import meets_targets

    lines = ["| variant | seed | ACC − backdoored ACC | ASR − clean ASR | flip − clean flip | seconds | all met |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (args.variants.index(r["variant"]), r["seed"])):
        clean, backdoored = victim_metrics(args, "clean", r["seed"]), victim_metrics(args, "badword", r["seed"])
        t = r["test"]
        d_acc = 100 * (t["accuracy"] - backdoored["accuracy"])
        d_asr = 100 * (t["asr"] - clean["asr"])
        d_flip = 100 * (t["flip_rate"] - clean["flip_rate"])
        met = meets_targets(d_asr, d_flip, d_acc) and r["purify_seconds"] < 180
        lines.append(f"| {r['variant']} | {r['seed']} | {d_acc:+.1f} | {d_asr:+.1f} | {d_flip:+.1f} | {r['purify_seconds']:.0f} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clean-rows", type=int, default=128)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--extra-unlabelled", type=int, default=0, help="add this many unseen MR train texts as unlabelled text")
    parser.add_argument("--victims", type=Path, default=Path("runs/victims"))
    parser.add_argument("--out", type=Path, default=Path("runs/purified"))
    parser.add_argument("--summarise-only", action="store_true", help="print the tables from --out/results.jsonl")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        rows = [json.loads(line) for line in (args.out / "results.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["variant"] in args.variants and r["seed"] in args.seeds]
        print(summarise(rows, args) + "\n\n" + target_checks(rows, args))
        return
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            row = run(variant, seed, args)
            rows.append(row)
            with open(args.out / "results.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
            t = row["test"]
            print(f"{variant} seed {seed}: acc {t['accuracy']:.3f} asr {t['asr']:.3f} flip {t['flip_rate']:.3f} "
                  f"ρ {row['chosen_ratio']} {row['purify_seconds']}s top {row['epur_top_tokens']}", flush=True)
    print(summarise(rows, args) + "\n\n" + target_checks(rows, args))


if __name__ == "__main__":
    main()
