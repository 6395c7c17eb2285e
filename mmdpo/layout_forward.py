"""Sequence log-probs of a batch run as a denser layout (``mmdpo.layouts``): the prompt and its
images computed once per pair, optionally several pairs per row without padding.

Same inputs and outputs as ``mmdpo.forward.concatenated_forward`` (a ``PreferenceBatch`` in,
``PairLogps`` out) and the same numbers, to fp32 rounding, for the policy, the adapter-off
reference and a precompute pass. What differs is the model call:

- the tokens of the 2B rows are placed in the layout's rows, each with the position id it has
  in its own row (Qwen2-VL / Qwen2.5-VL: its 3D rope position, computed by the model's own
  ``get_rope_index`` on the 2B rows and then gathered, so it is the same by construction);
- the layout's attention rule replaces the 2D padding mask, in the form the language model's
  attention implementation takes (``layout_attention_mask``; see docs/layouts.md);
- each block's prompt images are encoded once and their features merged at its image tokens;
- the output layer runs only at the positions that predict a response token (``logits_to_keep``
  as a boolean mask); the last prompt position predicts the first token of both responses.
"""

from __future__ import annotations

from typing import Any

import torch

from mmdpo.forward import (
    QWEN_VL_FAMILIES,
    PairLogps,
    concatenated_forward,
    encode_images,
    model_family,
    unwrap,
)
from mmdpo.layout_attention import LAYOUT_ATTENTION, flex_block_mask, plan_mask, text_config
from mmdpo.layouts import PairLayout, attention_mask_4d, build_layout
from mmdpo.logprobs import DEFAULT_CHUNK_SIZE, rows_target_logps
from mmdpo.types import PreferenceBatch


def _row_images(batch: PreferenceBatch) -> list[list[tuple[str, int]]]:
    """For each of the 2B rows, the images its prompt holds: ("prompt" | "rejected", index)."""
    n = batch.num_pairs
    prompt: list[list[int]] = [[] for _ in range(n)]
    rejected: list[list[int]] = [[] for _ in range(n)]
    if batch.image_pairs is not None:
        for index, pair in enumerate(batch.image_pairs.tolist()):
            prompt[pair].append(index)
    if batch.rejected_image_pairs is not None:
        for index, pair in enumerate(batch.rejected_image_pairs.tolist()):
            rejected[pair].append(index)
    rows = [[("prompt", i) for i in prompt[pair]] for pair in range(n)]
    for pair in range(n):  # a rejected row shows its own images when it has them
        own = [("rejected", i) for i in rejected[pair]]
        rows.append(own or [("prompt", i) for i in prompt[pair]])
    return rows


def _image_features(model: Any, batch: PreferenceBatch, layout: PairLayout) -> dict[str, Any]:
    """``mm_encoder_outputs`` with each image encoded once, in the layout's image-token order."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inner = unwrap(model)
    encoded = {"prompt": [], "rejected": []}
    if batch.image_inputs:
        encoded["prompt"] = encode_images(inner, batch.image_inputs)
    if batch.rejected_image_inputs:
        encoded["rejected"] = encode_images(inner, batch.rejected_image_inputs)
    rows = _row_images(batch)
    features = [encoded[kind][i] for row in layout.block_rows for kind, i in rows[row]]
    return {"image": BaseModelOutputWithPooling(pooler_output=features)}


def _rope_owner(model: Any) -> Any:
    """The Qwen2-VL / Qwen2.5-VL module that holds ``get_rope_index``."""
    inner = unwrap(model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return base.model


def qwen_vl_positions(model: Any, batch: PreferenceBatch) -> torch.Tensor:
    """The 3D rope positions that Qwen2-VL / 2.5-VL give the 2B rows. Shape: (3, 2B, T)

    Computed by the model's own ``get_rope_index`` from ``input_ids`` (without them the
    positions differ silently), each row with the grids of the images its prompt holds.
    """
    config = unwrap(model).config
    rows = _row_images(batch)
    grids = []
    for row in rows:
        for kind, index in row:
            inputs = batch.image_inputs if kind == "prompt" else batch.rejected_image_inputs
            grids.append(inputs["image_grid_thw"][index])
    image_token_types = (batch.input_ids == config.image_token_id).int()
    positions, _ = _rope_owner(model).get_rope_index(
        batch.input_ids,
        mm_token_type_ids=image_token_types,
        image_grid_thw=torch.stack(grids) if grids else None,
        attention_mask=batch.attention_mask,
    )
    return positions


def layout_position_ids(model: Any, batch: PreferenceBatch, layout: PairLayout) -> torch.Tensor:
    """Each layout token's position id in its own row. Shape: (R, L), Qwen-VL (3, R, L)"""
    if model_family(unwrap(model)) in QWEN_VL_FAMILIES:
        return layout.gather(qwen_vl_positions(model, batch))
    return layout.columns


