"""Test oracles: the slow, obvious computations the engine's fast paths are checked against.

- ``naive_token_logps``: the full fp32 (N, T, V) log-softmax, shifted by one, that the
  engine's chunked log-probs must equal without ever holding it.
- ``naive_forward_logits``: every row gets its pair's pixel values (images encoded twice),
  what the engine's image-once forward must equal.
- ``pair_logps``: summed response log-probs of a batch from its full logits.
- ``plain_response_logp``: one (prompt, response) alone, one unpadded row, through the
  model's own forward with the processor's tensors as they come: no engine code at all.

None of this is engine code: the engine never computes full logits for the loss.
"""

from __future__ import annotations

from typing import Any

import torch

from mmdpo.forward import PairLogps
from mmdpo.types import PreferenceBatch

QWEN_VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def naive_token_logps(logits, labels, loss_mask) -> torch.Tensor:
    """Full fp32 log-softmax, shifted by one, zero at non-targets and at position 0. (N, T)"""
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logps.gather(-1, labels[:, 1:, None].clamp(min=0)).squeeze(-1)
    out = torch.zeros(labels.shape, dtype=torch.float32)
    out[:, 1:] = picked * loss_mask[:, 1:]
    return out


def naive_sequence_logps(logits, labels, loss_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed target log-probs, target counts) per row, from the full logits. (N,) each"""
    sums = naive_token_logps(logits, labels, loss_mask).sum(dim=1)
    return sums, loss_mask[:, 1:].sum(dim=1).to(torch.float32)


def pair_logps(logits: torch.Tensor, batch: PreferenceBatch) -> PairLogps:
    """Summed response log-probs and token counts from the logits of all 2B rows."""
    sums, counts = naive_sequence_logps(logits, batch.input_ids, batch.loss_mask)
    n = batch.num_pairs
    return PairLogps(sums[:n], sums[n:], counts[:n], counts[n:])


def naive_forward_logits(model: Any, batch: PreferenceBatch) -> torch.Tensor:
    """Pixel values passed for every row, so each image is encoded twice (shared images
    only). Shape: (2B, T, V)"""
    kwargs: dict[str, Any] = {}
    if batch.image_inputs:
        if batch.rejected_image_inputs:
            raise NotImplementedError("the naive forward covers shared images only")
        kwargs = _pixels_for_every_row(model, batch)
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kwargs
    )
    return out.logits


def _pixels_for_every_row(model: Any, batch: PreferenceBatch) -> dict[str, Any]:
    inputs = batch.image_inputs
    family = getattr(model.config, "model_type", "")
    kwargs: dict[str, Any] = {}
    if family in QWEN_VL_FAMILIES:
        grid = inputs["image_grid_thw"]
        chunks = list(torch.split(inputs["pixel_values"], grid.prod(-1).tolist()))
        kwargs["pixel_values"] = torch.cat(chunks + chunks)
        kwargs["image_grid_thw"] = torch.cat([grid, grid])
        kwargs["mm_token_type_ids"] = (batch.input_ids == model.config.image_token_id).int()
    elif family == "idefics3":
        # (2B rows, max images per row, C, H, W), zero images as padding (the model drops
        # all-zero images): each row gets its own pair's images.
        for key in ("pixel_values", "pixel_attention_mask"):
            if key not in inputs:
                continue
            rows = [
                inputs[key][batch.image_pairs == (row % batch.num_pairs)]
                for row in range(2 * batch.num_pairs)
            ]
            most = max(r.shape[0] for r in rows)
            kwargs[key] = torch.stack(
                [torch.cat([r, r.new_zeros((most - r.shape[0], *r.shape[1:]))]) for r in rows]
            )
    else:
        kwargs["pixel_values"] = torch.cat([inputs["pixel_values"]] * 2)
    return kwargs


def plain_response_logp(
    model: Any,
    processing: Any,
    prompt_text: str,
    response_ids: list[int],
    images: list[Any] | None = None,
) -> tuple[float, list[int]]:
    """Summed log-prob of ``response_ids`` after ``prompt_text`` (with its ``images``), one row.

    The prompt goes through the processor (images included) or the tokenizer exactly as a user
    of transformers would call it; the response ids follow; every per-token tensor the
    processor returned (``mm_token_type_ids``) is extended with zeros over the response; the
    model runs on that single unpadded row. Returns the sum (float64) and the prompt ids, so
    the caller can check that the engine scored the same tokens.
    """
    if images:
        pictures = [image.convert("RGB") for image in images]  # PIL images
        inputs = dict(processing(text=[prompt_text], images=[pictures], return_tensors="pt"))
    else:
        tokenizer = getattr(processing, "tokenizer", processing)
        inputs = dict(tokenizer([prompt_text], add_special_tokens=False, return_tensors="pt"))
    prompt_ids = inputs["input_ids"][0].tolist()
    response = torch.tensor([response_ids], dtype=torch.long)
    length = len(prompt_ids) + len(response_ids)
    tails = {"input_ids": response, "attention_mask": torch.ones_like(response)}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            tail = tails.get(key, torch.zeros_like(response)).to(inputs[key].dtype)
            inputs[key] = torch.cat([inputs[key], tail], dim=1)
    assert inputs["input_ids"].shape == (1, length)
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0].double()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    targets = inputs["input_ids"][0, 1:]
    token_logps = logps.gather(-1, targets[:, None])[:, 0]
    return float(token_logps[len(prompt_ids) - 1 :].sum()), prompt_ids
