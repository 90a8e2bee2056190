"""Research variants of the repair, reachable from bench configs (``variant:``), never from the CLI.

They are defined in the checkout's ``experiments/variants.py`` (measured and not adopted;
docs/paper-choices.md) and loaded from there by file path, so an installed finemix
carries none of them and a product run never imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import FinemixError
from ..repair.hooks import NO_HOOKS, RepairHooks

VARIANTS_FILE = Path(__file__).resolve().parents[3] / "experiments" / "variants.py"


def research_hooks(options: Mapping[str, Any]) -> RepairHooks:
    """The hooks of the research variant ``options`` names; no hooks for none."""
    if not options:
        return NO_HOOKS
    return _variants_module().build_hooks(dict(options))


def _variants_module():
    import importlib.util
    import sys

    name = "finemix_experiments_variants"
    if name in sys.modules:
        return sys.modules[name]
    if not VARIANTS_FILE.is_file():
        raise FinemixError(f"research variants need a finemix checkout: {VARIANTS_FILE} not found")
    spec = importlib.util.spec_from_file_location(name, VARIANTS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
