"""LLaMA-Factory ranking rows (the Uni-DPO multimodal release uses the alpaca style).

Alpaca style: ``instruction`` (+ ``input``, joined by a newline), optional ``system`` and
``history`` (``[[query, reply], ...]``). ShareGPT style: ``conversations`` (or ``messages``)
of ``{"from": "human"|"gpt"|"system", "value": ...}`` ending with the user's turn.
Both: ``chosen``/``rejected`` (a string or a ``{"from": "gpt", "value": ...}`` message),
``images`` (paths relative to the data file), optional ``score_chosen``/``score_rejected``.
``<image>`` placeholders become image parts of the prompt in placeholder order.
"""

from __future__ import annotations

from typing import Any

from data_adapters.fields import (
    FieldError,
    RowContext,
    attach_images,
    first_present,
    get,
    parse_score,
    resolve_images,
    response_text,
    text_of,
    to_messages,
)
from mmdpo.types import Message, PreferenceSample


def convert_llamafactory(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One LLaMA-Factory ranking row -> a sample (vision when it has images)."""
    conversation_key = first_present(row, "conversations", "messages")
    if conversation_key:
        prompt = _sharegpt_prompt(row, conversation_key)
        prompt_field = conversation_key
    else:
        prompt = _alpaca_prompt(row)
        prompt_field = "instruction"
    image_key = first_present(row, "images", "image")
    images = resolve_images(row.get(image_key), image_key, ctx) if image_key else []
    prompt = attach_images(prompt, len(images), prompt_field)
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=prompt,
        chosen=response_text(get(row, "chosen"), "chosen"),
        rejected=response_text(get(row, "rejected"), "rejected"),
        images=images,
        score_chosen=parse_score(row, "score_chosen"),
        score_rejected=parse_score(row, "score_rejected"),
        modality="vision" if images else "text",
        source=ctx.source,
        meta=ctx.meta(),
    )


def _system(row: dict[str, Any]) -> list[Message]:
    system = row.get("system")
    return [{"role": "system", "content": text_of(system, "system")}] if system else []


def _alpaca_prompt(row: dict[str, Any]) -> list[Message]:
    query = text_of(get(row, "instruction"), "instruction")
    extra = row.get("input")
    if extra:
        query = f"{query}\n{text_of(extra, 'input')}"
    messages = _system(row)
    history = row.get("history") or []
    if not isinstance(history, list):
        kind = type(history).__name__
        raise FieldError("history", f"expected a list of [query, reply] pairs, got {kind}")
    for index, turn in enumerate(history):
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise FieldError(f"history[{index}]", "expected a [query, reply] pair")
        messages.append({"role": "user", "content": text_of(turn[0], f"history[{index}]")})
        messages.append({"role": "assistant", "content": text_of(turn[1], f"history[{index}]")})
    messages.append({"role": "user", "content": query})
    return messages


def _sharegpt_prompt(row: dict[str, Any], key: str) -> list[Message]:
    messages = to_messages(row[key], key)
    if not messages or messages[-1]["role"] != "user":
        raise FieldError(key, "the last turn must be the user's (from: human)")
    if messages[0]["role"] != "system":
        messages = _system(row) + messages
    return messages
