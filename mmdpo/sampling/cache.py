"""A key/value cache of fixed row slots for decoding many samples at once.

transformers' ``DynamicCache`` concatenates every new token onto every layer's keys and values
(a copy of the whole cache per step), and its rows can only be selected, not replaced. Here each
layer's keys and values live in preallocated buffers, shape (slots, heads, capacity, head_dim);
a decode step writes one column in place, and attention reads the window of columns
``[start, end)``. Rows are laid out left-padded: every row's latest token is in column
``end - 1``, and ``mask`` (slots, capacity) says which columns of a row are real tokens.

A finished row's slot is reused by a new prompt's prefilled keys (right-aligned at ``end``),
so the batch stays full while prompts wait; ``keep`` drops dead slots when none wait (moving
the last live rows into the holes, so only moved rows are copied).
Columns on the left that no row uses any more leave the window (``trim``).

The buffers are not zeroed (only the columns a row can see before any step wrote them):
zeroing touches every page at once, also those of rows that end early. They come from, and
go back to, ``mmdpo.sampling.spare``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from mmdpo.sampling.spare import give_back, new_buffer


def unsupported_layers(config: Any) -> list[str]:
    """Cache layer kinds of a model (its config) that slots cannot hold: sliding-window and
    linear-attention layers. Empty for full-attention decoders."""
    layers = DynamicCache(config=config).layers
    return sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})


class SlotLayer(DynamicLayer):
    """One decoder layer's keys and values in the slot buffers of its ``SlotCache``."""

    def __init__(self, owner: SlotCache, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.owner = owner
        self.key_buffer, self.value_buffer = keys, values
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start, end = self.owner.start, self.owner.end
        width = key_states.shape[-2]
        self.key_buffer[:, :, end : end + width] = key_states
        self.value_buffer[:, :, end : end + width] = value_states
        self.keys = self.key_buffer[:, :, start : end + width]
        self.values = self.value_buffer[:, :, start : end + width]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.owner.end - self.owner.start

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


class SlotCache(DynamicCache):
    """Keys and values of ``slots`` rows in every layer, written in place.

    Attributes:
        mask: which cached columns of each row are real tokens. Shape: (slots, capacity).
        start, end: the window of columns attention reads; the next token goes to ``end``.
    """

    def __init__(self, like: DynamicCache, slots: int, width: int, capacity: int) -> None:
        """Empty buffers shaped like ``like``'s layers (a prefill cache), ``capacity`` columns;
        the first rows placed will be ``width`` columns wide."""
        layers = []
        for layer in like.layers:
            if type(layer) is not DynamicLayer:
                kind = type(layer).__name__
                raise NotImplementedError(
                    f"batched sampling supports full-attention caches only, not {kind}"
                )
            batch, heads, _, dim = layer.keys.shape
            keys = _columns_after(new_buffer(layer.keys, (slots, heads, capacity, dim)), width)
            values = new_buffer(layer.values, (slots, heads, capacity, layer.values.shape[-1]))
            layers.append(SlotLayer(self, keys, _columns_after(values, width)))
        Cache.__init__(self, layers=layers)  # DynamicCache's own init builds DynamicLayers
        self.mask = torch.zeros(slots, capacity, dtype=torch.bool, device=layers[0].device)
        self.start = self.end = width

    @property
    def slots(self) -> int:
        return self.mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    def place(
        self,
        slots: list[int],
        prefill: DynamicCache,
        rows: list[int],
        mask: torch.Tensor,
        live: Sequence[int] = (),
    ) -> None:
        """Write prefilled rows into ``slots`` (row ``rows[i]`` of ``prefill`` into
        ``slots[i]``), right-aligned so that their last prompt token sits in column ``end - 1``.

        Args:
            prefill: the cache of a prefill forward, keys shaped (P, heads, T, head_dim).
            mask: the prefill's attention mask. Shape: (P, T).
            live: the other slots whose rows go on (unused here; see ``SharedPromptCache``).
        """
        width = mask.shape[1]
        if self.end < width:  # a prompt longer than every column so far
            self._resize(left=width - (self.end - self.start), right=0)
        self.start = min(self.start, self.end - width)
        slot_index = torch.tensor(slots, device=self.mask.device)
        row_index = torch.tensor(rows, device=self.mask.device)
        columns = slice(self.end - width, self.end)
        for layer, source in zip(self.layers, prefill.layers, strict=True):
            layer.key_buffer[slot_index, :, columns] = source.keys[row_index]
            layer.value_buffer[slot_index, :, columns] = source.values[row_index]
        self.mask[slot_index] = False
        self.mask[slot_index, columns] = mask[row_index].to(torch.bool)

    def open_column(self, grow: int) -> torch.Tensor:
        """Make room for one more token per row; the attention mask of the next step.

        Returns:
            The mask over the window plus the new column (every row attends to its own new
            token). Shape: (slots, end - start + 1).
        """
        if self.end == self.capacity:
            self._resize(left=0, right=grow)
        self.mask[:, self.end] = True
        return self.mask[:, self.start : self.end + 1]

    def advance(self, tokens: int = 1) -> None:
        """The step's keys and values are written: the window ends ``tokens`` further on."""
        self.end += tokens

    def keep(self, live: list[int]) -> list[int]:
        """Only the ``live`` slots stay: live rows past the first ``len(live)`` slots move into
        the dead slots before them (a copy of the moved rows only), and the buffers are cut to
        ``len(live)`` rows.

        Returns:
            ``order``: new slot i holds what old slot ``order[i]`` held.
        """
        count, alive = len(live), set(live)
        holes = [slot for slot in range(count) if slot not in alive]
        movers = [slot for slot in live if slot >= count]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        if holes:
            to = torch.tensor(holes, device=self.mask.device)
            source = torch.tensor(movers, device=self.mask.device)
            window = slice(self.start, self.end)
            for layer in self.layers:
                layer.key_buffer[to, :, window] = layer.key_buffer[source, :, window]
                layer.value_buffer[to, :, window] = layer.value_buffer[source, :, window]
            self.mask[to] = self.mask[source]
        for layer in self.layers:
            layer.key_buffer = layer.key_buffer[:count]
            layer.value_buffer = layer.value_buffer[:count]
        self.mask = self.mask[:count]
        return order

    def trim(self, live: list[int]) -> None:
        """Drop columns on the left that none of the ``live`` slots uses."""
        rows = self.mask if len(live) == self.slots else self.mask[live]
        used = rows[:, self.start : self.end].any(dim=0)
        if not bool(used.any()):
            return
        first = int(used.to(torch.uint8).argmax())
        if first:
            self.mask[:, self.start : self.start + first] = False
            self.start += first

    def release(self) -> None:
        """The cache is done: its buffers go to the spare buffers of ``mmdpo.sampling.spare``
        (the next cache's); it must not be used again."""
        give_back(buffer for layer in self.layers
                  for buffer in (layer.key_buffer, layer.value_buffer))  # fmt: skip
        for layer in self.layers:
            layer.key_buffer = layer.value_buffer = layer.keys = layer.values = None

    def _resize(self, left: int, right: int) -> None:
        """New buffers with ``left`` more columns before the window and ``right`` more after
        it (columns left of ``start`` are dropped); the window is copied over."""
        used = self.end - self.start
        capacity = left + used + (self.capacity - self.end) + right
        new_start = left
        for layer in self.layers:
            for name in ("key_buffer", "value_buffer"):
                old = getattr(layer, name)
                new = new_buffer(old, (old.shape[0], old.shape[1], capacity, old.shape[3]))
                new = _columns_after(new, new_start)
                new[:, :, new_start : new_start + used] = old[:, :, self.start : self.end]
                setattr(layer, name, new)
        mask = self.mask.new_zeros(self.slots, capacity)
        mask[:, new_start : new_start + used] = self.mask[:, self.start : self.end]
        self.mask = mask
        self.start, self.end = new_start, new_start + used


def _columns_after(buffer: torch.Tensor, width: int) -> torch.Tensor:
    """``buffer`` (slots, heads, capacity, head_dim), uninitialised (new or a spare buffer's
    old values), with its first ``width`` columns zeroed.

    The columns from ``width`` on are written for every slot (``SlotLayer.update``) before
    they enter the window, so only the columns that can be read before a write (a slot's
    columns left of its prompt, masked, and the columns of slots never placed) need values:
    finite ones, since a masked score is ``q . k - inf`` and a masked value is multiplied by
    0. Zeroing the whole buffer instead touches every page of it at once, for rows that may
    end long before their columns come.
    """
    buffer[:, :, :width] = 0
    return buffer
