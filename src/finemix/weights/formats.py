"""The Hugging Face weight-file layout: file names and safetensors dtype codes."""

from __future__ import annotations

import functools

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_SINGLE, SAFE_INDEX, BIN_SINGLE, BIN_INDEX)


def is_weight_file(name: str) -> bool:
    return name in WEIGHT_FILES or name.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"))


@functools.lru_cache(maxsize=None)
def dtype_tables() -> tuple[dict, dict]:
    """(torch dtype -> safetensors dtype code, the reverse), built once on first use."""
    import torch

    to_code = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
        torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    }
    return to_code, {code: dtype for dtype, code in to_code.items()}
