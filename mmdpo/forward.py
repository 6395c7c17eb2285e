"""One forward per micro-batch for the chosen and rejected rows together; images encoded once.

Two steps, so that another row layout (a shared prompt, packed rows) can sit beside the
two-row one and reuse the first:

1. images: :func:`encode_pair_images` runs the vision encoder once on each pair's images (and
   on the rejected side's own images of image-contrastive pairs) and splits the features by
   pair; :func:`vision_kwargs` hands each row its images' features through transformers'
   ``mm_encoder_outputs`` argument, so the language model merges them at the image tokens as
   usual (models with 3D rotary positions compute them from ``input_ids``). What differs by model
   family is in ``mmdpo.models.families``. Peers pass ``pixel_values`` for each row and encode
   every image twice.
2. the two-row layout: chosen rows then rejected rows (:func:`forward_logits`,
   :func:`concatenated_forward`), sequence log-probs split into :class:`PairLogps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mmdpo.logprobs import response_prediction_mask, selected_sequence_logps
from mmdpo.models.families import VLMFamily, family_of
from mmdpo.types import PreferenceBatch


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


# ---------------------------------------------------------------------------- images, once


@dataclass
class ImageFeatures:
    """The encoded images of one side of one pair, in prompt order.

    Attributes:
        features: one (image tokens, hidden) tensor per image (or image tile).
        inputs: the per-image rows of the processor tensors that the language model's forward
            needs too (the family's ``per_image_inputs``, e.g. ``image_grid_thw``).
    """

    features: list[torch.Tensor] = field(default_factory=list)
    inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)


@dataclass
class PairImages:
    """Every pair's encoded images, independent of how pairs are laid out in rows.

    Attributes:
        prompt: per pair, the features of its prompt's images (empty for a text pair).
        rejected: per pair, the features of the rejected side's own images, or None when the
            rejected response shares the prompt's images.
        encoded: the encoder's whole output for the prompts' images (``"prompt"``) and the
            rejected sides' (``"rejected"``), kept for :func:`project_pair_images`.
    """

    prompt: list[ImageFeatures]
    rejected: list[ImageFeatures | None]
    encoded: dict[str, Any] = field(default_factory=dict)

    def rejected_side(self, pair: int) -> ImageFeatures:
        """The images the rejected response of ``pair`` is conditioned on."""
        own = self.rejected[pair]
        return own if own is not None else self.prompt[pair]


def encode_images(model: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Run the vision encoder once; one feature tensor (tokens, hidden) per image.

    Raises:
        UnknownFamilyError: the model's family has no entry in ``mmdpo.models.families``.
    """
    model = unwrap(model)
    return family_of(model).encode_images(model, inputs)


def _split_by_pair(
    family: VLMFamily,
    features: list[torch.Tensor],
    inputs: dict[str, torch.Tensor],
    owners: torch.Tensor,
    n: int,
) -> list[ImageFeatures]:
    """A batch's per-image features (and per-image inputs) grouped by the pair they belong to."""
    by_pair = [ImageFeatures() for _ in range(n)]
    for image_index, pair in enumerate(owners.tolist()):
        by_pair[pair].features.append(features[image_index])
        for key in family.per_image_inputs:
            by_pair[pair].inputs.setdefault(key, []).append(inputs[key][image_index])
    return by_pair


def _pair_images(
    family: VLMFamily, batch: PreferenceBatch, features_of: Any, encoded: dict[str, Any]
) -> PairImages:
    """The prompts' images, then the rejected sides' own images (image-contrastive pairs),
    each through ``features_of(part, image inputs) -> per-image features``, split by pair."""
    n = batch.num_pairs
    prompt = [ImageFeatures() for _ in range(n)]
    if batch.image_inputs:
        features = features_of("prompt", batch.image_inputs)
        prompt = _split_by_pair(family, features, batch.image_inputs, batch.image_pairs, n)
    rejected: list[ImageFeatures | None] = [None] * n
    if batch.rejected_image_inputs:
        inputs = batch.rejected_image_inputs
        features = features_of("rejected", inputs)
        own = _split_by_pair(family, features, inputs, batch.rejected_image_pairs, n)
        rejected = [side if side.features else None for side in own]
    return PairImages(prompt, rejected, encoded)


def encode_pair_images(model: Any, batch: PreferenceBatch) -> PairImages:
    """Each image of the batch through the vision encoder once: the prompt's images, then the
    rejected sides' own images (image-contrastive pairs), split by pair."""
    model = unwrap(model)
    family = family_of(model)
    encoded: dict[str, Any] = {}

    def encode(part: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        features, encoded[part] = family.encode_with_output(model, inputs)
        return features

    return _pair_images(family, batch, encode, encoded)


def project_pair_images(
    model: Any, batch: PreferenceBatch, images: PairImages
) -> PairImages | None:
    """The batch's images through ``model``'s projector alone, on the tower states that
    ``images`` (an earlier :func:`encode_pair_images` of the same batch) kept: the features an
    adapter-off reference needs when the adapter reaches the projector but not the tower.
    None when the family cannot run its projector alone (``VLMFamily.project``)."""
    model = unwrap(model)
    family = family_of(model)
    if family.project is None or not images.encoded:
        return None

    def project(part: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return family.project(model, images.encoded[part], inputs)

    return _pair_images(family, batch, project, {})


def vision_kwargs(model: Any, rows: list[ImageFeatures], input_ids: torch.Tensor) -> dict[str, Any]:
    """Forward keyword arguments that give each row the features of its images.

    ``rows[r]`` holds the images of row ``r`` of ``input_ids``, in the order of its image
    tokens. The features enter through transformers' ``mm_encoder_outputs``, so the model
    merges them at the image tokens as usual; the family adds what else its forward needs.
    The encoder ran on the module inside a DDP wrapper (which has neither ``config`` nor
    ``get_image_features``); the features then enter the wrapper's forward as inputs, so the
    projector's gradients still reach DDP's all-reduce hooks in the backward.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inner = unwrap(model)
    family = family_of(inner)
    features = [feature for row in rows for feature in row.features]
    per_image = {
        key: [value for row in rows for value in row.inputs.get(key, [])]
        for key in family.per_image_inputs
    }
    kwargs: dict[str, Any] = {
        "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}
    }
    kwargs.update(family.forward_extras(inner.config, input_ids, per_image))
    return kwargs


# ---------------------------------------------------------------------------- the two-row layout


def two_row_images(images: PairImages) -> list[ImageFeatures]:
    """The images of each of the 2B rows: chosen rows 0..B-1 see the prompt's images,
    rejected rows B..2B-1 their own images when they have them, else the prompt's."""
    n = len(images.prompt)
    return list(images.prompt) + [images.rejected_side(pair) for pair in range(n)]


def forward_logits(
    model: Any,
    batch: PreferenceBatch,
    logits_to_keep: torch.Tensor | None = None,
    images: PairImages | None = None,
) -> torch.Tensor:
    """Logits of all 2B rows in one forward. Shape: (2B, T, V)

    With a boolean ``logits_to_keep`` (2B, T) the output layer runs only at those positions
    and the logits come back flattened, row-major. Shape: (M, V)
    ``images``: the batch's image features when the caller encoded them already
    (:func:`encode_pair_images`; a step whose reference sees the same features).
    """
    kwargs: dict[str, Any] = {}
    if batch.has_images:
        if images is None:
            images = encode_pair_images(model, batch)
        rows = two_row_images(images)
        kwargs = vision_kwargs(model, rows, batch.input_ids)
    if logits_to_keep is not None:
        kwargs["logits_to_keep"] = logits_to_keep
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kwargs
    )
    return out.logits


def concatenated_forward(
    model: Any, batch: PreferenceBatch, images: PairImages | None = None
) -> PairLogps:
    """Policy (or reference) log-probs of a batch in one forward.

    The output layer (hidden x vocabulary, often the largest matmul of the model) runs only at
    the positions that predict a response token, not at prompt or padding positions, and the
    (2B, T, V) logits never exist: only (M, V) for the M response tokens.
    """
    keep = response_prediction_mask(batch.loss_mask)
    logits = forward_logits(model, batch, logits_to_keep=keep, images=images)
    sums, counts = selected_sequence_logps(logits, batch.input_ids, batch.loss_mask)
    n = batch.num_pairs
    return PairLogps(sums[:n], sums[n:], counts[:n], counts[n:])
