"""The image-text model families the engine drives: one entry each, the only place that names them.

An entry says, for one transformers ``model_type``, how the vision encoder is called once per
image, what the language model's forward needs besides the image features (Qwen2-VL's
``image_grid_thw`` and ``mm_token_type_ids``), which config attributes hold the image token,
and how its modules are named (for LoRA: vision tower, projector, language model). Module
names as checked in transformers 5 (``<Family>ForConditionalGeneration``):

| family | vision tower | projector | language model |
|---|---|---|---|
| qwen2_vl, qwen2_5_vl | ``model.visual`` | ``model.visual.merger`` | ``model.language_model`` |
| llava | ``model.vision_tower`` | ``model.multi_modal_projector`` | ``model.language_model`` |
| idefics3 | ``model.vision_model`` | ``model.connector`` | ``model.text_model`` |

Adding a family: one entry in ``FAMILIES``, a tiny config in ``mmdpo/tiny/vision.py`` (and its
image placeholder in ``mmdpo/tiny/tokenizer.py``); the tests parametrized over
``mmdpo.tiny.VLM_FAMILIES`` then cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class UnknownFamilyError(ValueError):
    """Image inputs for a model family without an entry; the message lists the known ones."""


def _base_model(model: Any) -> Any:
    """The transformers model under peft's wrapper (the model itself when unwrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _encode_qwen(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    return model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])


