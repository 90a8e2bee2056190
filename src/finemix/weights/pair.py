"""A fine-tuned checkpoint and its pre-trained one: opened, paired by name and checked."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import FinemixError
from .locate import load_config, resolve_model_dir
from .names import NameMap, map_names, prefix_candidates
from .reader import TensorReader, inside_folder
from .roles import ROLES, ArchitectureRoles, is_head_tensor, is_word_embedding, roles_for, word_embedding_name


@dataclasses.dataclass
class CheckpointPair:
    """A fine-tuned checkpoint and the pre-trained one it came from, checked and paired."""

    finetuned_dir: Path
    pretrained_dir: Path
    finetuned: TensorReader
    pretrained: TensorReader
    names: NameMap
    config: dict

    def embedding_name(self) -> str:
        """The fine-tuned name of the input word-embedding matrix."""
        return word_embedding_name(self.names.pairs, roles_for(self.config))


_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "dim", "n_layers")


def open_pair(finetuned: str | os.PathLike, pretrained: str | os.PathLike) -> CheckpointPair:
    """Open both checkpoints, pair their tensors, and refuse incompatible ones."""
    ft_dir, pre_dir = resolve_model_dir(finetuned), resolve_model_dir(pretrained)
    if ft_dir.resolve() == pre_dir.resolve():
        raise FinemixError(f"--backdoored and --pretrained are the same folder ({ft_dir}): --pretrained must be "
                           "the model before fine-tuning")
    for folder in (ft_dir, pre_dir):
        _check_files_inside(folder)
    ft_config, pre_config = load_config(ft_dir), load_config(pre_dir)
    for key in _ARCH_KEYS:
        if key in ft_config and key in pre_config and ft_config[key] != pre_config[key]:
            raise FinemixError(
                f"architectures differ: {key} is {ft_config[key]!r} in {ft_dir} but {pre_config[key]!r} in {pre_dir}"
            )
    ft_reader, pre_reader = TensorReader(ft_dir), TensorReader(pre_dir)
    names = map_names(ft_reader.names(), pre_reader.names(), prefix_candidates(ft_reader.names(), pre_reader.names()))
    roles = roles_for(ft_config)
    _check_shapes(names, ft_reader, pre_reader, roles)
    _check_not_swapped(names, ft_dir, pre_dir, roles)
    _check_complete(names, ft_reader, pre_reader, ft_dir, ft_config, roles)
    _check_not_identical(names, ft_reader, pre_reader, ft_dir, pre_dir)
    return CheckpointPair(ft_dir, pre_dir, ft_reader, pre_reader, names, ft_config)


def _check_files_inside(folder: Path) -> None:
    """No file of a model folder leads outside it: its files are read, hashed and (the
    suspect's) copied beside the output, so a link ``README.md → ~/.ssh/id_rsa`` would
    publish that file with the repaired model. Hub cache snapshots' links are allowed."""
    for item in sorted(folder.iterdir()):
        if item.is_symlink():
            inside_folder(folder, item.name)


def _check_not_identical(names: NameMap, ft: TensorReader, pre: TensorReader, ft_dir: Path, pre_dir: Path) -> None:
    """Refuse a pre-trained checkpoint that holds the suspect's own weights (the same files, a
    copy, or the same tensors saved in another format or without the head): the mix would
    keep θ_B whatever ρ says, and the report would claim a repair that did not happen.

    Tensors are compared smallest first and the check stops at the first that differs: a
    fine-tuning changes the small LayerNorm and bias tensors, so a real pair costs a few
    small reads; only an identical pair is read through.
    """
    import math

    import torch

    # All files the same (links, hard links, one Hub blob): no need to read them. One shard in
    # common is no proof (a deduplicating store shares an unchanged shard); the tensors decide.
    if all(any(os.path.samefile(a, b) for b in pre.files) for a in ft.files):
        raise FinemixError(f"{ft_dir} and {pre_dir} are the same weight files: --pretrained must be the model before "
                           "fine-tuning, not the suspect itself")
    for name in sorted(names.pairs, key=lambda n: math.prod(ft.shape(n))):
        a, b = ft.get(name), pre.get(names.pairs[name])
        if not (torch.equal(a, b) if a.dtype == b.dtype else torch.equal(a.double(), b.double())):
            return
    raise FinemixError(f"{ft_dir} and {pre_dir} hold the same weights (all {len(names.pairs)} tensors they share are "
                       "identical): --pretrained must be the model before fine-tuning, not the suspect or a copy of it")


# Modules of a base model that its classifier may drop (RoBERTa's and MPNet's classifiers have no pooler).
_OPTIONAL_BASE_MODULES = ("pooler",)


def _check_complete(names: NameMap, ft: TensorReader, pre: TensorReader, ft_dir: Path, config: dict,
                    roles: ArchitectureRoles) -> None:
    """Refuse a fine-tuned checkpoint that lacks a weight of its model: transformers would
    initialise that weight at random on every load of the output (tasks/classification.py
    checks the loaded model exactly; mix and epur never load it, 2.5 s, so this reads the
    checkpoints' names).

    Missing, when the pre-trained checkpoint has the weight (``.weight``, or a ``.bias``
    beside a ``.weight``: buffers such as GPT-2's ``attn.bias`` are no weights) inside a
    module the fine-tuned checkpoint has (a layer, an attention block) or a base-model
    module a classifier keeps; and a classification head that is partly or wholly absent.
    Pre-trained-only modules elsewhere (``cls.*``, ``lm_head``, a pooler) are a
    pre-training head the classifier does not have.
    """
    modules = {".".join(parts[:i]) for parts in (n.split(".") for n in ft.names()) for i in range(1, len(parts))}
    for name in names.pretrained_only:
        leaf_parent, _, leaf = name.rpartition(".")
        if leaf != "weight" and not (leaf == "bias" and f"{leaf_parent}.weight" in pre):
            continue
        wanted = _finetuned_name(name, names.rule).split(".")
        depth = max((i for i in range(1, len(wanted)) if ".".join(wanted[:i]) in modules), default=0)
        if depth >= 2 or (depth == 1 and wanted[1] not in _OPTIONAL_BASE_MODULES):
            _refuse_missing(ft_dir, ".".join(wanted))
    head = [n for n in ft.names() if is_head_tensor(n, roles)]
    for name in head:
        if name.endswith(".bias") and name[: -len("bias")] + "weight" not in ft:
            _refuse_missing(ft_dir, name[: -len("bias")] + "weight")
    architectures = config.get("architectures") if isinstance(config, dict) else None
    classifier = isinstance(architectures, list) and any(str(a).endswith("ForSequenceClassification")
                                                         for a in architectures)
    if not head and classifier and isinstance(config.get("model_type"), str) and config["model_type"] in ROLES:
        raise FinemixError(f"{ft_dir}: the checkpoint has no classification head ({architectures[0]} needs one; "
                           "transformers would initialise it at random): refused")


def _refuse_missing(folder: Path, name: str) -> None:
    raise FinemixError(f"{folder}: the checkpoint lacks {name}, a weight of its model (transformers would initialise "
                       "it at random on every load): refused")


def _finetuned_name(pretrained_name: str, rule: str) -> str:
    """A pre-trained tensor's name as the fine-tuned checkpoint would spell it (``NameMap.rule`` inverted)."""
    kind, _, quoted = rule.partition(" ")
    prefix = quoted.strip("'")
    if kind == "strip":
        return prefix + pretrained_name
    if kind == "add" and pretrained_name.startswith(prefix):
        return pretrained_name[len(prefix):]
    return pretrained_name


def _check_not_swapped(names: NameMap, ft_dir: Path, pre_dir: Path, roles: ArchitectureRoles) -> None:
    """A classification head on the pre-trained side only means the folders were swapped;
    mixing would silently write a model without its head."""
    pre_head = [n for n in names.pretrained_only if is_head_tensor(n, roles)]
    if pre_head and not names.finetuned_only:
        raise FinemixError(
            f"{pre_dir} has a classification head ({pre_head[0]}) and {ft_dir} has none: "
            "are --backdoored and --pretrained swapped?"
        )


def _check_shapes(names: NameMap, ft: TensorReader, pre: TensorReader, roles: ArchitectureRoles) -> None:
    for ft_name, pre_name in names.pairs.items():
        a, b = ft.shape(ft_name), pre.shape(pre_name)
        if a == b:
            continue
        if is_word_embedding(ft_name, roles) and a[1:] == b[1:]:
            raise FinemixError(
                f"vocabularies differ: {ft_name} has {a[0]} rows, the pre-trained one {b[0]} "
                "(added or removed tokens; resize one model's embeddings first)"
            )
        raise FinemixError(f"tensor {ft_name} has shape {a} but the pre-trained {pre_name} has {b}")
