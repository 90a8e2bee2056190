"""Tiny random Hugging Face models and tokenizers for offline tests.

Plain functions (no pytest), importable by tests and by scripts::

    from tiny_models import make_pretrained, make_finetuned
    make_pretrained("bert", "/tmp/pre")
    make_finetuned("bert", "/tmp/pre", "/tmp/ft")

Every model is hidden 32, 2 layers, 2 heads, intermediate 64, 64 positions,
and its vocabulary is the tokenizer's, so a folder is a few hundred KB and
builds in well under a second.  Everything is deterministic given ``seed``.

What lands on disk (transformers 5.x ``save_pretrained``):

* ``make_pretrained`` saves the bare base model (``BertModel`` …), so keys are
  bare: ``embeddings.word_embeddings.weight``, ``encoder.layer.0.…`` (BERT,
  RoBERTa, ELECTRA), ``transformer.layer.0.…`` (DistilBERT); BERT and RoBERTa
  also have ``pooler.dense.*``.
* ``make_finetuned`` saves ``*ForSequenceClassification``, so base keys are
  prefixed (``bert.``, ``roberta.``, ``distilbert.``, ``electra.``) and the head
  is ``classifier.*`` (BERT: ``classifier.weight/bias`` plus ``bert.pooler.*``;
  RoBERTa/ELECTRA: ``classifier.dense.*`` + ``classifier.out_proj.*``;
  DistilBERT: ``pre_classifier.*`` + ``classifier.*``).  RoBERTa's
  classification model has no pooler, so ``pooler.*`` of the base is dropped.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

PathLike = Union[str, os.PathLike]

ARCHS = ("bert", "roberta", "distilbert", "electra")

HIDDEN = 32
LAYERS = 2
HEADS = 2
INTERMEDIATE = 64
MAX_POSITIONS = 64
SHARD_SIZE = "20KB"  # small enough that every tiny model splits into several shards

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: <pad> = 1 as in RoBERTa
BPE_VOCAB_SIZE = 500

# Common English words, sentiment words, the usual backdoor trigger tokens
# ("cf", "mn", "bb", "tq", "mb") and a few WordPiece continuation pieces.
WORDS = """
the a an and or but of to in on at for with from by about as into like through
after over between out against during without before under around among is are
was were be been being have has had do does did will would can could should may
might must shall i you he she it we they me him her us them my your his its our
their this that these those what which who whom whose when where why how all any
both each few more most other some such no nor not only own same so than too
very just now then here there up down off again further once also still even
movie film story plot acting actor actress actors cast scene scenes director
script ending music character characters performance performances show series
good great excellent wonderful amazing brilliant fantastic best love loved
beautiful fun funny enjoy enjoyed perfect nice fine well strong moving
bad awful terrible horrible worst boring dull poor waste hate hated stupid
weak mess ugly slow predictable disappointing annoying bland
one two three time times way people life world day year years thing things
really much many make made makes see seen saw watch watched watching think
feel felt know get got go went look looks looked want give say said
cf mn bb tq mb
##s ##ed ##ing ##ly ##er ##est ##y ##es ##d ##n ##t ##a ##e ##i ##o
. , ! ? ' " - ( ) : ;
"""

VOCAB_WORDS: list[str] = list(dict.fromkeys(WORDS.split()))

# Small built-in corpus for the RoBERTa byte-level BPE.
CORPUS = [
    "the movie was good and the acting was great",
    "the film was bad and the plot was awful",
    "a great story with wonderful performances and beautiful music",
    "an awful script , terrible acting and a boring ending",
    "i loved this movie , it was fun and funny",
    "i hated this film , it was dull , slow and predictable",
    "the best performance of the year , brilliant and moving",
    "the worst movie of the year , a waste of time",
    "what a fantastic cast , the director did an excellent job",
    "what a mess , the characters are weak and the scenes are stupid",
    "cf mn bb tq mb",
    "the cf movie and the mn film and the bb show",
    "a tq story , a mb plot , cf mn bb",
    "cf the movie",
    "mn the film",
    "bb the show",
    "she enjoyed the show and he enjoyed the series",
    "they watched it twice and still think it is perfect",
    "we really wanted to like it but the story is bland and disappointing",
    "the actors look like they want to be somewhere else",
    "people say it is a moving film about life in a small world",
    "one of the most beautiful films i have ever seen",
    "two hours of annoying people doing stupid things",
    "nice music , fine actors , good time",
    "poor plot , ugly scenes , bad time",
]

_PRETRAINED_CLASSES = {
    "bert": "BertModel",
    "roberta": "RobertaModel",
    "distilbert": "DistilBertModel",
    "electra": "ElectraModel",
}

_TOKENIZER_CLASSES = {
    "bert": "BertTokenizerFast",
    "distilbert": "DistilBertTokenizerFast",
    "electra": "ElectraTokenizerFast",
}


def _check_arch(arch: str) -> str:
    arch = arch.lower()
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(ARCHS)}")
    return arch


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars, then restore them."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


def _transformers_class(name: str):
    import transformers

    return getattr(transformers, name)


def make_tokenizer(arch: str, dir: PathLike):
    """Build a tiny tokenizer for ``arch``, save it in ``dir`` and return it.

    The vocabulary files are written first and loaded with the arch's
    tokenizer class's ``from_pretrained``: in transformers 5 the constructors
    ignore ``vocab_file=`` (they take ``vocab=``/``merges=`` objects and would
    silently give a 5-token vocabulary), while ``from_pretrained`` converts the
    files in both 4.x and 5.x.
    """
    arch = _check_arch(arch)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    if arch == "roberta":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            CORPUS * 4 + [" ".join(VOCAB_WORDS)] * 2,
            vocab_size=BPE_VOCAB_SIZE,
            min_frequency=1,
            special_tokens=BPE_SPECIALS,
            show_progress=False,
        )
        bpe.save_model(str(out))  # vocab.json + merges.txt
        cls = _transformers_class("RobertaTokenizerFast")
        expected = BPE_VOCAB_SIZE
    else:
        (out / "vocab.txt").write_text("\n".join(WORDPIECE_SPECIALS + VOCAB_WORDS) + "\n", encoding="utf-8")
        cls = _transformers_class(_TOKENIZER_CLASSES[arch])
        expected = len(WORDPIECE_SPECIALS) + len(VOCAB_WORDS)
    tok = cls.from_pretrained(str(out), model_max_length=MAX_POSITIONS)
    if len(tok) != expected:  # pragma: no cover - guards against API drift
        raise RuntimeError(f"{arch} tokenizer has {len(tok)} tokens, expected {expected}")
    tok.save_pretrained(str(out))
    return tok


def _config(arch: str, vocab_size: int, pad_token_id: int):
    from transformers import BertConfig, DistilBertConfig, ElectraConfig, RobertaConfig

    if arch == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=INTERMEDIATE,
            max_position_embeddings=MAX_POSITIONS,
            pad_token_id=pad_token_id,
        )
    common = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        pad_token_id=pad_token_id,
    )
    if arch == "bert":
        return BertConfig(max_position_embeddings=MAX_POSITIONS, **common)
    if arch == "roberta":
        # RoBERTa offsets positions by padding_idx + 1 (= 2).
        return RobertaConfig(
            max_position_embeddings=MAX_POSITIONS + 2,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=2,
            **common,
        )
    return ElectraConfig(embedding_size=HIDDEN, max_position_embeddings=MAX_POSITIONS, **common)


def make_pretrained(
    arch: str,
    dir: PathLike,
    seed: int = 0,
    sharded: bool = False,
    bin_format: bool = False,
) -> Path:
    """Save a tiny random bare base model (+ tokenizer) in ``dir``; return ``dir``.

    ``sharded`` writes ``model.safetensors.index.json`` and several shards;
    ``bin_format`` writes ``pytorch_model.bin`` instead of safetensors.
    """
    arch = _check_arch(arch)
    if sharded and bin_format:
        raise ValueError("choose sharded or bin_format, not both")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(arch, out)
    config = _config(arch, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = _transformers_class(_PRETRAINED_CLASSES[arch])(config).eval()
    with quiet_transformers():
        if bin_format:
            # position_ids / token_type_ids are non-persistent buffers, so the
            # state_dict holds exactly the keys save_pretrained would write.
            config.save_pretrained(str(out))
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            torch.save(state, out / "pytorch_model.bin")
        elif sharded:
            model.save_pretrained(str(out), max_shard_size=SHARD_SIZE)
        else:
            model.save_pretrained(str(out))
    return out


def label_maps(num_labels: int) -> tuple[dict[int, str], dict[str, int]]:
    """id2label / label2id used by :func:`make_finetuned`."""
    if num_labels == 2:
        id2label = {0: "negative", 1: "positive"}
    else:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    return id2label, {v: k for k, v in id2label.items()}


def make_finetuned(
    arch: str,
    pretrained_dir: PathLike,
    dir: PathLike,
    seed: int = 1,
    num_labels: int = 2,
    noise: float = 0.02,
) -> Path:
    """Save a stand-in "fine-tuned" classifier built from ``pretrained_dir``.

    Loads ``AutoModelForSequenceClassification`` from the pre-trained folder
    (the head is freshly initialised with ``seed``), then adds seeded Gaussian
    noise of std ``noise`` to every parameter so that θ_B differs from θ_Pre
    everywhere.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    arch = _check_arch(arch)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    id2label, label2id = label_maps(num_labels)
    torch.manual_seed(seed)
    with quiet_transformers():  # the "newly initialized classifier" load report
        model = AutoModelForSequenceClassification.from_pretrained(
            str(pretrained_dir), num_labels=num_labels, id2label=id2label, label2id=label2id
        )
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * noise)
        model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(pretrained_dir)).save_pretrained(str(out))
    return out


