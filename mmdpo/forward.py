"""One forward per micro-batch for the chosen and rejected rows together; images encoded once.

For image pairs the vision encoder runs once on each pair's images (``get_image_features``);
the per-image features are then handed to the model for both the chosen row and the rejected
row through transformers' ``mm_encoder_outputs`` argument, so the language model merges them
at the image tokens as usual (and Qwen2-VL computes its 3D positions from ``input_ids``).
Peers pass ``pixel_values`` for each row and encode every image twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mmdpo.logprobs import response_prediction_mask, selected_sequence_logps
from mmdpo.types import PreferenceBatch

QWEN_VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


@dataclass
class PairLogps:
    """Sequence log-probs of a batch's responses, split into chosen and rejected.

    Attributes:
        chosen_sum, rejected_sum: summed token log-probs of each response. Shape: (B,)
        chosen_tokens, rejected_tokens: response token counts (EOS included). Shape: (B,)
    """

    chosen_sum: torch.Tensor
    rejected_sum: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor

    def chosen(self, average: bool) -> torch.Tensor:
        return self.chosen_sum / self.chosen_tokens.clamp(min=1) if average else self.chosen_sum

    def rejected(self, average: bool) -> torch.Tensor:
        return (
            self.rejected_sum / self.rejected_tokens.clamp(min=1) if average else self.rejected_sum
        )

    def detach(self) -> PairLogps:
        return PairLogps(*(t.detach() for t in self.__dict__.values()))


def unwrap(model: Any) -> Any:
    """The module inside DDP / FSDP / DeepSpeed wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def model_family(model: Any) -> str:
    """The ``model_type`` of a (possibly PEFT-wrapped) model's config."""
    return getattr(getattr(model, "config", None), "model_type", "") or ""


def encode_images(model: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Run the vision encoder once; one feature tensor (tokens, hidden) per image."""
    family = model_family(model)
    config = model.config
    if family in QWEN_VL_FAMILIES:
        out = model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    elif family == "llava":
        out = model.get_image_features(
            pixel_values=inputs["pixel_values"],
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
    elif family == "idefics3":
        # One image per "sample" so that the features come back split per image.
        mask = inputs.get("pixel_attention_mask")
        out = model.get_image_features(
            inputs["pixel_values"].unsqueeze(1), None if mask is None else mask.unsqueeze(1)
        )
    else:
        raise ValueError(
            f"image inputs for model family {family!r}: supported families are "
            "qwen2_vl, qwen2_5_vl, llava, idefics3"
        )
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return list(features)


def _per_pair(features: list[torch.Tensor], owners: torch.Tensor, n_pairs: int) -> list[list[int]]:
    by_pair: list[list[int]] = [[] for _ in range(n_pairs)]
    for image_index, pair in enumerate(owners.tolist()):
        by_pair[pair].append(image_index)
    return by_pair


def _vision_kwargs(model: Any, batch: PreferenceBatch) -> dict[str, Any]:
    """Keyword arguments that give each of the 2B rows its images' features, encoded once.

    The encoder runs on the module inside a DDP wrapper (which has neither ``config`` nor
    ``get_image_features``); the features then enter the wrapper's forward as inputs, so the
    projector's gradients still reach DDP's all-reduce hooks in the backward.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model = unwrap(model)

    n_pairs = batch.num_pairs
    features: list[torch.Tensor] = []
    grids: list[torch.Tensor] = []
    prompt_feats = encode_images(model, batch.image_inputs) if batch.image_inputs else []
    prompt_owned = (
        _per_pair(prompt_feats, batch.image_pairs, n_pairs) if prompt_feats else [[]] * n_pairs
    )
    rejected_feats: list[torch.Tensor] = []
    rejected_owned: list[list[int]] = [[] for _ in range(n_pairs)]
    if batch.rejected_image_inputs:
        rejected_feats = encode_images(model, batch.rejected_image_inputs)
        rejected_owned = _per_pair(rejected_feats, batch.rejected_image_pairs, n_pairs)
    prompt_grid = (batch.image_inputs or {}).get("image_grid_thw")
    rejected_grid = (batch.rejected_image_inputs or {}).get("image_grid_thw")

    for pair in range(n_pairs):  # chosen rows
        features += [prompt_feats[i] for i in prompt_owned[pair]]
        if prompt_grid is not None:
            grids += [prompt_grid[i] for i in prompt_owned[pair]]
    for pair in range(n_pairs):  # rejected rows: their own images when they have them
        if rejected_owned[pair]:
            features += [rejected_feats[i] for i in rejected_owned[pair]]
            grids += [rejected_grid[i] for i in rejected_owned[pair]]
        else:
            features += [prompt_feats[i] for i in prompt_owned[pair]]
            if prompt_grid is not None:
                grids += [prompt_grid[i] for i in prompt_owned[pair]]

    kwargs: dict[str, Any] = {
        "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}
    }
    if model_family(model) in QWEN_VL_FAMILIES:
        image_token_id = model.config.image_token_id
        kwargs["image_grid_thw"] = torch.stack(grids)
        kwargs["mm_token_type_ids"] = (batch.input_ids == image_token_id).to(torch.int)
    return kwargs


def forward_logits(
    model: Any, batch: PreferenceBatch, logits_to_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits of all 2B rows in one forward. Shape: (2B, T, V)

    With a boolean ``logits_to_keep`` (2B, T) the output layer runs only at those positions
    and the logits come back flattened, row-major. Shape: (M, V)
    """
    kwargs: dict[str, Any] = {}
    if batch.image_inputs or batch.rejected_image_inputs:
        kwargs = _vision_kwargs(model, batch)
    if logits_to_keep is not None:
        kwargs["logits_to_keep"] = logits_to_keep
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kwargs
    )
    return out.logits


def concatenated_forward(model: Any, batch: PreferenceBatch) -> PairLogps:
    """Policy (or reference) log-probs of a batch in one forward.

    The output layer (hidden x vocabulary, often the largest matmul of the model) runs only at
    the positions that predict a response token, not at prompt or padding positions, and the
    (2B, T, V) logits never exist: only (M, V) for the M response tokens.
    """
    keep = response_prediction_mask(batch.loss_mask)
    logits = forward_logits(model, batch, logits_to_keep=keep)
    sums, counts = selected_sequence_logps(logits, batch.input_ids, batch.loss_mask)
    n = batch.num_pairs
    return PairLogps(sums[:n], sums[n:], counts[:n], counts[n:])
