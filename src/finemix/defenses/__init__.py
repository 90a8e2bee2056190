"""Defenses behind one interface (``registry``), fine-pruning (``fineprune``), research variants (``variants``)."""

from .fineprune import ffn_activation_modules, mean_activations, prune_dormant_neurons
from .registry import DEFENSES, Defense, DefenderInputs, DefenseResult, DefenseSettings, run_defense

__all__ = ["DEFENSES", "Defense", "DefenderInputs", "DefenseResult", "DefenseSettings", "ffn_activation_modules",
           "mean_activations", "prune_dormant_neurons", "run_defense"]
