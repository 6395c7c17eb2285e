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

from dataclasses import dataclass
from typing import Any

import torch

from mmdpo.forward import (
    ImageFeatures,
    PairImages,
    PairLogps,
    concatenated_forward,
    encode_pair_images,
    two_row_images,
    unwrap,
    vision_kwargs,
)
from mmdpo.layout_attention import (
    LAYOUT_ATTENTION,
    flex_block_mask,
    plan_mask,
    text_config,
    use_layout_attention,
)
from mmdpo.layouts import PairLayout, attention_mask_4d, build_layout
from mmdpo.logprobs import DEFAULT_CHUNK_SIZE, rows_target_logps
from mmdpo.models.families import family_of, is_vlm_config
from mmdpo.types import PreferenceBatch


def layout_position_ids(
    model: Any,
    batch: PreferenceBatch,
    layout: PairLayout,
    rows: list[ImageFeatures] | None = None,
) -> torch.Tensor:
    """Each layout token's position id in its own row. Shape: (R, L), Qwen-VL (3, R, L)

    ``rows``: the images of each of the 2B rows (``two_row_images``), None for a text batch.
    A family that computes its own positions (Qwen2-VL's 3D rope) computes them for the 2B
    rows, with each row's images, and the layout gathers them: the same by construction.
    """
    inner = unwrap(model)
    if rows is None or not is_vlm_config(inner.config):
        return layout.columns
    family = family_of(inner)
    if family.position_ids is None:
        return layout.columns
    per_image = {
        key: [value for row in rows for value in row.inputs.get(key, [])]
        for key in family.per_image_inputs
    }
    extras = family.forward_extras(inner.config, batch.input_ids, per_image)
    positions = family.position_ids(inner, batch.input_ids, batch.attention_mask, extras)
    return layout.gather(positions)


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
    images: PairImages | None = None,
) -> PairLogps:
    """Policy (or reference) log-probs of a batch in one forward over a denser layout.

    Args:
        layout: ``shared_prompt``, ``packed``, or a ``PairLayout`` built already.
        row_tokens: for ``packed``, tokens per row at most (see ``layouts.build_layout``).
        images: the batch's image features when the caller encoded them already.

    Returns:
        the same ``PairLogps`` as ``concatenated_forward`` (summed log-probs and counts).
    """
    if not isinstance(layout, PairLayout):
        layout = build_layout(batch, layout, row_tokens=row_tokens)
    kwargs: dict[str, Any] = {}
    rows = None
    if batch.has_images:
        if images is None:
            images = encode_pair_images(model, batch)  # each image encoded once
        rows = two_row_images(images)
        # a block shows the images of the row whose prompt it carries
        blocks = [rows[row] for row in layout.block_rows]
        kwargs = vision_kwargs(model, blocks, layout.input_ids)
    out = model(
        input_ids=layout.input_ids,
        attention_mask=layout_attention_mask(model, layout),
        position_ids=layout_position_ids(model, batch, layout, rows),
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
    model: Any,
    batch: PreferenceBatch,
    layout: str = "two_row",
    *,
    row_tokens: int | None = None,
    images: PairImages | None = None,
) -> PairLogps:
    """``concatenated_forward`` for ``two_row``, else ``layout_forward``: one call for the
    policy, the reference and the precompute pass, whichever layout a run uses."""
    if layout == "two_row":
        return concatenated_forward(model, batch, images=images)
    if layout not in FORWARD_LAYOUTS:
        raise ValueError(f"unknown forward layout {layout!r}; valid: {', '.join(FORWARD_LAYOUTS)}")
    return layout_forward(model, batch, layout, row_tokens=row_tokens, images=images)


LAYOUT_DESCRIPTIONS = {
    "two_row": "two rows per pair (chosen, rejected), padded",
    "shared_prompt": "one row per pair: the prompt and its images computed once",
    "packed": "shared prompts, several pairs per row, no padding",
}


@dataclass(frozen=True)
class PairForward:
    """The forward a run uses for the policy, its reference and the precompute pass: called
    like ``concatenated_forward`` (model, batch) -> ``PairLogps``.

    Attributes:
        layout: ``two_row``, ``shared_prompt`` or ``packed``.
        row_tokens: ``packed``: the longest row (None: the micro-batch's longest pair).
    """

    layout: str = "two_row"
    row_tokens: int | None = None

    def __call__(
        self, model: Any, batch: PreferenceBatch, images: PairImages | None = None
    ) -> PairLogps:
        return forward_pairs(model, batch, self.layout, row_tokens=self.row_tokens, images=images)

    def describe(self) -> str:
        return f"{self.layout} ({LAYOUT_DESCRIPTIONS[self.layout]})"

    def prepare(self, model: Any) -> None:
        """Switch ``model`` (a policy or a separate reference) to the layout's attention."""
        if self.layout != "two_row":
            use_layout_attention(unwrap(model))


def choose_forward(
    setting: str, model: Any, row_tokens: int | None = None
) -> tuple[PairForward, str | None]:
    """The run's ``PairForward`` for ``train.forward_layout`` and ``model``, prepared.

    ``auto`` takes ``packed`` where a layout is exact for the model, else ``two_row``; the
    second value then says why (None otherwise). An explicit layout that cannot be exact for
    the model raises ``ValueError`` naming the setting.
    """
    reason = unsupported_reason(model)
    if setting == "auto":
        layout = "two_row" if reason else "packed"
    else:
        if setting not in FORWARD_LAYOUTS:
            raise ValueError(
                f"train.forward_layout={setting!r}; valid: auto, {', '.join(FORWARD_LAYOUTS)}"
            )
        if setting != "two_row" and reason:
            raise ValueError(f"train.forward_layout={setting}: {reason}; use two_row or auto")
        layout, reason = setting, None
    forward = PairForward(layout, row_tokens)
    forward.prepare(model)
    return forward, reason
