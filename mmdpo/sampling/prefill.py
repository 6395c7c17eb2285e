"""The prefill of a batch of prompts: their keys and values and the logits of their last token.

Prompts rendered with one chat template often begin with the same tokens (a system prompt, a
few-shot preamble). When the text-only prompts of a batch share at least ``MIN_SHARED``
leading tokens, that prefix goes through the model once, its keys and values are copied to
every row, and only the rest of each prompt is computed. The rows are then laid out as
``[prefix | padding | rest]`` instead of ``[padding | prompt]``: the prefix sits in the same
columns for every row, and the mask and the position ids (which count real tokens only) make
the padding in the middle invisible, as on the left.

On CPU, a text-only batch goes through the model in groups of rows of at most
``PREFILL_TOKENS`` tokens, and their caches are joined. The intermediate activations of one
forward over every row (32 prompts of 52 tokens: tensors of 10 MB, about 1.3 GB allocated and
freed per prefill of SmolLM2-135M) come back from the allocator as fresh pages, and fresh
pages can be slow: on the VM this was measured on, such a prefill took 1.2 s to 9 s from one
run to the next; groups of 8 rows took 1.3-1.8 s (docs/sampling.md, "Prefill in groups of
rows"). Each row sees the same padded width as in one forward, so only the matrix products'
row count changes. On a GPU the caching allocator keeps freed memory, and a wider forward
uses the device better, so a batch stays one forward there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from mmdpo.sampling.inputs import ModelCall, forward, prefill_positions

MIN_SHARED = 8  # shorter common prefixes are not worth a second forward
PREFILL_TOKENS = 512  # new tokens (rows x columns) per forward of a text-only prefill on CPU


@dataclass
class Prefilled:
    """A prefill's outcome.

    Attributes:
        cache: keys and values of every row. Shape per layer: (P, heads, T, head_dim).
        mask: which columns of each row are real tokens. Shape: (P, T).
        next_positions: position of each row's next token. Shape: (P,).
        logits: next-token logits of each row (float32). Shape: (P, V).
        forwards: model calls made (2 with a shared prefix, else 1).
        shared: prefix tokens computed once for all rows (0: none).
    """

    cache: DynamicCache
    mask: torch.Tensor
    next_positions: torch.Tensor
    logits: torch.Tensor
    forwards: int
    shared: int


def prefill(model: Any, call: ModelCall, config: Any, inputs: dict[str, torch.Tensor]) -> Prefilled:
    """Prefill left-padded ``inputs`` (a processor's or tokenizer's output), sharing the
    common prefix of text-only prompts and computing text-only rows on CPU in groups of at
    most ``PREFILL_TOKENS`` tokens."""
    text_only = set(inputs) == {"input_ids", "attention_mask"}
    shared = shared_prefix(inputs) if text_only else 0
    if shared < MIN_SHARED:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        position_ids, next_positions = prefill_positions(call, inputs)
        if not text_only:  # images: the processor's tensors are not split by row here
            cache = DynamicCache(config=config)
            logits = forward(model, call, cache, **inputs, position_ids=position_ids)
            return Prefilled(cache, mask, next_positions, logits, 1, 0)
        cache, logits, forwards = _in_groups(model, call, config, None, ids, mask, position_ids)
        return Prefilled(cache, mask, next_positions, logits, forwards, 0)
    ids, mask = prefix_first(inputs["input_ids"], inputs["attention_mask"], shared)
    head = {"input_ids": ids[:1, :shared], "attention_mask": mask[:1, :shared]}
    head_cache = DynamicCache(config=config)
    forward(model, call, head_cache, **head, position_ids=prefill_positions(call, head)[0])
    position_ids, next_positions = prefill_positions(
        call, {"input_ids": ids, "attention_mask": mask}
    )
    cache, logits, forwards = _in_groups(
        model, call, config, head_cache, ids[:, shared:], mask, position_ids[..., shared:]
    )
    return Prefilled(cache, mask, next_positions, logits, 1 + forwards, shared)


def _in_groups(
    model: Any,
    call: ModelCall,
    config: Any,
    head: DynamicCache | None,
    ids: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> tuple[DynamicCache, torch.Tensor, int]:
    """Rows ``ids`` (after the ``head`` cache's columns, if any) through the model, on CPU in
    groups of at most ``PREFILL_TOKENS`` tokens; (the caches joined, the last logits, forwards).

    Args:
        head: keys and values of one row, the prefix every row continues; None: none.
        mask: every column's mask, the head's included. Shape: (P, head + T).
        position_ids: positions of the ``ids`` columns. Shape: (P, T) or (R, P, T).
    """
    count, width = ids.shape
    step = max(1, PREFILL_TOKENS // width) if ids.device.type == "cpu" else count
    caches, logits = [], []
    for start in range(0, count, step):
        rows = slice(start, min(start + step, count))
        cache = DynamicCache(config=config)
        if head is not None:
            for index, layer in enumerate(head.layers):
                repeat = (rows.stop - rows.start, -1, -1, -1)
                cache.update(layer.keys.expand(repeat), layer.values.expand(repeat), index)
        logits.append(
            forward(
                model,
                call,
                cache,
                input_ids=ids[rows],
                attention_mask=mask[rows],
                position_ids=position_ids[..., rows, :],
            )
        )
        caches.append(cache)
    if len(caches) == 1:
        return caches[0], logits[0], 1
    return _joined(config, caches), torch.cat(logits), len(caches)


def _joined(config: Any, caches: list[DynamicCache]) -> DynamicCache:
    """One cache holding the rows of ``caches`` in order (each layer's keys concatenated once;
    ``DynamicLayer.update`` would copy them a second time)."""
    joined = DynamicCache(config=config)
    for index, layer in enumerate(joined.layers):
        keys = torch.cat([cache.layers[index].keys for cache in caches])
        values = torch.cat([cache.layers[index].values for cache in caches])
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        for cache in caches:  # each part's memory goes back as soon as it is copied
            cache.layers[index].keys = cache.layers[index].values = None
    return joined


def shared_prefix(inputs: dict[str, torch.Tensor]) -> int:
    """How many leading real tokens every row shares, keeping one token of each row for the
    second forward (whose last logits are the rows' next-token logits)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if ids.shape[0] < 2:
        return 0
    lengths = mask.sum(dim=1)
    shortest = int(lengths.min())
    starts = ids.shape[1] - lengths  # left padding
    rows = torch.stack(
        [ids[row, int(start) : int(start) + shortest] for row, start in enumerate(starts)]
    )
    same = (rows == rows[:1]).all(dim=0).long()
    return min(int(same.cumprod(0).sum()), shortest - 1)


def prefix_first(
    ids: torch.Tensor, mask: torch.Tensor, shared: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows ``[padding | prefix | rest]`` laid out as ``[prefix | padding | rest]``."""
    ids, mask = ids.clone(), mask.clone()
    width = ids.shape[1]
    for row in range(ids.shape[0]):
        pad = width - int(mask[row].sum())
        if pad:
            prefix = ids[row, pad : pad + shared].clone()
            ids[row, shared : shared + pad] = ids[row, :pad].clone()  # pad tokens
            ids[row, :shared] = prefix
            mask[row, :shared] = 1
            mask[row, shared : shared + pad] = 0
    return ids, mask
