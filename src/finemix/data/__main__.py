"""``python -m finemix.data [NAME ...]``: the manifests of the built-in data sets as JSON."""

import sys

from .manifest import _main

if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
