"""``finemix bench CONFIG.yaml``: the paper's comparison as a resumable grid.

Grid: data sets × attacks × defenses × seeds × clean-set sizes × ρ. Per (data set,
seed) a clean model is trained once; per (data set, attack, seed) a victim. Both are
cached under ``OUT/models`` in folders named by a hash of what made them, so changing
a setting retrains and an unchanged one is reused. Every measurement is one line of
``OUT/results.jsonl`` with its job key; a rerun skips keys already there, so a killed
run resumes where it stopped. ``OUT/results.md`` and ``OUT/plots/`` are rebuilt from
the JSONL at the end (``--report-only`` rebuilds them without running anything).

Modules: ``config`` (the YAML schema), ``keys`` (job keys and the grid's jobs), ``splits`` (each
data set's rows), ``models`` (cached clean models and victims), ``runner`` (runs and measures),
``records`` (results.jsonl), ``tables`` and ``plots`` (results.md), ``demo`` (``finemix demo``).
The evaluator (runner.py) reads attack cards to measure ASR; defenses only ever get
``DefenderInputs`` (defenses/registry.py).
"""

from .config import BenchConfig, DatasetPlan, DefensePlan, Ratio, VictimPlan, bench_config_from_mapping, load_bench_config, select
from .demo import DEMO_DEFENSES, demo, demo_config
from .keys import KEY_SCHEME, MIXING_DEFENSES, defense_jobs, expected_keys, iter_grid, job_key
from .models import ModelCache, train_clean_model
from .plots import epur_pairs_by_cell, make_plots
from .records import append_result, read_results
from .runner import Bench, run_bench
from .splits import DatasetSplits, dataset_splits
from .tables import MIN_PLANTED_FLIP, column_groups, markdown_table, summarise, target_check, write_report

__all__ = ["Bench", "BenchConfig", "DEMO_DEFENSES", "DatasetPlan", "DatasetSplits", "DefensePlan", "KEY_SCHEME",
           "MIN_PLANTED_FLIP", "MIXING_DEFENSES", "ModelCache", "Ratio", "VictimPlan", "append_result",
           "bench_config_from_mapping", "column_groups", "dataset_splits", "defense_jobs", "demo", "demo_config",
           "epur_pairs_by_cell", "expected_keys", "iter_grid", "job_key", "load_bench_config", "make_plots",
           "markdown_table", "read_results", "run_bench", "select", "summarise", "target_check", "train_clean_model",
           "write_report"]
