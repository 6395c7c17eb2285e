"""bitsandbytes quantization configs (8-bit, 4-bit NF4/FP4) and an early availability check."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

QUANTIZATION_MODES = ("none", "8bit", "4bit")
QUANT_TYPES = ("nf4", "fp4")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class QuantizationUnavailableError(RuntimeError):
    """Quantization was asked for but bitsandbytes cannot be imported."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; a ``torch.dtype`` passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_quantization_available(mode: str) -> None:
    """Raise a clear error now if ``mode`` needs bitsandbytes and it is missing.

    Cheap (no import of bitsandbytes itself), so config validation can call it before any
    model is downloaded or loaded.
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(
            f"unknown quantization mode {mode!r}; valid: {', '.join(QUANTIZATION_MODES)}"
        )
    if mode == "none":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailableError(
            f"quantization {mode!r} needs the bitsandbytes package, which is not installed; "
            "`pip install bitsandbytes` or set quantization: none"
        )


def make_quantization_config(
    mode: str,
    *,
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: str | torch.dtype = "bfloat16",
) -> BitsAndBytesConfig | None:
    """The ``quantization_config`` for ``from_pretrained``; None for ``mode="none"``.

    Args:
        mode: ``none``, ``8bit`` or ``4bit``.
        quant_type: 4-bit data type, ``nf4`` (QLoRA's default) or ``fp4``.
        double_quant: also quantize the 4-bit blocks' scaling constants (saves ~0.4 bit/param).
        compute_dtype: dtype the 4-bit matmuls run in.
    """
    check_quantization_available(mode)
    if mode == "none":
        return None
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant_type not in QUANT_TYPES:
        raise ValueError(
            f"unknown 4-bit quant_type {quant_type!r}; valid: {', '.join(QUANT_TYPES)}"
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(compute_dtype),
    )
