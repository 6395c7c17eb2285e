"""The prefill of a batch of prompts: their keys and values and the logits of their last token.

Prompts rendered with one chat template often begin with the same tokens (a system prompt, a
few-shot preamble). When the text-only prompts of a batch share at least ``MIN_SHARED``
leading tokens, that prefix goes through the model once, its keys and values are copied to
every row, and only the rest of each prompt is computed. The rows are then laid out as
``[prefix | padding | rest]`` instead of ``[padding | prompt]``: the prefix sits in the same
columns for every row, and the mask and the position ids (which count real tokens only) make
the padding in the middle invisible, as on the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from mmdpo.sampling.inputs import ModelCall, forward, prefill_positions

MIN_SHARED = 8  # shorter common prefixes are not worth a second forward


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
    common prefix of text-only prompts."""
    shared = shared_prefix(inputs) if set(inputs) == {"input_ids", "attention_mask"} else 0
    if shared < MIN_SHARED:
        position_ids, next_positions = prefill_positions(call, inputs)
        cache = DynamicCache(config=config)
        logits = forward(model, call, cache, **inputs, position_ids=position_ids)
        return Prefilled(cache, inputs["attention_mask"], next_positions, logits, 1, 0)
    ids, mask = prefix_first(inputs["input_ids"], inputs["attention_mask"], shared)
    head = {"input_ids": ids[:1, :shared], "attention_mask": mask[:1, :shared]}
    cache = DynamicCache(config=config)
    forward(model, call, cache, **head, position_ids=prefill_positions(call, head)[0])
    cache.batch_repeat_interleave(ids.shape[0])
    position_ids, next_positions = prefill_positions(
        call, {"input_ids": ids, "attention_mask": mask}
    )
    logits = forward(
        model,
        call,
        cache,
        input_ids=ids[:, shared:],
        attention_mask=mask,
        position_ids=position_ids[..., shared:],
    )
    return Prefilled(cache, mask, next_positions, logits, 2, shared)


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
