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


def _linear4bit_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every bitsandbytes ``Linear4bit`` in ``model`` (none when bitsandbytes is absent)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return []
    import bitsandbytes as bnb

    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def _is_packed_for_cpu(module: torch.nn.Module) -> bool:
    quant_state = getattr(module.weight, "quant_state", None)
    return bool(getattr(quant_state, "packing_format_for_cpu", False))


def _unpack_for_cpu(module: torch.nn.Module) -> None:
    """Undo bitsandbytes' CPU inference repack, restoring the layout that has a backward."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    weight = module.weight
    weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(
        weight.data, weight.quant_state
    )
    module.quant_state = weight.quant_state


def packed_layout_fits(module: torch.nn.Module, block_n: int = 32) -> bool:
    """Whether bitsandbytes' CPU inference layout can hold this ``Linear4bit``'s weight.

    The repack tiles the output dimension in blocks of ``block_n`` and stores one absmax per
    quantization block of each input row; other shapes crash inside bitsandbytes
    (``shape '[96, 0]' is invalid``) instead of falling back.
    """
    quant_state = module.weight.quant_state
    if quant_state is None or len(quant_state.shape) != 2:
        return False
    out_features, in_features = quant_state.shape
    return out_features % block_n == 0 and in_features % quant_state.blocksize == 0


def keep_4bit_trainable(model: torch.nn.Module) -> int:
    """Keep every 4-bit layer of ``model`` in the layout whose matmul has a backward.

    bitsandbytes 0.49/0.50, on CPUs with AVX512-BF16, repacks a ``Linear4bit`` weight in
    place into an inference-only layout the first time the module runs in eval mode on an
    input without grad (a reference pass, a precompute pass, any eval). From then on its
    matmul goes through ``gemv_4bit``, which has no autograd kernel: the base path silently
    drops out of the gradient, ``result += bias`` fails when the output needs grad, and
    shapes that are not multiples of its block crash. A module's
    ``support_avx512bf16_for_cpu`` attribute gates the repack; this turns it off and undoes a
    repack that already happened. On other CPUs and on GPUs it changes nothing.

    Returns:
        How many 4-bit layers were checked.
    """
    modules = _linear4bit_modules(model)
    for module in modules:
        if _is_packed_for_cpu(module):
            _unpack_for_cpu(module)
        module.support_avx512bf16_for_cpu = False
    return len(modules)


def allow_cpu_inference_layout(model: torch.nn.Module) -> int:
    """Let bitsandbytes use its fast CPU layout, for an inference-only process.

    Only where the layout fits the weight's shape (see :func:`packed_layout_fits`) and the
    CPU has AVX512-BF16. The packed kernel computes in bfloat16, so outputs differ slightly
    from the exact layout; never call this on a model that trains or shares weights with one.

    Returns:
        How many 4-bit layers may repack.
    """
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        return 0
    allowed = 0
    for module in _linear4bit_modules(model):
        fits = packed_layout_fits(module)
        module.support_avx512bf16_for_cpu = fits
        allowed += fits
    return allowed


def assert_4bit_trainable(model: torch.nn.Module) -> None:
    """Raise if a 4-bit layer is in (or may enter) the inference-only CPU layout.

    The training loop calls this after passes that run the policy in eval mode without
    grad, so that a future bitsandbytes (or a code path that forgot
    :func:`keep_4bit_trainable`) cannot silently cut the base weights out of the gradient.
    """
    for module in _linear4bit_modules(model):
        if _is_packed_for_cpu(module) or getattr(module, "support_avx512bf16_for_cpu", False):
            raise RuntimeError(
                "a 4-bit layer of the training model is in bitsandbytes' inference-only CPU "
                "layout, which has no backward; call mmdpo.models.quantization."
                "keep_4bit_trainable(model) after loading it"
            )
