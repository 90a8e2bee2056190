"""Checkpoint pairs ("pre-trained" θ_Pre, "fine-tuned" θ_B) written with safetensors directly: a random
BERT-like pair of any size and a MiniLM-based pair; plus the weight files and size of a folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

from lib.constants import GB, TOKENIZER_FILES
from lib.fixtures import cache_complete, mark_cache_complete, minilm_dir


def folder_weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix == ".safetensors")


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder_weight_files(folder))


def _write_shards(folder: Path, tensors: Iterable[tuple[str, "Any"]], shard_bytes: int) -> None:
    """Write (name, tensor) pairs as safetensors shards of at most ``shard_bytes`` (+ index)."""
    from safetensors.torch import save_file

    pending: dict = {}
    size = 0
    names: list[tuple[str, list[str]]] = []

    def flush() -> None:
        nonlocal pending, size
        name = f"part-{len(names)}.safetensors"
        save_file(pending, str(folder / name), metadata={"format": "pt"})
        names.append((name, list(pending)))
        pending, size = {}, 0

    total = 0
    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if pending and size + nbytes > shard_bytes:
            flush()
        pending[key] = tensor.contiguous()
        size += nbytes
        total += nbytes
    if pending or not names:
        flush()
    if len(names) == 1:
        os.replace(folder / names[0][0], folder / "model.safetensors")
        return
    weight_map = {}
    for i, (old, keys) in enumerate(names, start=1):
        new = f"model-{i:05d}-of-{len(names):05d}.safetensors"
        os.replace(folder / old, folder / new)
        weight_map.update({k: new for k in keys})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def bert_shapes(hidden: int, layers: int, vocab: int = 30522, intermediate: Optional[int] = None,
                positions: int = 512) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names (bare BertModel naming) and shapes of a BERT encoder with pooler."""
    inter = intermediate or 4 * hidden
    shapes = [
        ("embeddings.word_embeddings.weight", (vocab, hidden)),
        ("embeddings.position_embeddings.weight", (positions, hidden)),
        ("embeddings.token_type_embeddings.weight", (2, hidden)),
        ("embeddings.LayerNorm.weight", (hidden,)),
        ("embeddings.LayerNorm.bias", (hidden,)),
    ]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            shapes += [(p + f"attention.self.{part}.weight", (hidden, hidden)), (p + f"attention.self.{part}.bias", (hidden,))]
        shapes += [
            (p + "attention.output.dense.weight", (hidden, hidden)), (p + "attention.output.dense.bias", (hidden,)),
            (p + "attention.output.LayerNorm.weight", (hidden,)), (p + "attention.output.LayerNorm.bias", (hidden,)),
            (p + "intermediate.dense.weight", (inter, hidden)), (p + "intermediate.dense.bias", (inter,)),
            (p + "output.dense.weight", (hidden, inter)), (p + "output.dense.bias", (hidden,)),
            (p + "output.LayerNorm.weight", (hidden,)), (p + "output.LayerNorm.bias", (hidden,)),
        ]
    shapes += [("pooler.dense.weight", (hidden, hidden)), ("pooler.dense.bias", (hidden,))]
    return shapes


def _bert_config(hidden: int, layers: int, vocab: int, classifier: bool) -> dict:
    config = {
        "architectures": ["BertForSequenceClassification" if classifier else "BertModel"],
        "model_type": "bert", "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64), "intermediate_size": 4 * hidden, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "dtype": "float32",
    }
    if classifier:
        config.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    return config


def _copy_tokenizer(target: Path) -> None:
    source = minilm_dir()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def _cached_or_emptied(root: Path, spec: dict) -> bool:
    """True when ``root`` holds a complete pair built from ``spec``; else it is emptied, with fresh
    ``pretrained`` and ``finetuned`` folders, for the caller to build."""
    if cache_complete(root, spec):
        return True
    shutil.rmtree(root, ignore_errors=True)
    (root / "pretrained").mkdir(parents=True)
    (root / "finetuned").mkdir(parents=True)
    return False


