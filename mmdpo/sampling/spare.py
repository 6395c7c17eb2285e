"""Key/value buffers of finished sampling runs, kept for the next run of this process.

A sampling run's cache is large (``slots x columns x layers x 2 x kv_heads x head_dim``:
about 0.8 GB in float32 for SmolLM2-135M at 128 rows of 128 new tokens), and memory freshly
taken from the operating system costs a page fault per 4 KiB page on first touch. On some
virtual machines (this project's test VM among them) that can be slow: there a process's
first sampling run once faulted in 2.27 GB (5.7 s of system time) and took 22.9 s, its later
runs, on these kept buffers (and kept packed weights), 0.16 GB and 17.4-17.8 s; how slow
varies with the VM's state (``docs/sampling.md``, "Packed weights"). So a finished cache
hands its CPU buffers back here, and the next cache takes them instead of new memory, as
CUDA's caching allocator does on a GPU (buffers on other devices are not kept).

At most the bytes of the latest cache given back are held; ``drop_spare_buffers`` frees
them (the trainer, for one, has better use for the memory). Buffers come back with
whatever values they held: ``SlotCache`` writes every column before attention reads it,
or zeroes it (``mmdpo.sampling.cache``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

import torch

from mmdpo.sampling.packed import drop_packed_weights

_lock = threading.Lock()
_spare: list[torch.Tensor] = []  # flat CPU tensors


def new_buffer(like: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device: on CPU a view of
    the smallest spare flat buffer that holds it (else of a new one). A spare buffer from
    ``torch.inference_mode`` (the sampler's) serves only inside it: outside, PyTorch refuses
    in-place writes to such a tensor."""
    numel = math.prod(shape)
    if like.device.type != "cpu":
        return like.new_empty(tuple(shape))
    inference = torch.is_inference_mode_enabled()
    with _lock:
        fits = [i for i, flat in enumerate(_spare)
                if flat.dtype == like.dtype and flat.numel() >= numel
                and (inference or not flat.is_inference())]  # fmt: skip
        flat = _spare.pop(min(fits, key=lambda i: _spare[i].numel())) if fits else None
    if flat is None:
        flat = like.new_empty(numel)
    return flat[:numel].view(tuple(shape))


def give_back(buffers: Iterable[torch.Tensor]) -> None:
    """Keep the CPU memory under ``buffers`` (from ``new_buffer``: views of a flat buffer)
    for later caches; their owner must not use them again. The spare then holds at most
    these buffers' bytes (the largest buffers first).

    The flat buffer is found through the views' storage, not ``Tensor._base``: views made
    under ``torch.inference_mode`` (the sampler's) do not record their base."""
    flats: dict[int, torch.Tensor] = {}
    for buffer in buffers:
        if buffer is None or buffer.device.type != "cpu":
            continue
        storage = buffer.untyped_storage()
        if storage.data_ptr() not in flats:
            size = (storage.nbytes() // buffer.element_size(),)
            flats[storage.data_ptr()] = buffer.new_empty(0).set_(storage, 0, size)
    if not flats:
        return
    limit = sum(_nbytes(flat) for flat in flats.values())
    with _lock:
        known = {flat.data_ptr() for flat in _spare}
        pool = sorted(
            [*_spare, *(flat for key, flat in flats.items() if key not in known)],
            key=_nbytes,
            reverse=True,
        )
        _spare.clear()
        held = 0
        for flat in pool:
            if held + _nbytes(flat) <= limit:
                _spare.append(flat)
                held += _nbytes(flat)


def drop_spare_buffers() -> None:
    """Free every spare buffer (and the packed weights kept by ``mmdpo.sampling.packed``)."""
    with _lock:
        _spare.clear()
    drop_packed_weights()


def spare_bytes() -> int:
    """Bytes the spare buffers hold."""
    with _lock:
        return sum(_nbytes(flat) for flat in _spare)


def _nbytes(flat: torch.Tensor) -> int:
    return flat.numel() * flat.element_size()
