"""Attention over a layout's blocks with no (L, L) mask: the ``mmdpo_layout`` implementation.

A dense 4D mask makes every row cost L x L in attention whatever it masks, and a packed row
of several pairs costs the square of its total length. This implementation instead runs, per
block (``mmdpo.layouts``), SDPA on ``prompt | chosen`` with ``is_causal`` (the fast causal
kernel) and SDPA of the rejected queries on the prompt's and their own keys (a small
(R, P + R) mask, lower-right causal), so a block costs what its two rows would have cost,
without the prompt twice, and blocks packed in one row never meet.

The layout travels as the attention mask itself: an int64 tensor (rows, 1, 2, L) holding each
token's block and branch (``plan_mask``). transformers hands a 4D mask to the layers as-is, so
the plan is an ordinary input of every decoder layer, also when gradient checkpointing reruns
a layer in the backward. Any other mask (the two-row forward, generation) goes to transformers'
own SDPA unchanged: a model can keep ``mmdpo_layout`` for all its forwards.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmdpo.layouts import CHOSEN, PROMPT, REJECTED, PairLayout

LAYOUT_ATTENTION = "mmdpo_layout"


def plan_mask(layout: PairLayout) -> torch.Tensor:
    """The layout as a 4D "mask" for ``mmdpo_layout``. Shape: (R, 1, 2, L), int64"""
    return torch.stack([layout.segments, layout.branches], dim=1)[:, None]


def is_plan(attention_mask: Any) -> bool:
    return (
        isinstance(attention_mask, torch.Tensor)
        and attention_mask.dtype == torch.long
        and attention_mask.dim() == 4
        and attention_mask.shape[1:3] == (1, 2)
    )


def _spans(segments: list[int], branches: list[int]) -> list[tuple[int, int, int, int]]:
    """Per block of one row: (start, end of prompt, end of chosen, end) in row positions."""
    spans = []
    start = 0
    width = len(segments)
    while start < width and segments[start] >= 0:
        end = start
        while end < width and segments[end] == segments[start]:
            end += 1
        block = branches[start:end]
        prompt_end = start + block.count(PROMPT)
        chosen_end = prompt_end + block.count(CHOSEN)
        assert block.count(REJECTED) == end - chosen_end
        spans.append((start, prompt_end, chosen_end, end))
        start = end
    return spans


def _attend(query, key, value, *, dropout, scaling, mask=None):
    causal = mask is None
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=causal
    )


def _block_attention(query, key, value, span, dropout, scaling):
    """One block's attention output. query (1, H, n, D), key/value (1, H, n, D) of the row."""
    start, prompt_end, chosen_end, end = span
    if chosen_end == prompt_end or end == chosen_end:  # one sequence: prompt | response
        sl = slice(start, end)
        return _attend(
            query[:, :, sl], key[:, :, sl], value[:, :, sl], dropout=dropout, scaling=scaling
        )
    head = slice(start, chosen_end)
    out_head = _attend(
        query[:, :, head], key[:, :, head], value[:, :, head], dropout=dropout, scaling=scaling
    )
    prompt, rejected = slice(start, prompt_end), slice(chosen_end, end)
    keys = torch.cat([key[:, :, prompt], key[:, :, rejected]], dim=2)
    values = torch.cat([value[:, :, prompt], value[:, :, rejected]], dim=2)
    n_prompt, n_rejected = prompt_end - start, end - chosen_end
    # rejected query i sees the whole prompt and rejected keys 0..i (lower-right causal)
    rows = torch.arange(n_rejected, device=query.device)[:, None]
    cols = torch.arange(n_prompt + n_rejected, device=query.device)[None, :]
    out_rejected = _attend(
        query[:, :, rejected], keys, values,
        dropout=dropout, scaling=scaling, mask=cols <= rows + n_prompt,
    )  # fmt: skip
    return torch.cat([out_head, out_rejected], dim=2)


def layout_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: block-wise for a plan mask, SDPA for anything else.

    query (N, H, L, D), key and value (N, H_kv, L, D) -> output (N, L, H, D).
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if not is_plan(attention_mask):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("sliding_window") is not None:
        raise ValueError("layouts do not support sliding-window attention layers")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    rows = []
    for row, (segments, branches) in enumerate(attention_mask[:, 0].tolist()):
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        parts = [
            _block_attention(q, k, v, span, dropout, scaling) for span in _spans(segments, branches)
        ]
        filled = sum(part.shape[2] for part in parts)
        if filled < query.shape[2]:  # padding: zeros (never read by a target)
            parts.append(q.new_zeros((1, q.shape[1], query.shape[2] - filled, v.shape[3])))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def flex_block_mask(layout: PairLayout) -> Any:
    """The layout as a flex-attention ``BlockMask`` (for models loaded with
    ``attn_implementation="flex_attention"``): tiles that no query of a tile may see, across
    blocks or between the two responses, are skipped by the kernel, not computed and masked.
    torch 2.14 runs flex attention's backward only on GPU; on CPU it serves no-grad passes."""
    from torch.nn.attention.flex_attention import create_block_mask

    segments, columns, branches = layout.segments, layout.columns, layout.branches

    def visible(batch, head, query, key):
        same_block = (segments[batch, query] == segments[batch, key]) & (
            segments[batch, query] >= 0
        )
        not_later = columns[batch, key] <= columns[batch, query]
        key_branch = branches[batch, key]
        same_branch = (key_branch == PROMPT) | (key_branch == branches[batch, query])
        return (same_block & not_later & same_branch) | (query == key)

    rows, width = segments.shape
    return create_block_mask(visible, rows, None, width, width, device=segments.device)


def register() -> None:
    """Make ``mmdpo_layout`` known to transformers (attention and mask functions); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(LAYOUT_ATTENTION, layout_attention_forward)
    AttentionMaskInterface.register(LAYOUT_ATTENTION, sdpa_mask)


def text_config(model: Any) -> Any:
    """The config that the language model's attention layers read."""
    config = model.config
    return getattr(config, "text_config", None) or config


def use_layout_attention(model: Any) -> str | None:
    """Switch the language model of ``model`` (unwrapped) to ``mmdpo_layout``.

    Only from SDPA (which it falls back to for ordinary masks); returns the implementation
    before, or None when it stays as it was (eager, flex, flash: see ``layout_forward``).
    """
    register()
    config = text_config(model)
    before = config._attn_implementation
    if before not in ("sdpa", LAYOUT_ATTENTION):
        return None
    config._attn_implementation_internal = LAYOUT_ATTENTION
    return before
