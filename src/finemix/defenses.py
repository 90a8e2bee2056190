"""Defenses: one registered interface, model in → model out plus report.

The boundary: a defense receives ``DefenderInputs`` and ``DefenseSettings`` and
nothing else. Neither type has a field for a trigger, a target label or poison
flags, and this module imports nothing from attacks.py or the trigger side of
evaluation.py (tests/test_defenses.py checks both), so no defense can peek.

Every defense except ``none`` and ``epur`` is a ``purify`` run with a different
configuration, so all share E-PUR, the held-out split, distillation and the report:

=================  =======================================================  =========
name               what it does                                             E-PUR
=================  =======================================================  =========
none               the suspect model, untouched                             –
epur               E-PUR alone (reset the top-N embedding rows)             yes
finetune           clean fine-tuning of θ_B (ρ = 1)                         ±
fineprune          prune the FFN neurons least active on clean data, then   ±
                   fine-tune (Liu et al. 2018; per layer, our adaptation)
mix                random mixing with θ_Pre, no fine-tuning                 ±
finemix            Fine-mixing: random mixing, then fine-tuning             ±
finemix-sel        Fine-mixing (sel): keep the most-changed weights         ±
=================  =======================================================  =========

``NAME+epur`` runs E-PUR first; the registry holds both forms of each.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from .config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig, check_distill_labels, check_head_policy, check_teacher, check_teacher_input
from .errors import FinemixError

if TYPE_CHECKING:
    import torch

    from .data import Example


@dataclasses.dataclass(frozen=True)
class DefenderInputs:
    """What a defender holds. There is deliberately no field for anything the attacker knows."""

    suspect: Path
    pretrained: str
    clean: tuple["Example", ...]
    unlabelled: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DefenseSettings:
    """Budgets shared by every defense, so they are compared at equal clean data."""

    train: TrainConfig = TrainConfig(progress=False)
    ratio: Optional[float] = None  # None: the ρ search (finemix, finemix-sel, mix)
    search: RatioSearchConfig = RatioSearchConfig()
    epur: EpurConfig = EpurConfig()
    distill: bool = True  # with unlabelled text, for every defense that fine-tunes
    distill_rows: int = 2000
    distill_epochs: float = PurifyConfig().distill_epochs
    prune_ratio: float = 0.3  # fineprune: share of FFN neurons pruned in every layer
    head: str = "keep"  # mixing defenses: policy for tensors θ_Pre lacks (the baselines keep the suspect's head)
    teacher_input: str = PurifyConfig().teacher_input  # what the distillation teacher reads
    distill_labels: str = PurifyConfig().distill_labels  # the teacher's probabilities or its argmax
    teacher: str = PurifyConfig().teacher  # who labels the unlabelled texts: the suspect or cross-fitted students
    freeze_epur_rows: bool = PurifyConfig().freeze_epur_rows  # E-PUR's reset rows stay at θ_Pre while fine-tuning

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio < 1.0:
            raise FinemixError(f"prune ratio must be in [0, 1), got {self.prune_ratio}")
        check_head_policy(self.head)
        check_teacher_input(self.teacher_input)
        check_distill_labels(self.distill_labels)
        check_teacher(self.teacher)


@dataclasses.dataclass(frozen=True)
class DefenseResult:
    model: Path  # the defended model folder (the suspect itself for "none")
    report: dict


@dataclasses.dataclass(frozen=True)
class Defense:
    name: str
    run: Callable[[DefenderInputs, Path, DefenseSettings, bool], DefenseResult]
    description: str


# --------------------------------------------------------------------------- units

def _purify_config(settings: DefenseSettings, epur: bool, mix: MixConfig, auto: bool, finetune: bool) -> PurifyConfig:
    return PurifyConfig(mix=mix, ratio_auto=auto, search=settings.search, epur=settings.epur if epur else None,
                        train=settings.train, distill=settings.distill, distill_rows=settings.distill_rows,
                        distill_epochs=settings.distill_epochs, finetune=finetune, teacher_input=settings.teacher_input,
                        distill_labels=settings.distill_labels, teacher=settings.teacher,
                        freeze_epur_rows=settings.freeze_epur_rows)


def _purify(inputs: DefenderInputs, output: Path, config: PurifyConfig, force: bool,
            after_mix: Optional[Callable] = None) -> DefenseResult:
    from .pipeline import purify

    report = purify(inputs.suspect, inputs.pretrained, list(inputs.clean), output, config,
                    unlabelled_texts=list(inputs.unlabelled), force=force, after_mix=after_mix)
    return DefenseResult(Path(output), report)


def _mixing_defense(mode: str, finetune: bool, epur: bool):
    def run(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
        seed = settings.train.seed
        mix = MixConfig(ratio=settings.ratio if settings.ratio is not None else 0.3, mode=mode, seed=seed, head=settings.head)
        config = _purify_config(settings, epur, mix, auto=settings.ratio is None, finetune=finetune)
        return _purify(inputs, output, config, force)
    return run


def _finetune_defense(epur: bool):
    def run(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
        config = _purify_config(settings, epur, MixConfig(ratio=1.0, seed=settings.train.seed), auto=False, finetune=True)
        return _purify(inputs, output, config, force)
    return run


def _fineprune_defense(epur: bool):
    def run(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
        config = _purify_config(settings, epur, MixConfig(ratio=1.0, seed=settings.train.seed), auto=False, finetune=True)

        def prune(model, tokenizer, rows):
            return prune_dormant_neurons(model, tokenizer, rows, settings.prune_ratio, settings.train.max_length)
        return _purify(inputs, output, config, force, after_mix=prune)
    return run


def _epur_only(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
    config = _purify_config(settings, True, MixConfig(ratio=1.0, seed=settings.train.seed), auto=False, finetune=False)
    return _purify(inputs, output, config, force)


def _none(inputs: DefenderInputs, output: Path, settings: DefenseSettings, force: bool = False) -> DefenseResult:
    return DefenseResult(Path(inputs.suspect), {"command": "none"})


# --------------------------------------------------------------------------- fine-pruning

def ffn_activation_modules(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Linear"]]:
    """(name, up-projection) of every feed-forward block: BERT/RoBERTa/ELECTRA ``intermediate.dense``,
    DistilBERT ``ffn.lin1``. Other architectures get a one-line error."""
    found = [(name, module.dense) for name, module in model.named_modules()
             if name.endswith(".intermediate") and hasattr(module, "dense")]
    found += [(name, module.lin1) for name, module in model.named_modules() if name.endswith(".ffn") and hasattr(module, "lin1")]
    if not found:
        raise FinemixError(f"fine-pruning supports BERT-style encoders; found no feed-forward blocks in {type(model).__name__}")
    return found


def mean_activations(model, tokenizer, rows, max_length: int) -> list["torch.Tensor"]:
    """Mean activation of every FFN neuron over the non-padding tokens of ``rows``
    (after the activation function, as Fine-pruning ranks by average activation)."""
    import torch

    from .data import make_collator, tokenize_examples

    modules = ffn_activation_modules(model)
    activation = getattr(model.config, "hidden_act", None) or getattr(model.config, "activation", "gelu")
    from transformers.activations import get_activation

    act = get_activation(activation)
    sums = [torch.zeros(linear.out_features) for _, linear in modules]
    mask_holder: dict = {}

    def hook(index):
        def record(module, inputs, output):
            tokens = mask_holder["mask"].unsqueeze(-1).to(output.dtype)
            sums[index] += (act(output) * tokens).sum(dim=(0, 1)).detach()
        return record

    handles = [linear.register_forward_hook(hook(i)) for i, (_, linear) in enumerate(modules)]
    collate = make_collator(tokenizer)
    features = tokenize_examples(tokenizer, rows, max_length)
    tokens = 0
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(features), 64):
                batch = collate(features[start:start + 64])
                batch.pop("labels", None)
                mask_holder["mask"] = batch["attention_mask"]
                tokens += int(batch["attention_mask"].sum())
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return [s / max(tokens, 1) for s in sums]


def prune_dormant_neurons(model, tokenizer, rows, ratio: float, max_length: int) -> dict:
    """Zero the ``ratio`` least-active neurons of every FFN layer (in and out weights) and keep them
    zero through fine-tuning (their gradients are masked). Our adaptation of Fine-pruning (Liu et
    al. 2018), which prunes the last convolutional layer until accuracy drops: per layer, fixed ratio."""
    import torch

    for handle in getattr(model, "_finemix_prune_hooks", []):
        handle.remove()
    means = mean_activations(model, tokenizer, rows, max_length)
    handles, pruned = [], 0
    for (name, up), mean in zip(ffn_activation_modules(model), means):
        count = int(ratio * mean.numel())
        if count == 0:
            continue
        neurons = torch.argsort(mean)[:count]
        down = _down_projection(model, name)
        keep_rows = torch.ones(up.out_features, dtype=torch.bool)
        keep_rows[neurons] = False
        with torch.no_grad():
            up.weight[neurons] = 0
            if up.bias is not None:
                up.bias[neurons] = 0
            down.weight[:, neurons] = 0
        handles.append(up.weight.register_hook(lambda g, k=keep_rows: g * k.unsqueeze(1).to(g.dtype)))
        if up.bias is not None:
            handles.append(up.bias.register_hook(lambda g, k=keep_rows: g * k.to(g.dtype)))
        handles.append(down.weight.register_hook(lambda g, k=keep_rows: g * k.unsqueeze(0).to(g.dtype)))
        pruned += count
    model._finemix_prune_hooks = handles
    return {"pruned_neurons": pruned, "ratio": ratio, "layers": len(means), "activation_rows": len(rows)}


def _down_projection(model, block: str) -> "torch.nn.Linear":
    modules = dict(model.named_modules())
    if block.endswith(".ffn"):
        return modules[block].lin2
    return modules[block[: -len(".intermediate")] + ".output"].dense


# --------------------------------------------------------------------------- registry

def _registry() -> dict[str, Defense]:
    table = {
        "none": Defense("none", _none, "the suspect model, untouched"),
        "epur": Defense("epur", _epur_only, "E-PUR alone"),
    }
    units = {
        "finetune": (_finetune_defense, "clean fine-tuning of the suspect model"),
        "fineprune": (_fineprune_defense, "fine-pruning: prune dormant FFN neurons, then fine-tune"),
        "mix": (lambda epur: _mixing_defense("random", False, epur), "random mixing without fine-tuning"),
        "finemix": (lambda epur: _mixing_defense("random", True, epur), "Fine-mixing (random)"),
        "finemix-sel": (lambda epur: _mixing_defense("sel", True, epur), "Fine-mixing (sel)"),
    }
    for name, (make, description) in units.items():
        table[name] = Defense(name, make(False), description)
        table[f"{name}+epur"] = Defense(f"{name}+epur", make(True), f"E-PUR, then {description}")
    return table


DEFENSES: dict[str, Defense] = _registry()


def run_defense(name: str, inputs: DefenderInputs, output: str | os.PathLike, settings: DefenseSettings,
                force: bool = False) -> DefenseResult:
    if name not in DEFENSES:
        raise FinemixError(f"unknown defense {name!r}; known: {', '.join(DEFENSES)}")
    return DEFENSES[name].run(inputs, Path(output), settings, force)