def build_synthetic_pair(workdir: Path, hidden: int, layers: int, vocab: int = 30522,
                         shard_bytes: int = 1_000_000_000, seed: int = 0, noise: float = 1e-3) -> tuple[Path, Path]:
    """Random fp32 BERT-like pair: θ_Pre (bare ``BertModel`` names) and θ_B = θ_Pre + noise with a
    ``bert.`` prefix and a 2-class head (``BertForSequenceClassification`` config), both in ~1 GB
    safetensors shards, with the bert-base-uncased (MiniLM) tokenizer, vocab 30522. Cached by spec."""
    import torch

    spec = {"hidden": hidden, "layers": layers, "vocab": vocab, "shard_bytes": shard_bytes, "seed": seed, "noise": noise, "v": 1}
    root = Path(workdir) / f"synth-h{hidden}-l{layers}-v{vocab}"
    pre_dir, ft_dir = root / "pretrained", root / "finetuned"
    if _cached_or_emptied(root, spec):
        return ft_dir, pre_dir
    shapes = bert_shapes(hidden, layers, vocab)
    noise_gen = torch.Generator().manual_seed(seed + 1)

    def pre_tensors():
        gen = torch.Generator().manual_seed(seed)
        for name, shape in shapes:
            yield name, torch.randn(shape, generator=gen) * 0.02

    def ft_tensors():
        gen = torch.Generator().manual_seed(seed)
        for name, shape in shapes:
            base = torch.randn(shape, generator=gen) * 0.02
            yield "bert." + name, base.add_(torch.randn(shape, generator=noise_gen), alpha=noise)
        head = torch.Generator().manual_seed(seed + 2)
        yield "classifier.weight", torch.randn((2, hidden), generator=head) * 0.02
        yield "classifier.bias", torch.zeros(2)

    _write_shards(pre_dir, pre_tensors(), shard_bytes)
    _write_shards(ft_dir, ft_tensors(), shard_bytes)
    (pre_dir / "config.json").write_text(json.dumps(_bert_config(hidden, layers, vocab, False), indent=2))
    (ft_dir / "config.json").write_text(json.dumps(_bert_config(hidden, layers, vocab, True), indent=2))
    _copy_tokenizer(pre_dir)
    _copy_tokenizer(ft_dir)
    mark_cache_complete(root, spec)
    return ft_dir, pre_dir


def build_minilm_pair(workdir: Path, seed: int = 0, noise: float = 1e-3) -> tuple[Path, Path]:
    """θ_Pre = the packaged MiniLM folder as is; θ_B = MiniLM + N(0, noise²) with a ``bert.`` prefix and a
    2-class head, ``BertForSequenceClassification`` config, MiniLM tokenizer (written to ``workdir``)."""
    import torch
    from safetensors import safe_open

    pre_dir = minilm_dir()
    spec = {"seed": seed, "noise": noise, "source": str(pre_dir), "v": 1}
    root = Path(workdir) / "minilm-pair"
    ft_dir = root / "finetuned"
    if cache_complete(root, spec):
        return ft_dir, pre_dir
    shutil.rmtree(root, ignore_errors=True)
    ft_dir.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    with safe_open(str(pre_dir / "model.safetensors"), framework="pt") as handle:
        for name in handle.keys():
            tensor = handle.get_tensor(name)
            if not torch.is_floating_point(tensor):
                continue  # position_ids: a buffer save_pretrained no longer writes
            tensors["bert." + name] = tensor.clone().add_(torch.randn(tensor.shape, generator=gen), alpha=noise)
    config = json.loads((pre_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    tensors["classifier.weight"] = torch.randn((2, hidden), generator=gen) * 0.02
    tensors["classifier.bias"] = torch.zeros(2)
    _write_shards(ft_dir, tensors.items(), 10 * GB)
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "negative", "1": "positive"},
                  label2id={"negative": 0, "positive": 1})
    (ft_dir / "config.json").write_text(json.dumps(config, indent=2))
    _copy_tokenizer(ft_dir)
    mark_cache_complete(root, spec)
    return ft_dir, pre_dir


