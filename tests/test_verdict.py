"""The repair's verdict (repair/verdict.py) and `purify --strict`: a weak repair says so."""

import json

import pytest

from finemix.cli import main
from finemix.repair.verdict import repair_verdict


def search(mode="auto", accepted=True, reference=0.80, rows=32, chosen=0.1, accuracies=((0.1, 0.79),), accepted_drop=0.07):
    return {"mode": mode, "accepted": accepted if mode == "auto" else None, "reference_heldout_accuracy": reference,
            "heldout_rows": rows, "chosen_ratio": chosen, "accepted_drop": accepted_drop if mode == "auto" else None,
            "candidates": [{"ratio": r, "heldout_accuracy": a} for r, a in accuracies]}


def test_an_accepted_candidate_is_ok_and_says_what_clean_data_cannot_show():
    verdict = repair_verdict(search(), tolerance=0.03)
    assert verdict["status"] == "ok" and verdict["warnings"] == []
    assert "cannot show a backdoor is gone" in verdict["summary"]


def test_no_accepted_candidate_warns_that_the_backdoor_may_survive():
    verdict = repair_verdict(search(accepted=False, chosen=0.3, accuracies=((0.0, 0.6), (0.3, 0.7))), tolerance=0.03)
    assert verdict["status"] == "warning" and len(verdict["warnings"]) == 1
    assert "no ρ candidate" in verdict["warnings"][0] and "backdoor may survive" in verdict["warnings"][0]
    assert "unlabelled" in verdict["summary"] and "more clean labelled rows" in verdict["summary"]


def test_too_few_rows_to_hold_any_out_warns_that_nothing_checked_the_repair():
    verdict = repair_verdict(search(mode="fixed", reference=None, rows=0, accuracies=((0.1, None),)), tolerance=0.03)
    assert verdict["status"] == "warning" and "nothing checked" in verdict["warnings"][0]


@pytest.mark.parametrize("accuracy,status", [(0.70, "warning"), (0.78, "ok")])
def test_a_fixed_ratio_that_loses_held_out_accuracy_warns(accuracy, status):
    # 32 rows at 0.80: the standard error 0.0707 is the margin (above the 0.03 tolerance)
    verdict = repair_verdict(search(mode="fixed", accuracies=((0.1, accuracy),)), tolerance=0.03)
    assert verdict["status"] == status
    if status == "warning":
        assert "below the unrepaired" in verdict["warnings"][0]


def test_strict_exits_3_with_the_output_written_and_the_report_holds_the_verdict(tmp_path, capsys, bert_pair, tiny_text_csv):
    pair = ["--backdoored", str(bert_pair.finetuned), "--pretrained", str(bert_pair.pretrained)]
    common = ["--clean-data", str(tiny_text_csv), "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--quiet"]
    # 40 clean rows: 10 would be held out, under the 16 a check needs
    assert main(["purify", *pair, *common, "--output", str(tmp_path / "lenient")]) == 0
    err = capsys.readouterr().err
    assert "finemix: warning: too few clean rows" in err and "unlabelled" in err
    assert main(["purify", *pair, *common, "--output", str(tmp_path / "strict"), "--strict"]) == 3
    report = json.loads((tmp_path / "strict" / "finemix_report.json").read_text())
    assert report["verdict"]["status"] == "warning"
    assert (tmp_path / "strict" / "model.safetensors").is_file()
    assert "## Verdict" in (tmp_path / "strict" / "README.md").read_text()
