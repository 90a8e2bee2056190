"""experiments/compare_arms.py reads the committed records the way the bench's target table does."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _run(*args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "compare_arms.py"), *args], check=True,
                          capture_output=True, text=True).stdout


def test_status_of_the_layered_default_matches_the_bench_target_table():
    out = _run("--datasets", "mr", "--default", str(RESULTS / "labelled-only.jsonl"),
               str(RESULTS / "labelled-only-epur-check.jsonl"))
    # the bench's own table (docs/results.md): mr / badword at 128 rows misses on ASR by +9.1
    assert "| 128 | mr / badword (n=3) | 75.1 / 27.5 / 1.2 | +9.1 / +0.7, -2.9 | **no** |" in out
    # the later file replaces the grid's ep records: stop_when_epur_clears meets the ep cell
    assert "| 128 | mr / ep (n=3) | 77.4 / 20.3 / 0.4 | +1.9 / -0.1, -1.3 | yes |" in out


def test_arms_side_by_side_and_a_file_read_for_one_data_set_only():
    out = _run("--datasets", "mr", "trec", "--default", str(RESULTS / "labelled-only.jsonl"),
               "--arm", f"{RESULTS / 'labelled-only-states.jsonl'}@trec")
    assert "mr /" not in out  # the arm has only trec's records
    assert ("| trec / badword (n=3) | 128 | 87.5 / 4.6 / 0.8 | 86.9 / 5.2 / 0.8 | yes (ASR +0.0, ACC -2.5) / "
            "**no** (ASR +0.7, ACC -3.1) | -0.6 |") in out


def test_paper_layout_of_the_layered_records_puts_the_baselines_beside_the_repair():
    out = _run("--datasets", "mr", "--paper-layout", "--default", str(RESULTS / "labelled-only.jsonl"),
               str(RESULTS / "labelled-only-epur-check.jsonl"))
    assert "*128 clean rows*" in out and "*64 clean rows*" in out
    # the same cell as the bench's table in docs/results.md, with the layered ep records in the last column
    assert ("| mr | ep | 78.8 ± 0.1 / 18.4 ± 2.2 / 0.5 ± 0.2 (n=3) | 78.8 ± 0.1 / 100.0 ± 0.0 / 100.0 ± 0.0 (n=3) "
            "| 77.9 ± 0.7 / 100.0 ± 0.0 / 100.0 ± 0.0 (n=3) | 77.5 ± 0.9 / 100.0 ± 0.0 / 100.0 ± 0.0 (n=3) "
            "| 77.4 ± ") in out
