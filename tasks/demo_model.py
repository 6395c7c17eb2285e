"""The demo's model: a small Qwen2-VL built from a config with the project's tokenizer, a short
supervised warm-up that turns it into a policy.

The model is the test model of ``mmdpo.tiny`` resized (hidden 128 instead of 64; by default
no vision transformer blocks, only the patch embedding and the merger, the fastest choice) and
it keeps the real ``Qwen2VLProcessor``, set to resize a 224 px scene to 56 px: 4 x 4 patches of
14 px, 4 image tokens, one per quadrant of the scene. The patch embedding starts from a
deterministic init that reads colour (``init_patch_embedding``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, Qwen2VLConfig

from mmdpo.tiny import build_tokenizer, tiny_vlm_config_and_processor

FAMILY = "qwen2_vl"
IMAGE_PAD = "<|image_pad|>"


@dataclass
class ModelSize:
    """Sizes of the demo VLM's language model and vision tower."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    vision_width: int = 64
    vision_depth: int = 0
    image_side: int = 56
    """Pixels per side the processor resizes a scene to: 56 gives 4 x 4 patches of 14 px and
    4 image tokens, one per quadrant (one object); 112 gives 16 tokens."""


def build_demo_vlm(directory: str | Path, size: ModelSize, seed: int = 0) -> Path:
    """Write a randomly initialised demo VLM (safetensors) and its processor to ``directory``."""
    config, processor = tiny_vlm_config_and_processor(FAMILY, build_tokenizer())
    data = config.to_dict()
    head_dim = size.hidden_size // size.num_heads
    # Qwen2-VL's multimodal rotary splits head_dim / 2 frequencies over (time, height, width),
    # in the proportions of the test model's [2, 3, 3].
    frequencies = head_dim // 2
    mrope = [frequencies // 4, 3 * frequencies // 8]
    mrope.append(frequencies - sum(mrope))
    data["text_config"].update(
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=max(1, size.num_heads // 2),
    )
    data["text_config"]["rope_parameters"]["mrope_section"] = mrope
    data["text_config"].pop("layer_types", None)  # derived again from num_hidden_layers
    data["vision_config"].update(
        embed_dim=size.vision_width,
        hidden_size=size.hidden_size,
        num_heads=4,
        depth=size.vision_depth,
    )
    config = Qwen2VLConfig.from_dict(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    # Normalise pixels so that white, the background of every scene, is zero: the image
    # features then carry the shapes rather than the background, and a model this small learns
    # to look at them in a few hundred steps (with CLIP's statistics it did not in 300).
    processor.image_processor.image_mean = [1.0, 1.0, 1.0]
    processor.image_processor.image_std = [0.5, 0.5, 0.5]
    pixels = size.image_side * size.image_side
    processor.image_processor.size = {"shortest_edge": pixels, "longest_edge": pixels}
    for name in ("min_pixels", "max_pixels"):
        if hasattr(processor.image_processor, name):
            setattr(processor.image_processor, name, pixels)
    init_patch_embedding(model)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def init_patch_embedding(model: Any, scale: float = 1.0) -> None:
    """A deterministic, readable start for the vision side's patch embedding.

    Of its output channels, the first 3 are the patch's mean R, G and B, the next 12 the mean
    R, G and B of each of its four 7 x 7 corners (a coarse picture of where the patch is
    filled, which tells a circle's, a square's and a triangle's outlines apart), the rest zero
    (free to learn). Colour and rough shape are then linear in the first layer's output, so
    the model does not have to discover them from a random projection in a few hundred steps.
    """
    conv = model.model.visual.patch_embed.proj  # weight: [out, 3 colours, 2 frames, 14, 14]
    weight = torch.zeros_like(conv.weight)
    out, channels, frames, height, width = weight.shape
    if out < channels * 5:
        return
    for c in range(channels):
        weight[c, c] = scale / (frames * height * width)
        for corner in range(4):
            rows = slice(0, height // 2) if corner < 2 else slice(height // 2, height)
            cols = slice(0, width // 2) if corner % 2 == 0 else slice(width // 2, width)
            cells = frames * (height // 2) * (width // 2)
            weight[channels * (1 + corner) + c, c, :, rows, cols] = scale / cells
    with torch.no_grad():
        conv.weight.copy_(weight)


class Encoder:
    """Chat prompts with one image each -> model inputs, each image processed once.

    Expands the image placeholder as ``Qwen2VLProcessor`` does (one ``<|image_pad|>`` per
    merged 2 x 2 patch block), so the ids equal the processor's, at a fraction of its cost.
    """

    def __init__(self, processor: Any):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.merge = processor.image_processor.merge_size
        self._images: dict[Any, dict[str, torch.Tensor]] = {}

    def image(self, key: Any, load: Callable[[], Any]) -> dict[str, torch.Tensor]:
        """Pixel values and grid of the image called ``key``; ``load()`` opens it once."""
        if key not in self._images:
            out = self.processor.image_processor(images=[load()], return_tensors="pt")
            self._images[key] = {k: out[k] for k in ("pixel_values", "image_grid_thw")}
        return self._images[key]

    def prompt_ids(self, text: str, grid: torch.Tensor) -> list[int]:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}
        ]
        rendered = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        count = int(grid.prod()) // self.merge**2
        rendered = rendered.replace(IMAGE_PAD, IMAGE_PAD * count)
        return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id]

    def batch(self, rows: Sequence[tuple[list[int], list[int], dict]]) -> dict[str, torch.Tensor]:
        """rows of (prompt ids, answer ids, image inputs) -> right-padded inputs and labels
        (-100 on the prompt and padding)."""
        pad = self.tokenizer.pad_token_id
        length = max(len(p) + len(a) for p, a, _ in rows)
        ids, mask, labels = [], [], []
        for prompt, answer, _ in rows:
            seq = prompt + answer
            fill = [pad] * (length - len(seq))
            target = [-100] * len(prompt) + answer
            ids.append(seq + fill)
            mask.append([1] * len(seq) + [0] * len(fill))
            labels.append(target + [-100] * len(fill))
        input_ids = torch.tensor(ids)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.tensor(mask),
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),
            "pixel_values": torch.cat([img["pixel_values"] for _, _, img in rows]),
            "image_grid_thw": torch.cat([img["image_grid_thw"] for _, _, img in rows]),
            "labels": torch.tensor(labels),
        }


def supervised_warmup(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Any],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    log: Callable[[str], None] = print,
    stop_check: Callable[[int], bool] | None = None,
    check_every: int = 100,
) -> list[float]:
    """Full fine-tuning with AdamW (linear warm-up, cosine decay) on (scene, prompt, answer).

    With ``stop_check``, the learning rate stays constant after the warm-up, and training
    ends early at the first multiple of ``check_every`` steps where ``stop_check(step)`` is
    true. Returns the loss of each step. Seeded: the same inputs give the same model.
    """
    rows = []
    for example in examples:
        image = encoder.image(example.scene, example.scene.render)
        prompt = encoder.prompt_ids(example.prompt, image["image_grid_thw"])
        rows.append((prompt, encoder.answer_ids(example.answer), image))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if stop_check is not None:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(seed)
    order: list[int] = []
    losses = []
    model.train()
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            if len(order) < batch_size:
                order += rng.sample(range(len(rows)), len(rows))
            indices, order = order[:batch_size], order[batch_size:]
            batch = encoder.batch([rows[i] for i in indices])
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if stop_check is not None and (step + 1) % check_every == 0:
                if stop_check(step + 1):
                    break
                model.train()
            elif (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
                elapsed = time.perf_counter() - started
                log(f"  SFT step {step + 1}/{steps}: loss {loss:.3f} ({elapsed:.0f} s)")
    model.eval()
    return losses


def yes_no_accuracy(model: Any, encoder: Encoder, examples: Sequence[Any]) -> float:
    """Share of yes/no ``examples`` whose answer the model prefers: the first token of the
    target ("Y" of "Yes.") scores above the first token of the other answer."""
    first = {
        answer: encoder.tokenizer(answer, add_special_tokens=False)["input_ids"][0]
        for answer in ("Yes.", "No.")
    }
    rows, targets = [], []
    for example in examples:
        image = encoder.image(example.scene, example.scene.render)
        prompt = encoder.prompt_ids(example.prompt, image["image_grid_thw"])
        rows.append((prompt, encoder.answer_ids(example.answer), image))
        targets.append(example.answer == "Yes.")
    right = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            chunk = rows[start : start + 32]
            batch = encoder.batch(chunk)
            batch.pop("labels")
            logits = model(**batch).logits
            for offset, (prompt, _, _) in enumerate(chunk):
                scores = logits[offset, len(prompt) - 1]
                says_yes = bool(scores[first["Yes."]] > scores[first["No."]])
                right += says_yes == targets[start + offset]
    return right / len(rows)
