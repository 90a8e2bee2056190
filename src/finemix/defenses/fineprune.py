"""Fine-pruning (Liu et al. 2018), adapted to transformers: prune the FFN neurons least active on
clean data, then fine-tune. The feed-forward blocks come from the architecture's declared roles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FinemixError

if TYPE_CHECKING:
    import torch


def ffn_activation_modules(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Linear"]]:
    """(name, up-projection) of every feed-forward block the architecture declares
    (weights/roles.py: BERT/RoBERTa/ELECTRA ``intermediate.dense``, DistilBERT ``ffn.lin1``).
    Other architectures get a one-line error."""
    roles = _roles(model)
    found = [(name, getattr(module, ffn.up)) for ffn in roles.ffn_modules for name, module in model.named_modules()
             if ffn.is_block(name) and hasattr(module, ffn.up)]
    if not found:
        raise FinemixError(f"fine-pruning supports BERT-style encoders; found no feed-forward blocks in {type(model).__name__}")
    return found


def _roles(model: "torch.nn.Module"):
    from ..weights.roles import roles_for

    config = getattr(model, "config", None)
    return roles_for(config.to_dict() if config is not None else {})


def mean_activations(model, tokenizer, rows, max_length: int) -> list["torch.Tensor"]:
    """Mean activation of every FFN neuron over the non-padding tokens of ``rows``
    (after the activation function, as Fine-pruning ranks by average activation)."""
    import torch

    from ..data import make_collator, tokenize_examples

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
    for ffn in _roles(model).ffn_modules:
        if ffn.is_block(block):
            return modules[ffn.down_projection(block)]
    raise FinemixError(f"no down projection declared for {block}")
