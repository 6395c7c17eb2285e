"""A model's float32 linear layers on CPU with their weights packed once for MKL's GEMM.

``torch.nn.functional.linear`` on a CPU calls MKL's ``sgemm``, which reorders the weight
into its kernel's panel layout on every call. A decode step multiplies a few dozen to a few
hundred rows by every weight of the model, so that reordering is a large part of the step:
packing each weight once (``cblas_sgemm_pack``, PyTorch's ``mkl::_mkl_reorder_linear_weight``,
what ``torch.compile`` uses for frozen float32 linears) and multiplying with
``cblas_sgemm_compute`` (``mkl::_mkl_linear``) made the linear layers of SmolLM2-135M
10-20 % faster at 16-128 rows on this project's test machine, with bitwise the same results
there (``docs/sampling.md``, "Packed weights, and the spare buffers that were never kept").

``PackedLinears(model)`` packs the weights of the model's plain ``torch.nn.Linear`` layers
(float32, on CPU; subclasses such as bitsandbytes' and PEFT's wrappers are left alone, a
plain ``nn.Linear`` inside them is packed) and, while ``active``, their forward uses the
packed weight for inputs of ``MIN_ROWS`` rows or more. Fewer rows, a gradient, or any other
dtype take ``torch.nn.functional.linear`` as before (MKL takes another kernel for a handful
of rows, and its results there differ from the packed kernel's in the last bits). The packed
copies cost as much memory as the weights; models whose linear weights exceed
``MAX_BYTES`` are not packed. Weights must not change while packed (the sampler runs under
``torch.inference_mode``).

The packed copies of the latest model stay for the next run (one model's at a time; a weight
that is another tensor, or changed since by its version counter or its storage, is packed
again): taking hundreds of megabytes of fresh memory for every run costs seconds on some
virtual machines, as the cache's buffers did (``mmdpo.sampling.spare``).
``drop_packed_weights`` (and ``mmdpo.sampling.drop_spare_buffers``) frees them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

MIN_ROWS = 16
MAX_BYTES = 4 << 30
_PACK_ROWS = 128  # the row count MKL's packing is told to expect (the layout is the same)

_lock = threading.Lock()
# the latest PackedLinears' packed weights, by ``_key``, with the weight they were packed from
_kept: dict[tuple[Any, ...], tuple[weakref.ref, torch.Tensor]] = {}


def drop_packed_weights() -> None:
    """Free the packed weights kept from the latest run."""
    with _lock:
        _kept.clear()


@cache
def packing_works() -> bool:
    """Whether this PyTorch has MKL's packed GEMM and it agrees with ``F.linear``."""
    if not torch.backends.mkl.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(48, 64, generator=generator)
        bias = torch.randn(48, generator=generator)
        x = torch.randn(MIN_ROWS + 3, 64, generator=generator)
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, _PACK_ROWS)
        out = torch.ops.mkl._mkl_linear(x, packed, weight, bias, x.shape[0])
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.allclose(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5))


class PackedLinears:
    """The packed weights of a model's plain float32 CPU linear layers.

    Attributes:
        active: whether the layers' forward uses the packed weights now (see ``using``).
        modules: the layers whose forward this object replaced (empty: nothing packed).
    """

    def __init__(self, model: torch.nn.Module, max_bytes: int = MAX_BYTES) -> None:
        self.active = False
        self.modules: list[torch.nn.Linear] = []
        candidates = [m for m in model.modules() if _packable(m)]
        weights = {id(m.weight): m.weight for m in candidates}  # a tied weight once
        total = sum(w.numel() * w.element_size() for w in weights.values())
        if not candidates or total > max_bytes or not packing_works():
            return
        with _lock:
            kept = dict(_kept)
            _kept.clear()  # what this model does not use again is freed now
        packs: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for name, weight in weights.items():
                owner, packed = kept.get(_key(weight), (None, None))
                if owner is None or owner() is not weight:
                    packed = _pack(weight)
                packs[name] = packed
        del kept
        for module in candidates:
            module.forward = _PackedForward(self, module, packs[id(module.weight)])
            self.modules.append(module)
        with _lock:
            for name, weight in weights.items():
                _kept[_key(weight)] = (weakref.ref(weight), packs[name])

    @contextmanager
    def using(self) -> Iterator[None]:
        """The packed weights serve the layers' forward inside this block."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def release(self) -> None:
        """Give the layers their own forward back (the packed copies stay kept for the next
        run; ``drop_packed_weights`` frees them)."""
        for module in self.modules:
            if isinstance(module.__dict__.get("forward"), _PackedForward):
                del module.forward
        self.modules = []


class _PackedForward:
    """A linear layer's forward: packed weight when its owner is active and the input has
    ``MIN_ROWS`` float32 rows or more without a gradient, ``F.linear`` otherwise."""

    def __init__(self, owner: PackedLinears, module: torch.nn.Linear, packed: torch.Tensor):
        self.owner, self.module, self.packed = owner, module, packed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        module = self.module
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        if (
            not self.owner.active
            or rows < MIN_ROWS
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or (torch.is_grad_enabled() and (x.requires_grad or module.weight.requires_grad))
        ):
            return F.linear(x, module.weight, module.bias)
        return torch.ops.mkl._mkl_linear(x, self.packed, module.weight, module.bias, rows)


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkl._mkl_reorder_linear_weight(weight.detach().contiguous(), _PACK_ROWS)


def _key(weight: torch.Tensor) -> tuple[Any, ...]:
    """What a packed copy of ``weight`` stands for: its storage, shape, strides and version
    (in-place changes, an optimizer's step among them, raise the version)."""
    return (weight.data_ptr(), tuple(weight.shape), weight.stride(), weight._version)


def _packable(module: Any) -> bool:
    """A plain ``nn.Linear`` with float32 CPU weights whose forward nobody else replaced
    (accelerate's hooks, for one, set ``forward`` on the module)."""
    if type(module) is not torch.nn.Linear or "forward" in module.__dict__:
        return False
    weight, bias = module.weight, module.bias
    return (
        weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and weight.layout == torch.strided
        and (bias is None or bias.dtype == torch.float32)
    )
