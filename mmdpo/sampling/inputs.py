"""Prompts in, model inputs out: prompts as ``ChatPrompt``, position ids, the model's call.

Rendering, encoding and EOS ids are today's generation's (``mmdpo.generation``): the chat
template with the assistant's opening, left-padded batches, images through the processor. So
both paths feed the model the same token ids. A prompt may also come already rendered (text).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from mmdpo.generation import render_prompt


@dataclass
class ChatPrompt:
    """What the model is asked.

    Attributes:
        messages: chat messages (a message with an image has list content with one
            ``{"type": "image"}`` per image), or None when ``text`` is given.
        text: the prompt already rendered (template applied), or None.
        images: PIL images, paths or bytes, in the order of the image placeholders.
    """

    messages: list[dict[str, Any]] | None = None
    text: str | None = None
    images: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a prompt has either messages or rendered text, not both or neither")


def as_prompt(item: Any) -> ChatPrompt:
    """A ``ChatPrompt`` from one: a rendered string, a list of messages, or any object with
    ``messages`` (and optionally ``images``) such as ``eval.base.Prompt``."""
    if isinstance(item, ChatPrompt):
        return item
    if isinstance(item, str):
        return ChatPrompt(text=item)
    if isinstance(item, list):
        return ChatPrompt(messages=item)
    if hasattr(item, "messages"):
        return ChatPrompt(messages=list(item.messages), images=list(getattr(item, "images", [])))
    raise TypeError(f"a prompt is a string, a list of messages or a ChatPrompt, not {type(item)}")


def render(processing: Any, prompt: Any, *, is_vlm: bool) -> str:
    """The prompt's text: its own, or its messages rendered as today's generation renders
    them (``mmdpo.generation.render_prompt``)."""
    prompt = as_prompt(prompt)
    if prompt.text is not None:
        return prompt.text
    return render_prompt(processing, prompt, is_vlm=is_vlm)


# Settings of a checkpoint's generation config that ``model.generate`` would apply and this
# engine does not, with the value that means "off".
_UNSUPPORTED_GENERATION = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
}


def ignored_generation_settings(model: Any) -> dict[str, Any]:
    """The model's generation-config settings (repetition penalty, banned words, ...) that
    ``generate`` would apply but this engine ignores."""
    config = getattr(model, "generation_config", None)
    ignored = {}
    for name, off in _UNSUPPORTED_GENERATION.items():
        value = getattr(config, name, off)
        if value not in (off, None):
            ignored[name] = value
    return ignored


# ---------------------------------------------------------------------------- the model


def base_model(model: Any) -> Any:
    """The transformers model inside DDP-style and PEFT wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


@dataclass(frozen=True)
class ModelCall:
    """How to call one model's forward for prefill and decode.

    Attributes:
        cache_key: the forward's keyword for the cache (``cache`` in transformers >= 5.x,
            ``past_key_values`` before).
        keeps_logits: the forward takes ``logits_to_keep`` (logits of the last position only).
        rope_index: Qwen2-VL-style multimodal RoPE: the model's ``get_rope_index``, else None.
    """

    cache_key: str
    keeps_logits: bool
    rope_index: Any

    @classmethod
    def of(cls, model: Any) -> ModelCall:
        base = base_model(model)
        parameters = inspect.signature(base.forward).parameters
        cache_key = "cache" if "cache" in parameters else "past_key_values"
        inner = getattr(base, "model", None)
        return cls(
            cache_key, "logits_to_keep" in parameters, getattr(inner, "get_rope_index", None)
        )


def prefill_positions(
    call: ModelCall, inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids of a left-padded prefill batch, as ``generate`` computes them, and the
    position of each row's next token.

    Text positions count real tokens (``cumsum(mask) - 1``, pads at 0). Multimodal RoPE
    models get ``[text; temporal; height; width]`` rows (shape (4, P, T)) from their
    ``get_rope_index``, and their next position is shifted by the image's ``rope_deltas``.

    Returns:
        ``(position_ids, next_positions)``: shape (P, T) or (4, P, T), and shape (P,).
    """
    mask = inputs["attention_mask"]
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    next_positions = mask.long().sum(-1)
    if call.rope_index is None:
        return text, next_positions
    if inputs.get("image_grid_thw") is not None and inputs.get("mm_token_type_ids") is not None:
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values")}
        vision, deltas = call.rope_index(inputs["input_ids"], **extra)
        next_positions = next_positions + deltas.reshape(-1).to(next_positions.device)
    else:
        vision = text.unsqueeze(0).expand(3, -1, -1)
    return torch.cat([text.unsqueeze(0), vision.to(text.device)], dim=0), next_positions


def decode_positions(call: ModelCall, next_positions: torch.Tensor) -> torch.Tensor:
    """Position ids of one decode step. Shape: (S, 1), or (3, S, 1) for multimodal RoPE."""
    positions = next_positions.unsqueeze(-1)
    return positions.unsqueeze(0).expand(3, -1, -1) if call.rope_index is not None else positions


def forward(model: Any, call: ModelCall, cache: Any, **inputs: Any) -> torch.Tensor:
    """The model's next-token logits (float32), the cache filled in place. Shape: (B, V)."""
    if call.keeps_logits:
        inputs["logits_to_keep"] = 1
    output = model(**inputs, **{call.cache_key: cache}, use_cache=True)
    return output.logits[:, -1].float()


def group_key(prompt: ChatPrompt) -> bool:
    """Prompts that can share a prefill batch (processors cannot pad image and text-only
    prompts together)."""
    return bool(prompt.images)
