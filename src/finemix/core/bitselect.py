"""Bit-exact selection between two tensors: out = kept where a mask says so, else rest.

torch.where has no vectorised bf16 path on CPU; integer bit operations on same-width views do the
same copy, bit for bit (NaN payloads and -0.0 included), several times faster (measured on 4M
elements: 2.5 ns an element against 0.4 in bf16, 2.5 against about 1 in fp32).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SELECT_BLOCK = 1 << 18  # elements per step of ``select``: fits a core's cache (the fastest of 64K-4M measured)
_SAME_WIDTH_INT = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def select(keep: "torch.Tensor", kept_from: "torch.Tensor", rest: "torch.Tensor", out: "torch.Tensor",
           block: int = SELECT_BLOCK) -> None:
    """out = kept_from where ``keep`` (bool), else rest: flat tensors of one dtype, copied bit for bit,
    one cache-sized block at a time."""
    import torch

    itype = integer_view_type(kept_from)
    if itype is None:  # complex128 and wider: no integer of that width
        torch.where(keep, kept_from, rest, out=out)
        return
    kept_bits, rest_bits, out_bits = kept_from.view(itype), rest.view(itype), out.view(itype)
    for start in range(0, out.numel(), block):
        part = slice(start, start + block)
        select_by_bits(keep[part].to(itype).neg_(), kept_bits[part], rest_bits[part], out_bits[part])


def integer_view_type(tensor: "torch.Tensor") -> "torch.dtype | None":
    """The signed integer dtype as wide as ``tensor``'s elements (None above 8 bytes)."""
    import torch

    width = _SAME_WIDTH_INT.get(tensor.element_size())
    return getattr(torch, width) if width else None


def select_by_bits(mask: "torch.Tensor", kept_bits: "torch.Tensor", rest_bits: "torch.Tensor",
                   out_bits: "torch.Tensor") -> None:
    """out = rest ^ ((rest ^ kept) & mask) on integer views: ``mask`` all ones (-1) where kept, 0 elsewhere."""
    import torch

    torch.bitwise_xor(rest_bits, kept_bits, out=out_bits)
    out_bits.bitwise_and_(mask)
    out_bits.bitwise_xor_(rest_bits)