def _project_qwen2_vl(model: Any, encoded: Any, inputs: dict[str, torch.Tensor]) -> list:
    # ``last_hidden_state`` of the visual model is every image's patch states before the
    # merger (its only module after the blocks); the merger alone gives the features again.
    base = _base_model(model)
    visual = base.model.visual
    merged = visual.merger(encoded.last_hidden_state)
    sizes = (inputs["image_grid_thw"].prod(-1) // visual.spatial_merge_size**2).tolist()
    return list(torch.split(merged, sizes))


def _project_qwen2_5_vl(model: Any, encoded: Any, inputs: dict[str, torch.Tensor]) -> list:
    # Qwen2.5-VL's blocks run on the patches in window order, so ``last_hidden_state`` is in
    # that order; the visual model merges it there and then puts the merged tokens back in
    # image order by the inverse of the window index, which only the image grids determine.
    from transformers.vision_utils import get_vision_window_index

    base = _base_model(model)
    visual = base.model.visual
    grid = inputs["image_grid_thw"]
    window_index, _ = get_vision_window_index(
        grid,
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    merged = visual.merger(encoded.last_hidden_state)
    merged = merged[torch.argsort(window_index.to(merged.device))]
    sizes = (grid.prod(-1) // visual.spatial_merge_size**2).tolist()
    return list(torch.split(merged, sizes))


def _encode_llava(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    config = model.config
    return model.get_image_features(
        pixel_values=inputs["pixel_values"],
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
    )


def _project_llava(model: Any, encoded: Any, inputs: dict[str, torch.Tensor]) -> list:
    # The tower's selected layer(s), as get_image_features selects them, then the projector.
    config = model.config
    layers = config.vision_feature_layer
    pool = [encoded.hidden_states[i] for i in ([layers] if isinstance(layers, int) else layers)]
    if config.vision_feature_select_strategy == "default":
        pool = [states[:, 1:] for states in pool]  # the CLS position
    base = _base_model(model)
    return list(base.model.multi_modal_projector(torch.cat(pool, dim=-1)))


def _project_idefics3(model: Any, encoded: Any, inputs: dict[str, torch.Tensor]) -> list:
    # The vision model's last states, one image per "sample" (see _encode_idefics3), then the
    # connector (pixel shuffle and projection).
    base = _base_model(model)
    features = base.model.connector(encoded.last_hidden_state)
    return [feature.reshape(-1, feature.shape[-1]) for feature in features]


def _encode_idefics3(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    # One image (tile) per "sample", so that the features come back split per image.
    mask = inputs.get("pixel_attention_mask")
    return model.get_image_features(
        inputs["pixel_values"].unsqueeze(1), None if mask is None else mask.unsqueeze(1)
    )


def _positions_qwen(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, extras: dict[str, Any]
) -> torch.Tensor:
    # The model's own rope index, from input_ids: computed without them the positions differ
    # silently. The module that holds it sits under peft's wrapper and the LM head's model.
    base = _base_model(model)
    positions, _ = base.model.get_rope_index(
        input_ids,
        mm_token_type_ids=extras["mm_token_type_ids"],
        image_grid_thw=extras.get("image_grid_thw"),
        attention_mask=attention_mask,
    )
    return positions


def _encode_unknown(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    raise get_family_error(model_type(model))


@dataclass(frozen=True)
class VLMFamily:
    """How the engine drives one family of image-text models.

    Attributes:
        name: the config's ``model_type``.
        encode: ``(model, image inputs) -> get_image_features output``: the vision encoder
            and projector on the processor's image tensors (images concatenated on dim 0).
        image_token_attributes: config attributes naming the token the processor expands
            into image features; the first one set wins.
        special_token_attributes: further image-related token ids (video, vision start/end).
        per_image_inputs: processor tensors with one row per image that the language model's
            forward needs besides the features (rows follow the images, row by row).
        token_type_ids: the forward needs ``mm_token_type_ids`` (1 on image tokens).
        position_ids: ``(model, input_ids, attention_mask, forward extras) -> position ids``
            of right-padded rows with images, as the model computes them itself, for families
            whose positions are not the column (Qwen2-VL's 3D rope positions, Shape:
            (3, N, T)); None: the column. A forward that lays rows out differently (a shared
            prompt, packed rows) passes them.
        vision_tower, projector: module-name components of the vision encoder and of the
            vision-to-text projector (a projector name wins when both occur).
        project: ``(model, encode output, image inputs) -> per-image features``: the
            projector alone on the tower states an earlier ``encode`` returned, so that an
            adapter-off reference whose adapter reaches only the projector reuses the
            tower's work; None: the family's projector cannot run alone (the reference then
            encodes its images itself).
    """

    name: str
    encode: Callable[[Any, dict[str, torch.Tensor]], Any]
    image_token_attributes: tuple[str, ...]
    vision_tower: frozenset[str]
    projector: frozenset[str]
    special_token_attributes: tuple[str, ...] = ()
    per_image_inputs: tuple[str, ...] = ()
    token_type_ids: bool = False
    position_ids: Callable[..., torch.Tensor] | None = None
    project: Callable[[Any, Any, dict[str, torch.Tensor]], list[torch.Tensor]] | None = None

    def image_token_id(self, config: Any) -> int | None:
        for attribute in self.image_token_attributes:
            value = getattr(config, attribute, None)
            if value is not None:
                return int(value)
        return None

    def image_token_ids(self, config: Any) -> tuple[int, ...]:
        """Every image-related special token id of ``config``, the image token first."""
        ids: list[int] = []
        for attribute in self.image_token_attributes + self.special_token_attributes:
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value not in ids:
                ids.append(value)
        return tuple(ids)

    def encode_images(self, model: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Run the vision encoder once; one feature tensor (tokens, hidden) per image."""
        return self.encode_with_output(model, inputs)[0]

    def encode_with_output(
        self, model: Any, inputs: dict[str, torch.Tensor]
    ) -> tuple[list[torch.Tensor], Any]:
        """``encode_images`` and the encoder's whole output (for ``project``)."""
        out = self.encode(model, inputs)
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return list(features), out

    def forward_extras(
        self, config: Any, input_ids: torch.Tensor, per_image: dict[str, list[torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """What the language model's forward needs besides the features, for rows whose
        images' ``per_image_inputs`` rows are given in row order."""
        extras = {key: torch.stack(per_image[key]) for key in self.per_image_inputs}
        if self.token_type_ids:
            extras["mm_token_type_ids"] = (input_ids == self.image_token_id(config)).to(torch.int)
        return extras


_QWEN = {
    "encode": _encode_qwen,
    "image_token_attributes": ("image_token_id",),
    "special_token_attributes": ("video_token_id", "vision_start_token_id", "vision_end_token_id"),
    "per_image_inputs": ("image_grid_thw",),
    "token_type_ids": True,
    "position_ids": _positions_qwen,
    "vision_tower": frozenset({"visual"}),
    "projector": frozenset({"merger"}),
}

FAMILIES: dict[str, VLMFamily] = {
    "qwen2_vl": VLMFamily("qwen2_vl", **_QWEN, project=_project_qwen2_vl),
    "qwen2_5_vl": VLMFamily("qwen2_5_vl", **_QWEN, project=_project_qwen2_5_vl),
    "llava": VLMFamily(
        "llava",
        _encode_llava,
        image_token_attributes=("image_token_id", "image_token_index"),  # older configs: index
        vision_tower=frozenset({"vision_tower"}),
        projector=frozenset({"multi_modal_projector"}),
        project=_project_llava,
    ),
    "idefics3": VLMFamily(
        "idefics3",
        _encode_idefics3,
        image_token_attributes=("image_token_id",),
        vision_tower=frozenset({"vision_model"}),
        projector=frozenset({"connector"}),
        project=_project_idefics3,
    ),
}

# Names that other image-text layouts use; they only keep LoRA off a tower the table lacks.
OTHER_VISION_TOWER_NAMES = frozenset({"vision_encoder"})
OTHER_PROJECTOR_NAMES = frozenset({"mm_projector"})


def get_family(name: str) -> VLMFamily:
    """The entry for ``model_type`` ``name``.

    Raises:
        UnknownFamilyError: no entry; the message lists the supported families.
    """
    family = FAMILIES.get(name)
    if family is None:
        raise get_family_error(name)
    return family


def get_family_error(name: str) -> UnknownFamilyError:
    return UnknownFamilyError(
        f"image inputs for model family {name!r}: supported families are {', '.join(FAMILIES)}"
    )


def model_type(model_or_config: Any) -> str:
    """The ``model_type`` of a config, or of a (possibly PEFT-wrapped) model's config."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", "") or ""


def family_of(model_or_config: Any) -> VLMFamily:
    """The entry of a model or config (see :func:`get_family`)."""
    return get_family(model_type(model_or_config))


def is_vlm_config(config: Any) -> bool:
    """A config with a ``vision_config`` belongs to a vision-language model."""
    return getattr(config, "vision_config", None) is not None


def _any_family(config: Any) -> VLMFamily:
    """The config's entry; for a family without one, a stand-in that reads every attribute
    the table knows (the token ids are only reported, never used to encode)."""
    family = FAMILIES.get(model_type(config))
    if family is not None:
        return family
    image = tuple(dict.fromkeys(a for f in FAMILIES.values() for a in f.image_token_attributes))
    special = tuple(dict.fromkeys(a for f in FAMILIES.values() for a in f.special_token_attributes))
    return VLMFamily(
        model_type(config),
        _encode_unknown,
        image,
        frozenset(),
        frozenset(),
        special_token_attributes=special,
    )


def image_token_id(config: Any) -> int | None:
    """The token of a VLM config that the processor expands into image features."""
    return _any_family(config).image_token_id(config)


def image_token_ids(config: Any) -> tuple[int, ...]:
    """Every image-related special token id of a VLM config, the image token first."""
    return _any_family(config).image_token_ids(config)


def vision_tower_names() -> frozenset[str]:
    return frozenset().union(*(f.vision_tower for f in FAMILIES.values()), OTHER_VISION_TOWER_NAMES)


def projector_names() -> frozenset[str]:
    return frozenset().union(*(f.projector for f in FAMILIES.values()), OTHER_PROJECTOR_NAMES)


_PER_IMAGE_KEYS = tuple(dict.fromkeys(k for f in FAMILIES.values() for k in f.per_image_inputs))


def image_count(inputs: dict[str, torch.Tensor]) -> int:
    """Images (or image tiles) in one pair's processor output: the rows of a per-image input
    a family declares (Qwen2-VL's ``pixel_values`` are patches, not images), else of
    ``pixel_values``."""
    for key in _PER_IMAGE_KEYS:
        if key in inputs:
            return int(inputs[key].shape[0])
    return int(inputs["pixel_values"].shape[0])
