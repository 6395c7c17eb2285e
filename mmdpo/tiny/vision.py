"""Tiny vision-language models with the real processor classes, sized for CPU tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessor,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ImageProcessor,
    Idefics3Processor,
    LlavaConfig,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from mmdpo.tiny.text import TEXT_SIZES, seeded_init, sharpen_attention, token_ids
from mmdpo.tiny.tokenizer import IMAGE_PLACEHOLDERS, build_tokenizer, chat_template

VLM_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava", "idefics3")

PATCH_SIZE = 14
IMAGE_SIZE = 56  # 4 x 4 patches of 14 px
VISION_SIZES = {"num_heads": 4, "depth": 2}  # the vision towers: width 32, 2 layers, 4 heads
# Qwen2 text rotary: head_dim 16 -> 8 frequencies, split over (time, height, width).
MROPE_SECTION = [2, 3, 3]


def _qwen_text_config(tokenizer) -> dict:
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": MROPE_SECTION}
    return {**TEXT_SIZES, **token_ids(tokenizer), "rope_parameters": rope}


def _qwen_vision_token_ids(tokenizer) -> dict:
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}


def _qwen2_vl(tokenizer, template):
    config = Qwen2VLConfig(
        text_config=_qwen_text_config(tokenizer),
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "hidden_size": TEXT_SIZES["hidden_size"],  # the merger's output width
            "patch_size": PATCH_SIZE,
        },
        **_qwen_vision_token_ids(tokenizer),
    )
    return config, _qwen_processor(Qwen2VLProcessor, tokenizer, template)


def _qwen2_5_vl(tokenizer, template):
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(tokenizer),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": TEXT_SIZES["hidden_size"],
            "patch_size": PATCH_SIZE,
            "window_size": 2 * IMAGE_SIZE,
            "fullatt_block_indexes": [1],  # layer 0 windowed, layer 1 full, as in the real model
        },
        **_qwen_vision_token_ids(tokenizer),
    )
    return config, _qwen_processor(Qwen2_5_VLProcessor, tokenizer, template)


def _qwen_processor(processor_class, tokenizer, template):
    # Images of 56 x 56 to 112 x 112 pixels: 4 x 4 to 8 x 8 patches, 4 to 16 image tokens.
    size = {"shortest_edge": IMAGE_SIZE * IMAGE_SIZE, "longest_edge": 4 * IMAGE_SIZE * IMAGE_SIZE}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=PATCH_SIZE, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=PATCH_SIZE, merge_size=2)
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )


def _llava(tokenizer, template):
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2  # CLS dropped ("default" strategy)
    config = LlavaConfig(
        vision_config=vision,
        text_config={"model_type": "llama", **TEXT_SIZES, **token_ids(tokenizer)},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=image_seq_length,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=template,
    )
    return config, processor


def _idefics3(tokenizer, template):
    extra_special_tokens = list(tokenizer.extra_special_tokens)
    scale_factor = 2
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        text_config={"model_type": "llama", **TEXT_SIZES, **token_ids(tokenizer)},
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
    )
    # Images are resized to a longest edge of 112 px and split into 56 px tiles (at most 2 x 2)
    # plus a 56 px global view; each tile gives (56 / 14)^2 / 2^2 = 4 image tokens.
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 2 * IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=True,
    )
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // scale_factor**2
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=template,
    )
    # Idefics3Processor replaced the tokenizer's list of extra special tokens with its own three.
    tokenizer.extra_special_tokens = extra_special_tokens
    return config, processor


_BUILDERS = {
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "llava": _llava,
    "idefics3": _idefics3,
}


def tiny_vlm_config_and_processor(family: str, tokenizer=None):
    """The model config and the real processor of a tiny VLM of `family`."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown VLM family {family!r}; valid: {', '.join(VLM_FAMILIES)}")
    # A copy: the template is set per family, and Idefics3Processor edits its tokenizer.
    tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else build_tokenizer()
    template = chat_template(IMAGE_PLACEHOLDERS[family])
    tokenizer.chat_template = template
    return _BUILDERS[family](tokenizer, template)


def tiny_vlm(
    family: str, tokenizer=None, seed: int = 0, sharp: bool = False
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A randomly initialised tiny VLM of `family` and its real processor.

    Families: "qwen2_vl", "qwen2_5_vl", "llava" (LLaVA-1.5), "idefics3". The language model is
    the tiny text model (hidden 64, 2 layers); the vision tower has width 32 and 2 layers.
    `sharp` applies :func:`mmdpo.tiny.text.sharpen_attention` to the language model.
    """
    config, processor = tiny_vlm_config_and_processor(family, tokenizer)
    model = seeded_init(seed, lambda: AutoModelForImageTextToText.from_config(config))
    if sharp:
        sharpen_attention(model)
    return model, processor


def save_tiny_vlm(
    directory: str | os.PathLike, family: str, tokenizer=None, seed: int = 0, sharp: bool = False
) -> Path:
    """Write a tiny VLM and its processor so that `AutoModelForImageTextToText` and
    `AutoProcessor.from_pretrained(directory)` load them. Returns the directory."""
    model, processor = tiny_vlm(family, tokenizer, seed, sharp=sharp)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)
