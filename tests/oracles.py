"""Reference paths for numerical tests: the engine's results must equal what these give.

- :func:`naive_forward_logits`: the whole batch in one forward with ``pixel_values`` passed
  for every row (each image encoded once per row), the way peers do it.
- :func:`plain_response_logp`: one (prompt, response) alone, one unpadded row, through the
  model's own forward with the processor's tensors as they come: no engine code at all.
"""

from __future__ import annotations

from typing import Any

import torch

from mmdpo.types import PreferenceBatch

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")


def naive_forward_logits(model: Any, batch: PreferenceBatch) -> torch.Tensor:
    """Logits of all 2B rows with pixel values passed for every row (shared images only)."""
    kwargs: dict[str, Any] = {}
    if batch.image_inputs:
        if batch.rejected_image_inputs:
            raise NotImplementedError("the naive forward covers shared images only")
        inputs = batch.image_inputs
        family = model.config.model_type
        if family in QWEN_VL:
            grid = inputs["image_grid_thw"]
            patches = grid.prod(-1).tolist()
            chunks = list(torch.split(inputs["pixel_values"], patches))
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
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kwargs
    )
    return out.logits


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
