"""The child process of one measurement, started by ``lib.runner.run_job`` as
``python benchmarks/child.py --child MODULE FUNC PARAMS.json RESULT.json``; not meant to be run by hand.

It lives beside the scripts (not in ``lib/``) so that ``benchmarks/`` is the first entry of its
``sys.path``: ``lib`` and the scripts' own job modules import as they do in the parent.
"""

import sys

from lib.runner import child_main

if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:])
    else:
        print("child.py runs one job for lib.runner.run_job; run one of the bench_*.py scripts", file=sys.stderr)
        sys.exit(2)
