"""The benchmark's workload: models shaped like real ones (small enough for a few CPU cores),
a word-level tokenizer of 32k tokens, and synthetic preference pairs, all built offline.

The tokenizer maps the word ``w<i>`` to id ``i`` (``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3,
then the image tokens), splitting on whitespace, so a pair written as words tokenizes to exactly
the same ids in mmdpo and in TRL, with no merges across the prompt/response boundary.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VOCAB_SIZE = 32000
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
QWEN_IMAGE_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_IMAGE_TOKEN = "<image>"
SPECIALS = [PAD, BOS, EOS, UNK, *QWEN_IMAGE_TOKENS, LLAVA_IMAGE_TOKEN]
FIRST_WORD = len(SPECIALS)
IMAGE_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava": LLAVA_IMAGE_TOKEN,
}

PATCH_SIZE = 14
MAX_POSITIONS = 8192  # the prompt sweep goes to 4096 prompt tokens plus the responses


@dataclass(frozen=True)
class Sizes:
    """The shapes of one preset: a Llama/Qwen2-style decoder (GQA, untied head, 32k vocabulary)
    and, for the VLMs, a ViT on square images in 14 px patches."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    max_length: int
    image_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    weights_dtype: str = "float32"  # how the random weights are saved (bf16 halves a 1B model)

    def text_config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": MAX_POSITIONS,
            "tie_word_embeddings": False,
            "vocab_size": VOCAB_SIZE,
        }

    @property
    def patches_per_side(self) -> int:
        return self.image_size // PATCH_SIZE


PRESETS = {
    # 1/4 to 1/8 of a 1-2B model's width, full-length sequences and 224 px images.
    "full": Sizes(512, 1408, 8, 8, 2, 512, 224, 384, 6, 6),
    # The same shapes, shrunk so that every case runs in seconds (a smoke test of the script).
    "quick": Sizes(128, 352, 2, 4, 2, 128, 112, 64, 2, 4),
    # Smaller still, for the tests; every 4-bit layer's sides are multiples of 64, so that
    # bitsandbytes' CPU inference layout fits them (it crashes on other shapes).
    "tiny": Sizes(64, 128, 2, 2, 1, 64, 56, 32, 1, 2),
    # A 1B-class decoder (TinyLlama-1.1B's shape: 2048 wide, 22 layers, 32 heads with 4 KV
    # heads, MLP 5632, 32k vocabulary) and a 300M ViT, for the GPU run; saved in bf16.
    "gpu1b": Sizes(2048, 5632, 22, 32, 4, 512, 224, 1024, 16, 16, "bfloat16"),
}

# A template that writes the turns' text one after the other, separated by a space: the prompt
# is the user turn, the response the assistant turn, and nothing else is added.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- if not loop.first %} {% endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ image_placeholder }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{%- endfor -%}"
)


def chat_template(family: str | None) -> str:
    placeholder = IMAGE_PLACEHOLDERS.get(family or "", "")
    return "{%- set image_placeholder = '" + placeholder + "' -%}" + CHAT_TEMPLATE


