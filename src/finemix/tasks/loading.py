"""Loading a model folder for a task, checked: every failure is one ``FinemixError`` line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import FinemixError

if TYPE_CHECKING:
    import torch


def load_checked(folder: Path, auto_class: str, kind: str):
    """``transformers.<auto_class>.from_pretrained(folder)`` (never remote code), refused when a
    weight is missing or not finite.

    A weight the checkpoint lacks is refused, named: transformers would initialise it at
    random, so the model (and anything trained and written from it) would change on every load.
    """
    import transformers

    from ..weights.reader import TensorReader, all_finite

    stored = TensorReader(folder).names()  # also refuses shard files outside the folder before transformers reads them
    try:
        model, info = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=False,
                                                                        output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as error:
        raise FinemixError(f"{folder}: cannot load as {kind} ({short_error(error)})") from None
    missing = missing_weights(model, stored, info.get("missing_keys") or ())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FinemixError(f"{folder}: the checkpoint lacks {missing[0]}{more}, a weight of the model (transformers "
                           "would initialise it at random on every load): refused")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not all_finite(tensor):
            raise FinemixError(f"{folder}: weight {name} contains NaN or Inf values")
    return model


def missing_weights(model: "torch.nn.Module", stored: Sequence[str], reported: Sequence[str]) -> list[str]:
    """The model's weights that the checkpoint (tensor names ``stored``) does not hold, sorted.

    A weight is a parameter or a floating-point persistent buffer (integer buffers such as
    ``position_ids`` are built, not learnt; non-persistent ones are never saved).
    transformers' ``missing_keys`` (``reported``) name what it initialised, after tying
    weights and renaming legacy names, but leave out whatever the model class lists in
    ``_keys_to_ignore_on_load_missing``; those are compared with ``stored`` here: present
    under their name, with or without the base-model prefix, or through a tied twin.
    """
    import re

    state = model.state_dict()
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    patterns = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or ())]
    stored, prefix = set(stored), f"{getattr(model, 'base_model_prefix', '')}."
    twins: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            twins.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)

    def held(name: str) -> bool:
        return bool({name, name[len(prefix):] if name.startswith(prefix) else prefix + name} & stored)

    def weight(name: str) -> bool:
        return name in params or (name in state and state[name].is_floating_point())

    unlisted = {n for n in state if any(p.search(n) for p in patterns) and not held(n)
                and not any(held(t) for t in twins.get((state[n].data_ptr(), tuple(state[n].shape)), []))}
    return sorted(n for n in set(reported) | unlisted if weight(n))


def short_error(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:160] if lines else type(error).__name__)