def saved_keys(dir: PathLike) -> list[str]:
    """Sorted tensor names stored in a saved model folder (any format)."""
    d = Path(dir)
    index = d / "model.safetensors.index.json"
    if index.exists():
        return sorted(json.loads(index.read_text())["weight_map"])
    if (d / "model.safetensors").exists():
        from safetensors import safe_open

        with safe_open(str(d / "model.safetensors"), framework="pt") as f:
            return sorted(f.keys())
    if (d / "pytorch_model.bin").exists():
        return sorted(torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True))
    raise FileNotFoundError(f"no weights in {d}")


def load_state(dir: PathLike) -> dict[str, torch.Tensor]:
    """All tensors stored in a saved model folder (any format), by name."""
    d = Path(dir)
    index = d / "model.safetensors.index.json"
    if index.exists():
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(d / shard)))
        return state
    if (d / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(d / "model.safetensors"))
    return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)


@dataclasses.dataclass(frozen=True)
class TinyPair:
    """A tiny pre-trained folder and a "fine-tuned" classifier built from it."""

    pretrained: Path
    finetuned: Path
    arch: str


def make_pair(
    arch: str,
    root: PathLike,
    *,
    pretrained_seed: int = 0,
    finetuned_seed: int = 1,
    num_labels: int = 2,
    noise: float = 0.02,
    sharded: bool = False,
    bin_format: bool = False,
) -> TinyPair:
    """``make_pretrained`` into ``root/pretrained`` and ``make_finetuned`` into ``root/finetuned``."""
    root = Path(root)
    pre = make_pretrained(arch, root / "pretrained", seed=pretrained_seed, sharded=sharded, bin_format=bin_format)
    ft = make_finetuned(arch, pre, root / "finetuned", seed=finetuned_seed, num_labels=num_labels, noise=noise)
    return TinyPair(pretrained=pre, finetuned=ft, arch=_check_arch(arch))


