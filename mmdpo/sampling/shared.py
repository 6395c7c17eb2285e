"""Decoding the ``n`` samples of a prompt over one copy of the prompt's keys and values.

``SlotCache`` gives every row its own copy of its prompt's keys and values, so a decode step
with ``n`` samples per prompt reads each prompt ``n`` times; for long prompts (a system
prompt, an image's hundreds of tokens) that reading is most of a step's attention. Here the
prompts live once each in a prompt area, shape (prompt slots, heads, width, head_dim), and the
row slots hold the generated tokens only (``SlotCache``'s window, columns and ``keep``).

A decode step's attention for row r of prompt p is one softmax over
``[prompt p's columns | row r's generated columns]``, as with a copied prompt: the scores
against the prompt are one matmul per prompt slot for the queries of all its rows (laid out
in a grid of ``n`` lanes per prompt slot), the scores against the generated tokens one per
row; the output is the two probability-weighted sums added. The arithmetic is the same as
one attention over the concatenated keys up to float summation order (the tests compare
logits and token ids with the copied-prompt path).

The model's attention layers call this module's function while ``attending`` is active (it
sets the decoder's ``_attn_implementation`` to ``ATTENTION`` for the step and restores it);
prefill and everything outside a decode step use the model's own implementation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from mmdpo.sampling.cache import SlotCache

ATTENTION = "mmdpo_shared_prompt"

_active: SharedPromptCache | None = None


class SharedPromptCache(SlotCache):
    """Generated tokens in row slots (``SlotCache``), prompts once each in a prompt area.

    Attributes:
        n: lanes per prompt slot (samples per prompt).
        prompt_keys, prompt_values: per layer. Shape: (prompt slots, heads, width, head_dim).
        prompt_mask: which prompt columns are real tokens. Shape: (prompt slots, width).
        owner, lane: each row slot's prompt slot and its lane there. Shape: (slots,).
        bias: the step's additive attention mask over ``[prompt | generated]`` columns, 0 or
            -inf (set by ``open_column``). Shape: (slots, 1, 1, width + window + 1).
    """

    def __init__(self, like: DynamicCache, slots: int, n: int, capacity: int) -> None:
        super().__init__(like, slots, width=0, capacity=capacity)
        self.n = n
        self.prompt_keys = [layer.key_buffer.new_zeros(0, *_head_shape(layer.key_buffer))
                            for layer in self.layers]  # fmt: skip
        self.prompt_values = [layer.value_buffer.new_zeros(0, *_head_shape(layer.value_buffer))
                              for layer in self.layers]  # fmt: skip
        self.prompt_mask = self.mask.new_zeros(0, 0)
        self.owner = torch.zeros(slots, dtype=torch.long, device=self.mask.device)
        self.lane = torch.zeros_like(self.owner)
        self.bias: torch.Tensor | None = None
        self.attended = 0  # layers that ran ``attend`` since the last ``open_column``
        # the row slot each place of the grid (owner * n + lane) reads; None: all rows live
        # and in grid order
        self._gather: torch.Tensor | None = None
        self._grid = torch.zeros_like(self.owner)

    @property
    def prompt_slots(self) -> int:
        return self.prompt_mask.shape[0]

    def place(
        self,
        slots: list[int],
        prefill: DynamicCache,
        rows: list[int],
        mask: torch.Tensor,
        live: Sequence[int] = (),
    ) -> None:
        """Write each prefilled prompt once into a free prompt slot and give ``slots[i]`` the
        prompt of prefill row ``rows[i]``, in the next free lane; their generated columns
        start empty.

        Args:
            live: the slots whose rows go on (their prompt slots are not free).
        """
        device = self.mask.device
        live_index = torch.tensor(list(live), dtype=torch.long, device=device)
        used = {int(p) for p in self.owner[live_index].tolist()}
        prompts = list(dict.fromkeys(rows))  # prefill rows, first appearance order
        free = [p for p in range(self.prompt_slots) if p not in used]
        if len(free) < len(prompts):
            grow = max(len(prompts) - len(free), self.prompt_slots)
            self._resize_prompts(slots=self.prompt_slots + grow, width=self.prompt_mask.shape[1])
            free += list(range(self.prompt_slots - grow, self.prompt_slots))
        width = mask.shape[1]
        if width > self.prompt_mask.shape[1]:
            self._resize_prompts(slots=self.prompt_slots, width=width)
        target = dict(zip(prompts, free, strict=False))
        index = torch.tensor([target[row] for row in prompts], device=device)
        source = torch.tensor(prompts, device=device)
        columns = slice(self.prompt_mask.shape[1] - width, None)  # right-aligned
        for keys, values, layer in zip(
            self.prompt_keys, self.prompt_values, prefill.layers, strict=True
        ):
            keys[index, :, columns] = layer.keys[source]
            values[index, :, columns] = layer.values[source]
        self.prompt_mask[index] = False
        self.prompt_mask[index, columns] = mask[source].to(torch.bool)
        lanes: dict[int, int] = {}
        owners, lane_of = [], []
        for row in rows:
            owners.append(target[row])
            lane_of.append(lanes.get(row, 0))
            lanes[row] = lane_of[-1] + 1
        slot_index = torch.tensor(slots, device=device)
        self.owner[slot_index] = torch.tensor(owners, device=device)
        self.lane[slot_index] = torch.tensor(lane_of, device=device)
        self.mask[slot_index] = False
        alive = torch.zeros_like(self.mask[:, 0])
        alive[slot_index] = True
        alive[live_index] = True
        self._regrid(alive)

    def open_column(self, grow: int) -> torch.Tensor:
        window = super().open_column(grow)
        allowed = torch.cat([self.prompt_mask[self.owner], window], dim=-1)
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
        self.bias = bias.masked_fill_(~allowed, float("-inf"))[:, None, None, :]
        self.attended = 0
        return window

    def keep(self, live: list[int]) -> list[int]:
        """``SlotCache.keep``; the prompt area drops the prompts no kept row uses once they
        are a quarter of it or more."""
        order = super().keep(live)
        index = torch.tensor(order, device=self.mask.device)
        self.owner, self.lane = self.owner[index], self.lane[index]
        used = sorted({int(p) for p in self.owner.tolist()})
        if used and (self.prompt_slots - len(used)) * 4 >= self.prompt_slots:
            keep = torch.tensor(used, device=self.mask.device)
            self.prompt_keys = [keys[keep] for keys in self.prompt_keys]
            self.prompt_values = [values[keep] for values in self.prompt_values]
            self.prompt_mask = self.prompt_mask[keep]
            renumber = torch.zeros(max(used) + 1, dtype=torch.long, device=self.mask.device)
            renumber[keep] = torch.arange(len(used), device=self.mask.device)
            self.owner = renumber[self.owner]
        self._regrid(torch.ones_like(self.mask[:, 0]))
        return order

    def attend(self, layer_index: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """One decode step's attention of layer ``layer_index`` (its keys and values of the
        step already written).

        Args:
            query: shape (slots, query heads, 1, head_dim).

        Returns:
            Shape (slots, 1, query heads, head_dim), as transformers' attention functions.
        """
        self.attended += 1
        layer = self.layers[layer_index]
        prompt_keys, prompt_values = self.prompt_keys[layer_index], self.prompt_values[layer_index]
        slots, query_heads, _, dim = query.shape
        heads, width = prompt_keys.shape[1], prompt_keys.shape[2]
        group = query_heads // heads  # query heads per key/value head (transformers' order)
        q = query.reshape(slots, heads, group, dim)
        scores_prompt = self._from_grid(
            torch.matmul(self._to_grid(q), prompt_keys.transpose(-1, -2)), group
        )
        scores_own = torch.matmul(q, layer.keys.transpose(-1, -2))
        scores = torch.cat([scores_prompt, scores_own], dim=-1).float().mul_(scaling)
        probs = scores.add_(self.bias).softmax(dim=-1).to(query.dtype)
        on_prompt, on_own = probs.split([width, probs.shape[-1] - width], dim=-1)
        out = self._from_grid(torch.matmul(self._to_grid(on_prompt), prompt_values), group)
        out = out + torch.matmul(on_own, layer.values)
        return out.reshape(slots, 1, query_heads, dim)

    # ------------------------------------------------------------------------ the grid

    def _regrid(self, alive: torch.Tensor) -> None:
        """Places in the grid of the ``alive`` slots' rows. A dead slot (computed until its
        slot is reused or dropped) may share its place with a live row of a reused prompt
        slot: it is left out of the grid, and what it reads back is ignored. A place no live
        row has takes a copy of slot 0's row: its scores are never read back."""
        grid = self.owner * self.n + self.lane
        slots = grid.shape[0]
        in_order = self.prompt_slots * self.n == slots and bool(
            (grid == torch.arange(slots, device=grid.device)).all()
        )
        if in_order and bool(alive.all()):
            self._gather = None
        else:
            rows = alive.nonzero().squeeze(1)
            gather = torch.zeros(self.prompt_slots * self.n, dtype=torch.long, device=grid.device)
            gather[grid[rows]] = rows
            self._gather = gather
        self._grid = grid

    def _to_grid(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-row tensors (slots, heads, group, X) to (prompt slots, heads, n * group, X):
        each prompt slot's rows side by side."""
        _, heads, group, last = rows.shape
        if self._gather is not None:
            rows = rows.index_select(0, self._gather)
        rows = rows.view(self.prompt_slots, self.n, heads, group, last).transpose(1, 2)
        return rows.reshape(self.prompt_slots, heads, self.n * group, last)

    def _from_grid(self, grid: torch.Tensor, group: int) -> torch.Tensor:
        """The inverse of ``_to_grid``: (prompt slots, heads, n * group, X) to the rows."""
        heads, last = grid.shape[1], grid.shape[-1]
        grid = grid.view(self.prompt_slots, heads, self.n, group, last).transpose(1, 2)
        rows = grid.reshape(self.prompt_slots * self.n, heads, group, last)
        return rows if self._gather is None else rows.index_select(0, self._grid)

    def _resize_prompts(self, slots: int, width: int) -> None:
        """A prompt area of ``slots`` x ``width`` columns, old prompts kept right-aligned."""
        old_slots, old_width = self.prompt_mask.shape
        for buffers in (self.prompt_keys, self.prompt_values):
            for i, old in enumerate(buffers):
                new = old.new_zeros(slots, old.shape[1], width, old.shape[3])
                new[:old_slots, :, width - old_width :] = old
                buffers[i] = new
        mask = self.prompt_mask.new_zeros(slots, width)
        mask[:old_slots, width - old_width :] = self.prompt_mask
        self.prompt_mask = mask


def _head_shape(buffer: torch.Tensor) -> tuple[int, int, int]:
    return buffer.shape[1], 0, buffer.shape[3]


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None = None,
               **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' attention-function interface: a decode step of the active
    ``SharedPromptCache``, else (a query of several tokens) SDPA."""
    cache = _active
    if cache is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return cache.attend(module.layer_idx, query, scale), None


AttentionInterface.register(ATTENTION, _attention)


def decoder_configs(model: Any) -> list[Any]:
    """The config objects the decoder's self-attention layers read their
    ``_attn_implementation`` from (the text config of a VLM; a vision tower's stays out)."""
    configs: dict[int, Any] = {}
    for module in model.modules():
        if (
            getattr(module, "layer_idx", None) is not None
            and hasattr(module, "num_key_value_groups")
            and getattr(module, "is_causal", False)
            and hasattr(module, "config")
        ):
            configs[id(module.config)] = module.config
    return list(configs.values())


@contextmanager
def attending(configs: list[Any], cache: SharedPromptCache) -> Iterator[None]:
    """Route the decoder's attention through ``cache`` for one forward; raise if a layer
    did not come (its attention would have missed the prompt)."""
    global _active
    saved = [config._attn_implementation for config in configs]
    for config in configs:
        config._attn_implementation = ATTENTION
    _active = cache
    try:
        yield
    finally:
        _active = None
        for config, implementation in zip(configs, saved, strict=True):
            config._attn_implementation = implementation
    if cache.attended != len(cache.layers):
        raise RuntimeError(
            f"{cache.attended} of the model's {len(cache.layers)} attention layers went through "
            "mmdpo's shared-prompt attention; sample with share_prompt=False for this model"
        )