MASK_ATTENTIONS = (LAYOUT_ATTENTION, "flex_attention", "eager", "sdpa")


def unsupported_reason(model: Any) -> str | None:
    """Why a layout cannot be exact for ``model`` (None when it can): the caller falls back to
    the two-row forward or reports it."""
    config = text_config(unwrap(model))
    implementation = config._attn_implementation
    if implementation not in MASK_ATTENTIONS:  # flash kernels take no 4D mask
        return (
            f"forward layouts need attention sdpa, eager or flex_attention, not "
            f"{implementation!r} (model.attn_implementation)"
        )
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        sliding = "sliding_attention" in layer_types
    else:
        sliding = bool(getattr(config, "sliding_window", None)) and getattr(
            config, "use_sliding_window", True
        )
    if sliding:  # the layout's mask replaces the model's own, which adds the window
        return f"forward layouts do not support sliding-window attention ({config.model_type})"
    return None


def layout_attention_mask(model: Any, layout: PairLayout) -> Any:
    """The mask for the language model's attention implementation.

    ``mmdpo_layout``: the layout itself (block-wise SDPA, no (L, L) mask); ``flex_attention``:
    a block-sparse ``BlockMask``; ``sdpa`` and ``eager``: an additive float 4D mask.
    """
    reason = unsupported_reason(model)
    if reason:
        raise ValueError(f"{reason}; use the two-row layout")
    implementation = text_config(unwrap(model))._attn_implementation
    if implementation == LAYOUT_ATTENTION:
        return plan_mask(layout)
    if implementation == "flex_attention":
        return flex_block_mask(layout)
    # Additive float for eager (a boolean mask under eager gives wrong logits silently) and for
    # SDPA too: measured on CPU, SDPA converts a boolean mask in every layer and a step takes
    # 7-16% more memory than with the float mask, at the same speed.
    return attention_mask_4d(layout, unwrap(model).get_input_embeddings().weight.dtype)


def layout_forward(
    model: Any,
    batch: PreferenceBatch,
    layout: str | PairLayout = "shared_prompt",
    *,
    row_tokens: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PairLogps:
    """Policy (or reference) log-probs of a batch in one forward over a denser layout.

    Args:
        layout: ``shared_prompt``, ``packed``, or a ``PairLayout`` built already.
        row_tokens: for ``packed``, tokens per row at most (see ``layouts.build_layout``).

    Returns:
        the same ``PairLogps`` as ``concatenated_forward`` (summed log-probs and counts).
    """
    if not isinstance(layout, PairLayout):
        layout = build_layout(batch, layout, row_tokens=row_tokens)
    kwargs: dict[str, Any] = {}
    if batch.image_inputs or batch.rejected_image_inputs:
        kwargs["mm_encoder_outputs"] = _image_features(model, batch, layout)
    out = model(
        input_ids=layout.input_ids,
        attention_mask=layout_attention_mask(model, layout),
        position_ids=layout_position_ids(model, batch, layout),
        logits_to_keep=layout.keep,
        use_cache=False,
        **kwargs,
    )
    per_token = rows_target_logps(
        out.logits, layout.target_logits, layout.target_ids, chunk_size=chunk_size
    )
    n_rows = batch.input_ids.shape[0]
    sums = torch.zeros(n_rows, dtype=torch.float32, device=per_token.device)
    sums = sums.index_add(0, layout.target_rows, per_token)
    counts = batch.loss_mask[:, 1:].sum(dim=1).to(torch.float32)
    n = batch.num_pairs
    return PairLogps(sums[:n], sums[n:], counts[:n], counts[n:])


FORWARD_LAYOUTS = ("two_row", "shared_prompt", "packed")


def forward_pairs(
    model: Any, batch: PreferenceBatch, layout: str = "two_row", *, row_tokens: int | None = None
) -> PairLogps:
    """``concatenated_forward`` for ``two_row``, else ``layout_forward``: one call for the
    policy, the reference and the precompute pass, whichever layout a run uses."""
    if layout == "two_row":
        return concatenated_forward(model, batch)
    if layout not in FORWARD_LAYOUTS:
        raise ValueError(f"unknown forward layout {layout!r}; valid: {', '.join(FORWARD_LAYOUTS)}")
    return layout_forward(model, batch, layout, row_tokens=row_tokens)
