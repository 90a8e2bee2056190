"""Architecture roles: which tensor or module plays which part, declared per ``model_type``.

One table says where each architecture keeps its input word embedding, its classification
head and its feed-forward blocks (as mergekit's ``architecture/`` declares its weights),
instead of name suffixes scattered through the modules that need them. A ``model_type``
not in the table gets ``FALLBACK_ROLES``, which accept every spelling known here, as
finemix did before the table existed.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Union

from ..errors import FinemixError

Suffixes = Union[str, tuple[str, ...]]  # one name suffix, or several matched together (as str.endswith takes)


@dataclasses.dataclass(frozen=True)
class FfnModules:
    """Where fine-pruning finds one kind of feed-forward block, by module name.

    The block is a module whose name ends with ``.{block}``; its ``up`` Linear feeds the
    activation (one neuron per output feature); ``down`` is the down-projection Linear's
    path from the layer that holds the block.
    """

    block: str  # "intermediate" (BERT), "ffn" (DistilBERT)
    up: str  # "dense", "lin1"
    down: str  # "output.dense", "ffn.lin2"

    def is_block(self, module_name: str) -> bool:
        return module_name.endswith("." + self.block)

    def down_projection(self, block_name: str) -> str:
        """The down projection's module name for the block called ``block_name``."""
        return block_name[: -len(self.block)] + self.down


@dataclasses.dataclass(frozen=True)
class ArchitectureRoles:
    """The parts of one architecture that finemix treats specially, by tensor or module name."""

    # Name suffixes of the input word-embedding matrix, tried in order until one matches.
    word_embedding: tuple[Suffixes, ...]
    # Markers of classification-head tensors (substrings of their names).
    head_words: tuple[str, ...]
    # The feed-forward blocks fine-pruning ranks and prunes; none: fine-pruning refuses the model.
    ffn_modules: tuple[FfnModules, ...]
    # Name suffix of the language-model output matrix (decoders); declared for the causal-LM task.
    lm_head: Optional[str] = None
    # The token whose last hidden state a sequence classifier's head reads: "first" ([CLS], <s>) for
    # encoders, "last" (the last non-padding token) for decoders. Distillation matches the teacher's there.
    head_token: str = "first"


BERT_FFN = FfnModules(block="intermediate", up="dense", down="output.dense")
DISTILBERT_FFN = FfnModules(block="ffn", up="lin1", down="ffn.lin2")

_BERT_STYLE = ArchitectureRoles(word_embedding=("word_embeddings.weight",), head_words=("classifier.",),
                                ffn_modules=(BERT_FFN,))
# Gated (SwiGLU) MLPs feed the activation from two projections and GPT-2's are Conv1D, so
# neither fits fine-pruning's one up-projection: no FFN modules, fine-pruning refuses them.
_LLAMA_STYLE = ArchitectureRoles(word_embedding=("embed_tokens.weight",), head_words=("score.",),
                                 ffn_modules=(), lm_head="lm_head.weight", head_token="last")

ROLES: Mapping[str, ArchitectureRoles] = {
    "bert": _BERT_STYLE,
    "roberta": _BERT_STYLE,  # its head is classifier.dense + classifier.out_proj
    "electra": _BERT_STYLE,
    "distilbert": ArchitectureRoles(word_embedding=("word_embeddings.weight",),
                                    head_words=("classifier.",),  # also matches pre_classifier.
                                    ffn_modules=(DISTILBERT_FFN,)),
    "llama": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "gpt2": ArchitectureRoles(word_embedding=("wte.weight",), head_words=("score.",), ffn_modules=(),
                              lm_head="lm_head.weight", head_token="last"),
}

FALLBACK_ROLES = ArchitectureRoles(
    word_embedding=("word_embeddings.weight", ("embed_tokens.weight", "wte.weight")),
    head_words=("classifier.", "score.", "out_proj."),
    ffn_modules=(BERT_FFN, DISTILBERT_FFN),
)


def roles_for(config: Mapping) -> ArchitectureRoles:
    """The roles of the architecture a ``config.json`` names; ``FALLBACK_ROLES`` when unknown."""
    model_type = config.get("model_type")
    return ROLES.get(model_type, FALLBACK_ROLES) if isinstance(model_type, str) else FALLBACK_ROLES


def is_word_embedding(name: str, roles: ArchitectureRoles) -> bool:
    return any(name.endswith(suffixes) for suffixes in roles.word_embedding)


def is_head_tensor(name: str, roles: ArchitectureRoles) -> bool:
    return any(word in name for word in roles.head_words)


def word_embedding_name(names: Iterable[str], roles: ArchitectureRoles) -> str:
    """The one name among ``names`` that is the input word-embedding matrix."""
    names = list(names)
    candidates: list[str] = []
    for suffixes in roles.word_embedding:
        candidates = [n for n in names if n.endswith(suffixes)]
        if candidates:
            break
    if len(candidates) != 1:
        raise FinemixError(f"cannot identify the word-embedding matrix among {candidates or 'no candidates'}")
    return candidates[0]