def llama_shapes(hidden: int, layers: int, intermediate: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of a ``LlamaForCausalLM`` (full multi-head attention, untied ``lm_head``), in file order."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        prefix = f"model.layers.{i}."
        shapes += [(prefix + f"self_attn.{p}_proj.weight", (hidden, hidden)) for p in "qkvo"]
        shapes += [(prefix + "mlp.gate_proj.weight", (intermediate, hidden)), (prefix + "mlp.up_proj.weight", (intermediate, hidden)),
                   (prefix + "mlp.down_proj.weight", (hidden, intermediate)),
                   (prefix + "input_layernorm.weight", (hidden,)), (prefix + "post_attention_layernorm.weight", (hidden,))]
    return shapes + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def llama_params(hidden: int, layers: int, intermediate: int, vocab: int) -> int:
    import math

    return sum(math.prod(shape) for _, shape in llama_shapes(hidden, layers, intermediate, vocab))


def build_llama_pair(workdir: Path, hidden: int, layers: int, intermediate: int, shard_bytes: int = 1_000_000_000,
                     seed: int = 0, noise: float = 1e-3) -> tuple[Path, Path]:
    """Random bf16 Llama-shaped pair in ~1 GB shards: θ_B = θ_Pre + noise, same names (a chat model
    fine-tuned from its instruct model), SmolLM2's tokenizer (vocab 49152). Cached by spec."""
    import torch

    from finemix.weights.locate import resolve_model_dir

    vocab = 49152
    spec = {"hidden": hidden, "layers": layers, "intermediate": intermediate, "shard_bytes": shard_bytes, "seed": seed,
            "noise": noise, "dtype": "bfloat16", "v": 1}
    root = Path(workdir) / f"llama-h{hidden}-l{layers}-i{intermediate}-bf16"
    pre_dir, ft_dir = root / "pretrained", root / "finetuned"
    if _cached_or_emptied(root, spec):
        return ft_dir, pre_dir
    shapes = llama_shapes(hidden, layers, intermediate, vocab)

    def tensors(noisy: bool):
        gen, noise_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
        for name, shape in shapes:
            base = torch.randn(shape, generator=gen) * 0.02 if len(shape) == 2 else torch.ones(shape)
            if noisy:
                base.add_(torch.randn(shape, generator=noise_gen), alpha=noise)
            yield name, base.to(torch.bfloat16)

    _write_shards(pre_dir, tensors(False), shard_bytes)
    _write_shards(ft_dir, tensors(True), shard_bytes)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
              "num_hidden_layers": layers, "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 64,
              "vocab_size": vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    tokenizer_dir = resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")
    for folder in (pre_dir, ft_dir):
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, folder / name)
    mark_cache_complete(root, spec)
    return ft_dir, pre_dir


def build_lora_adapter(base_dir: Path, folder: Path, rank: int = 16, alpha: int = 32, seed: int = 0) -> Path:
    """A synthetic PEFT LoRA adapter (bf16 factors, rank ``rank``) on every linear weight of a Llama-shaped
    base written by ``build_llama_pair``: adapter_config.json and adapter_model.safetensors, as peft saves them."""
    import torch
    from safetensors.torch import save_file

    from finemix.weights.reader import TensorReader

    base = TensorReader(base_dir)
    generator = torch.Generator().manual_seed(seed)
    tensors, modules = {}, set()
    for name in base.names():
        shape = base.shape(name)
        if len(shape) != 2 or not name.startswith("model.layers."):
            continue
        module = name[: -len(".weight")]
        modules.add(module.rsplit(".", 1)[1])
        tensors[f"base_model.model.{module}.lora_A.weight"] = (torch.randn(rank, shape[1], generator=generator) * 0.01).to(torch.bfloat16)
        tensors[f"base_model.model.{module}.lora_B.weight"] = (torch.randn(shape[0], rank, generator=generator) * 0.01).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": sorted(modules), "lora_dropout": 0.0,
              "bias": "none", "base_model_name_or_path": str(base_dir), "task_type": "CAUSAL_LM"}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


def hub_snapshot(folder: Path, cache: Path) -> Path:
    """``folder`` laid out as huggingface_hub caches a download: ``snapshots/<rev>/<file>`` links to
    ``blobs/<etag>``, the etag a large file's SHA-256 and a small file's git blob SHA-1, as the Hub names
    them. Blobs are hard links to the folder's files (no copy); the digests are computed here, untimed."""
    import hashlib

    repo = cache / f"models--bench--{folder.parent.name}-{folder.name}"
    shutil.rmtree(repo, ignore_errors=True)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        large = file.suffix in (".safetensors", ".bin") or file.stat().st_size >= 10 * 1024**2  # stored by LFS/Xet
        digest = hashlib.sha256() if large else hashlib.sha1(b"blob %d\0" % file.stat().st_size)
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        os.link(file, repo / "blobs" / digest.hexdigest())
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", digest.hexdigest()))
    return snapshot
