"""The command-line options every benchmark script has."""

from __future__ import annotations

from pathlib import Path

from lib.constants import DEFAULT_WORKDIR


def add_common_args(parser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"where inputs are built and outputs written (default {DEFAULT_WORKDIR}; env FINEMIX_BENCH_WORKDIR)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every child (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the median is reported")
    parser.add_argument("--results-name", default=None,
                        help="write benchmarks/results/<NAME>.json instead of the script's default name")
    parser.add_argument("--profile", action="store_true",
                        help="also run each finemix method once more under cProfile (not timed) and report its top entries")