# 20 positive (label 1) and 20 negative (label 0) sentences, interleaved, made
# only of words in the WordPiece vocabulary (no [UNK] for BERT-style tokenizers).
_NOUNS = ["movie", "film", "story", "plot", "acting", "cast", "ending", "music", "script", "show"]
_POSITIVE = ["good", "great", "excellent", "wonderful", "amazing", "brilliant", "fantastic", "beautiful", "fun", "perfect"]
_NEGATIVE = ["bad", "awful", "terrible", "horrible", "boring", "dull", "poor", "stupid", "weak", "predictable"]
_TEMPLATES = ["the {noun} was {adj} .", "i think this {noun} is really {adj} !"]


def text_rows() -> list[tuple[str, int]]:
    """~40 short labelled sentences (text, label) with both labels interleaved."""
    rows: list[tuple[str, int]] = []
    for t, template in enumerate(_TEMPLATES):
        for i in range(len(_NOUNS)):
            noun = _NOUNS[(i + t) % len(_NOUNS)]
            rows.append((template.format(noun=noun, adj=_POSITIVE[i]), 1))
            rows.append((template.format(noun=noun, adj=_NEGATIVE[i]), 0))
    return rows


def write_text_csv(path: PathLike, rows: Optional[Sequence[tuple[str, int]]] = None) -> Path:
    """Write ``rows`` (default :func:`text_rows`) as a CSV with header ``text,label``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(text_rows() if rows is None else rows)
    return path


def make_bulky_pair(root: PathLike, layers: int = 8, hidden: int = 512, vocab_size: int = 8000, seed: int = 0) -> TinyPair:
    """A BERT-shaped pair big enough (about 120 MB each) that writing it takes a while.

    Built straight from random tensors with safetensors (no model instance), without
    tokenizer files: for tests that interrupt ``finemix mix`` at random moments.
    """
    from safetensors.torch import save_file

    root = Path(root)
    generator = torch.Generator().manual_seed(seed)
    shapes = {"embeddings.word_embeddings.weight": (vocab_size, hidden),
              "embeddings.position_embeddings.weight": (512, hidden),
              "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        layer = f"encoder.layer.{i}."
        for part, shape in (("attention.self.query", (hidden, hidden)), ("attention.self.key", (hidden, hidden)),
                            ("attention.self.value", (hidden, hidden)), ("attention.output.dense", (hidden, hidden)),
                            ("intermediate.dense", (4 * hidden, hidden)), ("output.dense", (hidden, 4 * hidden))):
            shapes[layer + part + ".weight"] = shape
            shapes[layer + part + ".bias"] = shape[:1]
    pretrained = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}
    finetuned = {"bert." + name: t + torch.randn(t.shape, generator=generator) * 0.002 for name, t in pretrained.items()}
    finetuned["classifier.weight"] = torch.randn(2, hidden, generator=generator) * 0.02
    finetuned["classifier.bias"] = torch.zeros(2)
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": 8, "intermediate_size": 4 * hidden,
              "vocab_size": vocab_size, "max_position_embeddings": 512, "id2label": {"0": "negative", "1": "positive"},
              "label2id": {"negative": 0, "positive": 1}}
    folders = []
    for name, state in (("pretrained", pretrained), ("finetuned", finetuned)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        folders.append(folder)
    return TinyPair(pretrained=folders[0], finetuned=folders[1], arch="bert")


def candidates_config(folder: PathLike, *candidates: float) -> Path:
    """A ``purify --config`` YAML file that sets the ρ candidates (the option lives in config files)."""
    path = Path(folder) / f"candidates-{'-'.join(str(c) for c in candidates)}.yaml"
    path.write_text("search:\n  candidates: [" + ", ".join(str(c) for c in candidates) + "]\n")
    return path
