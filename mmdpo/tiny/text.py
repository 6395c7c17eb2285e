"""Tiny causal language models and a tiny reward model, built from configs with random weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mmdpo.tiny.tokenizer import build_tokenizer

CAUSAL_LM_FAMILIES = ("llama", "qwen2")

# Shared by every tiny text model, and by the language half of the tiny VLMs.
TEXT_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in the real models
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}


def token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The vocabulary size and the bos/eos/pad ids a model config needs."""
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def seeded_init(seed: int, build):
    """Call `build()` under `torch.manual_seed(seed)` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# Scaling q and k by 16 multiplies attention logits by 256: at the default init (std 0.02)
# they are ~0.03 and attention is nearly uniform, so a one-token position or mask error
# changes log-probs by less than fp32 noise; after it the logits' spread is several units.
SHARP_ATTENTION_SCALE = 16.0


def sharpen_attention(model: PreTrainedModel, scale: float = SHARP_ATTENTION_SCALE) -> int:
    """Scale the language model's query and key projections by ``scale``, in place.

    Numerical tests of masks and positions need attention that depends strongly on which
    tokens are visible and where; vision towers are left as they are. Returns how many
    projections were scaled.
    """
    scaled = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if not name.endswith(("q_proj", "k_proj")) or "vision" in name or "visual" in name:
                continue
            module.weight.mul_(scale)
            if getattr(module, "bias", None) is not None:
                module.bias.mul_(scale)
            scaled += 1
    return scaled


def tiny_causal_lm_config(family: str = "llama", tokenizer=None, **overrides):
    """The config of a tiny causal LM of `family` ("llama" or "qwen2")."""
    if family not in CAUSAL_LM_FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(CAUSAL_LM_FAMILIES)}")
    tokenizer = tokenizer or build_tokenizer()
    return AutoConfig.for_model(family, **{**TEXT_SIZES, **token_ids(tokenizer), **overrides})


def tiny_causal_lm(
    family: str = "llama", tokenizer=None, seed: int = 0, sharp: bool = False, **overrides
) -> PreTrainedModel:
    """A randomly initialised tiny `AutoModelForCausalLM` (hidden 64, 2 layers, 4 heads).

    `overrides` are config fields (e.g. `num_hidden_layers=1`, `attn_implementation="eager"`).
    The vocabulary is `len(tokenizer)`; bos/eos/pad ids come from the tokenizer. `sharp`
    applies :func:`sharpen_attention` (for numerical tests of masks and positions).
    """
    config = tiny_causal_lm_config(family, tokenizer, **overrides)
    model = seeded_init(seed, lambda: AutoModelForCausalLM.from_config(config))
    if sharp:
        sharpen_attention(model)
    return model


def save_tiny_causal_lm(
    directory: str | os.PathLike,
    family: str = "llama",
    tokenizer=None,
    seed: int = 0,
    sharp: bool = False,
    **overrides,
) -> Path:
    """Write a tiny causal LM (safetensors) and its tokenizer so `from_pretrained(directory)`
    loads both with the Auto classes. Returns the directory."""
    tokenizer = tokenizer or build_tokenizer()
    model = tiny_causal_lm(family, tokenizer, seed, sharp=sharp, **overrides)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def tiny_reward_model(tokenizer=None, seed: int = 0, **overrides) -> PreTrainedModel:
    """A tiny Llama `AutoModelForSequenceClassification` with one label (a scalar reward).

    `pad_token_id` is set, so it scores the last non-pad token of right-padded batches.
    """
    config = tiny_causal_lm_config("llama", tokenizer, num_labels=1, **overrides)
    return seeded_init(seed, lambda: AutoModelForSequenceClassification.from_config(config))
