"""A tiny random Llama chat model and tokenizer for offline tests (no pytest here).

``make_llm_pair(root)`` writes ``root/pretrained`` (a random ``LlamaForCausalLM``: hidden 32,
2 layers, word-level vocabulary of ``tiny_models.VOCAB_WORDS`` plus ChatML's special tokens and
a ChatML chat template) and ``root/finetuned`` (the same model with every weight moved by small
seeded noise, and ``extra_noise`` more on some embedding rows). Both folders load with
``AutoModelForCausalLM`` / ``AutoTokenizer``; a few hundred KB, built in about a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch

from tiny_models import VOCAB_WORDS, quiet_transformers

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EXTRA_WORDS = ["user", "assistant", "system", "sorry", "cannot", "help", "answer", "question", "yes", "no", "paris"]


@dataclasses.dataclass(frozen=True)
class LlmPair:
    pretrained: Path
    finetuned: Path


def make_chat_tokenizer(folder: Path, chat_template: str | None = CHATML):
    """A word-level tokenizer (whitespace split) with ChatML specials, saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + list(dict.fromkeys(VOCAB_WORDS + EXTRA_WORDS))
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>", model_max_length=128)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_llm(folder: Path, tokenizer, tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=tied, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with quiet_transformers():
        model.save_pretrained(folder)
    return model


def make_llm_pair(root: Path, tied: bool = True, noise: float = 0.02, moved_rows: Sequence[int] = (),
                  extra_noise: float = 1.0) -> LlmPair:
    """(pretrained, finetuned) folders; ``moved_rows`` of the embedding move by ``extra_noise`` more."""
    root = Path(root)
    pre, ft = root / "pretrained", root / "finetuned"
    tokenizer = make_chat_tokenizer(pre)
    model = make_llm(pre, tokenizer, tied=tied)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter += noise * torch.randn(parameter.shape, generator=generator)
        embedding = model.get_input_embeddings().weight
        for row in moved_rows:
            embedding[row] += extra_noise * torch.randn(embedding.shape[1], generator=generator)
    with quiet_transformers():
        model.save_pretrained(ft)
    tokenizer.save_pretrained(ft)
    return LlmPair(pre, ft)


def make_lora_adapter(folder: Path, base: Path, rank: int = 4, alpha: int = 8, modules_to_save: Sequence[str] | None = None,
                      seed: int = 0, **options) -> Path:
    """A PEFT LoRA adapter on every linear layer of the tiny Llama at ``base``, B drawn at random (so Δ ≠ 0),
    saved with ``save_pretrained``; ``options`` go to ``LoraConfig``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear", lora_dropout=0.0,
                        modules_to_save=list(modules_to_save) if modules_to_save else None, **options)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter += 0.1 * torch.randn(parameter.shape, generator=generator)
    with quiet_transformers():
        peft_model.save_pretrained(folder)
    return Path(folder)
