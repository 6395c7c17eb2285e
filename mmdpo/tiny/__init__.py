"""Tiny models, a tokenizer and images built offline in seconds, for tests and the offline demo.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a built-in corpus (and
cached under `~/.cache/mmdpo/tiny`, or `$MMDPO_TINY_CACHE`), the models are built from configs
with random weights, and the VLMs use the real processor classes with small image sizes.

Tokenizer: ~700 tokens, Qwen2's pre-tokenizer (digits one by one), no BOS added on encode or
by the ChatML chat template. Special tokens come first, so their ids never change:

    0 <|endoftext|> (pad)   1 <s> (bos)   2 <|im_start|>   3 <|im_end|> (eos, ends each turn)
    4 <|vision_start|>  5 <|vision_end|>  6 <|image_pad|>  7 <|video_pad|>  8 <image>
    9 <fake_token_around_image>  10 <global-img>  11 <end_of_utterance>
    12..47 <row_1_col_1> .. <row_6_col_6>

VLM families (`tiny_vlm(family)`), with one 56 x 56 image and `return_tensors="pt"`:

- "qwen2_vl", "qwen2_5_vl": keys input_ids, attention_mask, mm_token_type_ids, pixel_values
  (num_patches_total, 1176), image_grid_thw (num_images, 3). Image part renders as
  `<|vision_start|><|image_pad|><|vision_end|>`; the processor expands `<|image_pad|>` (id 6,
  `config.image_token_id`) to grid_t*grid_h*grid_w/4 tokens: 4 for 56 x 56, up to 16 for
  112 x 112. Features: `model.model.get_image_features(pixel_values, image_grid_thw)
  .pooler_output` (a tuple, one (tokens, 64) tensor per image). Pass `mm_token_type_ids` (1 on
  image tokens) whenever images are passed. Using inputs_embeds, pass position ids from
  `model.model.compute_3d_position_ids(input_ids=..., inputs_embeds=..., image_grid_thw=...,
  video_grid_thw=None, attention_mask=..., cache=None, mm_token_type_ids=...)` (the keyword
  form works on both; Qwen2.5-VL has no defaults for video_grid_thw and cache).
- "llava" (LLaVA-1.5): keys input_ids, attention_mask, pixel_values (num_images, 3, 56, 56).
  Image part renders as `<image>` (id 8, `config.image_token_index`/`image_token_id`),
  expanded to 16 tokens per image (4 x 4 patches, CLS dropped). Features:
  `model.model.get_image_features(pixel_values).pooler_output` (a list, one (16, 64) per image).
- "idefics3": keys input_ids, attention_mask, pixel_values (batch, max_tiles, 3, 56, 56),
  pixel_attention_mask (batch, max_tiles, 56, 56); all-zero tiles are padding. Image part renders
  as `<image>`; an image is resized to a longest edge of 112 px and split into up to 2 x 2 tiles
  of 56 px plus a global view, each tile written as `<fake_token_around_image><row_r_col_c>` +
  4 x `<image>` (id 8, `config.image_token_id`), the global view as
  `<fake_token_around_image><global-img>` + 4 x `<image>` + `<fake_token_around_image>`. A
  56 x 56 image gives 4 tiles + global = 20 image tokens. Features:
  `model.model.get_image_features(pixel_values, pixel_attention_mask).pooler_output`.

For every family, scattering the concatenated features into the token embeddings where
`input_ids == config.image_token_id` (in order) reproduces the model's own forward exactly.
"""

from mmdpo.tiny.images import make_image, random_image
from mmdpo.tiny.text import (
    CAUSAL_LM_FAMILIES,
    save_tiny_causal_lm,
    sharpen_attention,
    tiny_causal_lm,
    tiny_causal_lm_config,
    tiny_reward_model,
)
from mmdpo.tiny.tokenizer import IMAGE_PLACEHOLDERS, SPECIAL_TOKENS, build_tokenizer, chat_template
from mmdpo.tiny.vision import (
    VLM_FAMILIES,
    save_tiny_vlm,
    tiny_vlm,
    tiny_vlm_config_and_processor,
)

__all__ = [
    "CAUSAL_LM_FAMILIES",
    "IMAGE_PLACEHOLDERS",
    "SPECIAL_TOKENS",
    "VLM_FAMILIES",
    "build_tokenizer",
    "chat_template",
    "make_image",
    "random_image",
    "save_tiny_causal_lm",
    "save_tiny_vlm",
    "sharpen_attention",
    "tiny_causal_lm",
    "tiny_causal_lm_config",
    "tiny_reward_model",
    "tiny_vlm",
    "tiny_vlm_config_and_processor",
]