def build_tokenizer(family: str | None = None) -> Any:
    """A fast word-level tokenizer: ``w<i>`` -> id ``i``; specials first."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(FIRST_WORD, VOCAB_SIZE)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=SPECIALS[4:],
        chat_template=chat_template(family),
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


def _token_ids(tokenizer: Any) -> dict[str, int]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _save(model: Any, folder: Path, sizes: Sizes) -> None:
    import torch

    dtype = getattr(torch, sizes.weights_dtype)
    model.to(device="cpu", dtype=dtype).save_pretrained(folder)


def _text_model(folder: Path, sizes: Sizes) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = build_tokenizer()
    config = AutoConfig.for_model("llama", **sizes.text_config(), **_token_ids(tokenizer))
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _save(model, folder, sizes)
    tokenizer.save_pretrained(folder)


def _qwen2_vl(folder: Path, sizes: Sizes) -> None:
    from transformers import (
        AutoModelForImageTextToText,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer("qwen2_vl")
    head_dim = sizes.hidden // sizes.heads
    half = head_dim // 2  # rotary frequencies, split over (time, height, width)
    section = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    config = Qwen2VLConfig(
        text_config={**sizes.text_config(), **_token_ids(tokenizer), "rope_parameters": rope},
        vision_config={
            "depth": sizes.vision_layers,
            "embed_dim": sizes.vision_width,
            "num_heads": sizes.vision_heads,
            "mlp_ratio": 4,
            "hidden_size": sizes.hidden,
            "patch_size": PATCH_SIZE,
        },
        **ids,
    )
    pixels = sizes.image_size * sizes.image_size
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=PATCH_SIZE, merge_size=2),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=PATCH_SIZE, merge_size=2),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _save(model, folder, sizes)
    processor.save_pretrained(folder)


def _llava(folder: Path, sizes: Sizes) -> None:
    from transformers import (
        AutoModelForImageTextToText,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer("llava")
    vision = CLIPVisionConfig(
        hidden_size=sizes.vision_width,
        intermediate_size=4 * sizes.vision_width,
        projection_dim=sizes.vision_width,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.vision_heads,
        image_size=sizes.image_size,
        patch_size=PATCH_SIZE,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config={"model_type": "llama", **sizes.text_config(), **_token_ids(tokenizer)},
        image_token_index=tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN),
        image_seq_length=sizes.patches_per_side**2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": sizes.image_size},
            crop_size={"height": sizes.image_size, "width": sizes.image_size},
        ),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _save(model, folder, sizes)
    processor.save_pretrained(folder)


BUILDERS = {"text": _text_model, "qwen2_vl": _qwen2_vl, "llava": _llava}


def model_folder(root: Path, family: str, preset: str, image_size: int | None = None) -> Path:
    """Build the model of ``family`` (text, qwen2_vl, llava) once under ``root``; seeded.

    ``image_size`` (px) other than the preset's gives a model of its own: the VLM processors
    are saved with their image size (Qwen2-VL's pixel budget, CLIP's crop)."""
    import torch

    sizes = PRESETS[preset]
    suffix = ""
    if family != "text" and image_size and image_size != sizes.image_size:
        sizes = dataclasses.replace(sizes, image_size=image_size)
        suffix = f"-{image_size}px"
    folder = root / f"model-{preset}-{family}{suffix}"
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # Random init of a 1B model takes minutes on CPU and seconds on a GPU.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        BUILDERS[family](folder, sizes)
    return folder


@dataclass
class PairText:
    """One synthetic pair as words: prompt, chosen and rejected (each response ends with EOS),
    and the prompt's images (files), which come before its text."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    images: list[str] = field(default_factory=list)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(FIRST_WORD, VOCAB_SIZE)}" for _ in range(n))


def write_image(path: Path, size: int, rng: random.Random) -> str:
    """A ``size`` x ``size`` RGB image of 32 x 32 random blocks (PNG), once. The random
    numbers are drawn either way, so the pairs do not depend on which images exist."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = bytes(rng.randrange(256) for _ in range(3 * 32 * 32))
    if not path.is_file():
        Image.frombytes("RGB", (32, 32), pixels).resize((size, size)).save(path)
    return str(path)


def synthetic_pairs(
    n: int, *, sizes: Sizes, vision: bool, image_dir: Path | None = None, seed: int = 0
) -> list[PairText]:
    """``n`` pairs whose prompt + longer response fill 60-100 % of ``max_length`` tokens.

    Text: prompt 35-55 % of the pair's budget, each response a third to all of the rest.
    Vision: an image (up to ``patches_per_side**2`` tokens: LLaVA's count; Qwen2-VL merges
    2 x 2 patches) and a text prompt of 1/16-1/8 of ``max_length``. Responses end with ``</s>``.
    """
    max_length = sizes.max_length
    rng = random.Random(seed)
    pairs = []
    for index in range(n):
        budget = int(max_length * rng.uniform(0.6, 1.0))
        images = []
        if vision:
            prompt_len = rng.randint(max_length // 16, max_length // 8)
            budget -= sizes.patches_per_side**2
            images.append(write_image(image_dir / f"image-{index}.png", sizes.image_size, rng))
        else:
            prompt_len = int(budget * rng.uniform(0.35, 0.55))
        room = max(8, budget - prompt_len - 1)
        chosen_len = rng.randint(room // 3, room)
        rejected_len = rng.randint(room // 3, room)
        pairs.append(
            PairText(
                id=f"pair-{index}",
                prompt=_words(rng, prompt_len),
                chosen=_words(rng, chosen_len) + " " + EOS,
                rejected=_words(rng, rejected_len) + " " + EOS,
                images=images,
            )
        )
    return pairs


def save_pairs(pairs: list[PairText], path: Path) -> None:
    path.write_text("\n".join(json.dumps(p.__dict__) for p in pairs) + "\n", encoding="utf-8")


def load_pairs(path: Path) -> list[PairText]:
    pairs = []
    for line in path.read_text().splitlines():
        if not line:
            continue
        row = json.loads(line)
        if "image" in row:  # files written before multi-image prompts
            image = row.pop("image")
            row["images"] = [image] if image else []
        pairs.append(PairText(**row))
    return pairs
