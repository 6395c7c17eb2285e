"""Today's generation: transformers' ``model.generate`` over left-padded batches, greedy or
sampled, cut at stop strings. ``mmdpo.inference.generate_texts`` is the one place that picks
this implementation; use the interface there, not this module.

Chat prompts are rendered with the model's template (a base model without one gets the
engine's plain ``User: ... Assistant:`` fallback), batched longest first (less padding),
left-padded so that generated tokens follow every prompt directly, and decoded up to the
first EOS; a response is cut before the first stop string.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mmdpo.data.transform import FALLBACK_CHAT_TEMPLATE
from mmdpo.images import open_image
from mmdpo.messages import text_only


def tokenizer_of(processing: Any, is_vlm: bool) -> Any:
    """The tokenizer of a processor (VLM), or the tokenizer itself (text)."""
    return processing.tokenizer if is_vlm else processing


def render_prompt(processing: Any, prompt: Any, *, is_vlm: bool) -> str:
    """The prompt's messages through the chat template, ending with the assistant's opening.

    Text models get list contents flattened to their text; a tokenizer without a chat
    template (a base model) gets the engine's plain ``User: ... Assistant:`` fallback.
    """
    messages = prompt.messages if is_vlm else text_only(prompt.messages)
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if getattr(processing, "chat_template", None) is None:
        kwargs["chat_template"] = FALLBACK_CHAT_TEMPLATE
    return processing.apply_chat_template(messages, **kwargs)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest stop string (the stop string itself removed)."""
    cut = min((index for s in stop if s and (index := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the generation config's."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for token in [value] if isinstance(value, int) else list(value or []):
            if token not in ids:
                ids.append(int(token))
    return ids


def encode_batch(
    processing: Any, texts: list[str], prompts: list[Any], is_vlm: bool
) -> dict[str, torch.Tensor]:
    """Left-padded inputs for one batch; images through the processor for VLMs."""
    tokenizer = tokenizer_of(processing, is_vlm)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must follow every prompt directly
    try:
        if is_vlm and prompts[0].images:
            images = [[open_image(image) for image in prompt.images] for prompt in prompts]
            return dict(processing(text=texts, images=images, padding=True, return_tensors="pt"))
        return dict(tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt"))
    finally:
        tokenizer.padding_side = previous_side


def batches(
    prompts: list[Any], texts: list[str], batch_size: int, is_vlm: bool
) -> Iterator[list[int]]:
    """Index batches, longest prompts first (less padding); VLM batches never mix prompts
    with and without images, which processors cannot pad together."""
    order = sorted(range(len(prompts)), key=lambda i: (bool(prompts[i].images), -len(texts[i])))
    batch: list[int] = []
    for index in order:
        if batch and (
            len(batch) == batch_size
            or (is_vlm and bool(prompts[batch[0]].images) != bool(prompts[index].images))
        ):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _settings(
    model: Any, tokenizer: Any, *, max_new_tokens: int, stop: Sequence[str], greedy: bool,
    temperature: float, top_p: float,
) -> dict[str, Any]:  # fmt: skip
    settings: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": not greedy,
        "eos_token_id": eos_token_ids(model, tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if greedy:  # a checkpoint's sampling defaults would only raise warnings
        settings.update(temperature=None, top_p=None, top_k=None)
    else:
        settings.update(temperature=temperature, top_p=top_p)
    if stop:
        settings.update(stop_strings=list(stop), tokenizer=tokenizer)
    return settings


def _until_eos(tokens: list[int], eos: list[int]) -> list[int]:
    """Generated ids up to and including the first EOS (later ones are padding)."""
    for position, token in enumerate(tokens):
        if token in eos:
            return tokens[: position + 1]
    return tokens


def throughput(n: int, seconds: float, new_tokens: int) -> dict[str, Any]:
    return {
        "n": n,
        "seconds": round(seconds, 3),
        "samples_per_s": round(n / seconds, 4) if seconds else float("nan"),
        "new_tokens": new_tokens,
        "tokens_per_s": round(new_tokens / seconds, 2) if seconds else float("nan"),
    }


@torch.inference_mode()
def generate(
    model: Any,
    processing: Any,
    prompts: Sequence[Any],
    *,
    is_vlm: bool,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    num_samples: int = 1,
    batch_size: int = 8,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    progress: bool = True,
    desc: str = "generating",
) -> tuple[list[str], dict[str, Any]]:
    """``num_samples`` responses to each prompt, prompt by prompt, and throughput statistics.

    Each prompt is repeated ``num_samples`` times (the copies share no computation here); the
    responses come back flat: prompt ``i``'s at ``i * num_samples ... + num_samples - 1``.
    ``stats`` holds ``n`` (responses), ``seconds``, ``samples_per_s``, ``new_tokens``
    (generated, EOS included) and ``tokens_per_s``.
    """
    from tqdm.auto import tqdm

    model.eval()
    prompts = [prompt for prompt in prompts for _ in range(num_samples)]
    tokenizer = tokenizer_of(processing, is_vlm)
    texts = [render_prompt(processing, prompt, is_vlm=is_vlm) for prompt in prompts]
    settings = _settings(
        model, tokenizer, max_new_tokens=max_new_tokens, stop=stop, greedy=greedy,
        temperature=temperature, top_p=top_p,
    )  # fmt: skip
    device = next(model.parameters()).device
    responses: list[str] = [""] * len(prompts)
    new_tokens, start = 0, time.perf_counter()
    bar = tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress)
    for batch in batches(prompts, texts, batch_size, is_vlm):
        inputs = encode_batch(
            processing, [texts[i] for i in batch], [prompts[i] for i in batch], is_vlm
        )
        inputs = {key: value.to(device) for key, value in inputs.items()}
        output = model.generate(**inputs, **settings)
        generated = output[:, inputs["input_ids"].shape[1] :]
        for row, index in enumerate(batch):
            tokens = _until_eos(generated[row].tolist(), settings["eos_token_id"])
            new_tokens += len(tokens)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            responses[index] = cut_at_stop(text, stop).strip()
        done = bar.n + len(batch)
        bar.set_postfix(samples_per_s=f"{done / (time.perf_counter() - start):.3f}", refresh=False)
        bar.update(len(batch))
    bar.close()
    return responses, throughput(len(prompts), time.perf_counter() - start, new_tokens)
