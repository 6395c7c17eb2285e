"""Helpers the adapters share: field access with precise errors, scores, messages, images.

An adapter raises :class:`FieldError` naming the source field; the validation layer adds the
file, line and sample id, so every problem reads ``FILE:LINE: FIELD: what is wrong``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_adapters.images import ImageRefError, resolve_image
from mmdpo.calibration import MAX_ABS_SCORE
from mmdpo.types import Message

IMAGE_PLACEHOLDER = "<image>"
ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}
_MISSING = object()


class FieldError(ValueError):
    """One thing wrong with one field of a source row."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RowContext:
    """What an adapter knows about the row besides its content.

    Attributes:
        file: the data source as named in messages (a path, ``<memory>`` or a Hub name).
        line: 1-based line (text files) or row position (Parquet, lists, Hub).
        sample_id: the id the sample gets (from the row's id/prompt_id/idx, else stem:line).
        base_dir: folder that relative image paths are resolved against.
        source: the source name samples carry (calibration groups by it).
    """

    file: str
    line: int
    sample_id: str
    base_dir: Path | None
    source: str

    def meta(self, **extras: Any) -> dict[str, Any]:
        """The sample's meta: file and line first, then the source-specific extras."""
        return {"file": self.file, "line": self.line, **extras}


def get(row: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
    """``row[key]``; a missing or null value raises ``key: missing field`` unless a default
    is given."""
    value = row.get(key)
    if value is None:
        if default is _MISSING:
            raise FieldError(key, "missing field")
        return default
    return value


def first_present(row: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` whose value in ``row`` is not None."""
    return next((key for key in keys if row.get(key) is not None), None)


def text_of(value: Any, field: str) -> str:
    """A response or prompt text: a string, or a list of content parts whose text is joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        if any(part.get("type") not in ("text", None) for part in value):
            raise FieldError(field, "a response may only hold text parts")
        return "".join(str(part.get("text", "")) for part in value)
    raise FieldError(field, f"expected a string, got {type(value).__name__}")


def parse_score(row: dict[str, Any], key: str, *, required: bool = False) -> float | None:
    """A finite float from ``row[key]`` within +-``MAX_ABS_SCORE``; numeric strings are
    accepted, booleans are not."""
    value = row.get(key)
    if value is None:
        if required:
            raise FieldError(key, "missing field")
        return None
    return to_score(value, key)


def to_score(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise FieldError(field, f"score is not a number: {value!r}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise FieldError(field, f"score is not a number: {value!r}") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise FieldError(field, f"score is not a number: {type(value).__name__}")
    if math.isnan(number):
        raise FieldError(field, "score is NaN")
    if math.isinf(number):
        raise FieldError(field, f"score is infinite ({number})")
    if abs(number) > MAX_ABS_SCORE:
        raise FieldError(
            field,
            f"score too large in magnitude ({number:g}); scores must lie within "
            f"+-{MAX_ABS_SCORE:g} so that calibration and the float32 loss stay finite: "
            "rescale them",
        )
    return number


def parse_flag(row: dict[str, Any], key: str) -> bool | None:
    """An optional true/false flag: a bool, 0/1 or the strings true/false."""
    value = row.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FieldError(key, f"expected true or false, got {value!r}")


def to_messages(value: Any, field: str) -> list[Message]:
    """Chat messages from a string (one user turn) or a list of ``{role, content}`` or
    ShareGPT ``{from, value}`` dicts; roles human/gpt become user/assistant."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        kind = type(value).__name__
        raise FieldError(field, f"expected a string or a list of messages, got {kind}")
    messages = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"expected a message object, got {type(item).__name__}")
        role = item.get("role", item.get("from"))
        if role not in ROLES:
            valid = ", ".join(sorted(ROLES))
            raise FieldError(where, f"unknown role {role!r} (expected one of {valid})")
        content = item.get("content", item.get("value"))
        if content is None:
            raise FieldError(where, "message has no content")
        if not isinstance(content, (str, list)):
            kind = type(content).__name__
            raise FieldError(where, f"content must be a string or a list of parts, got {kind}")
        messages.append({"role": ROLES[role], "content": content})
    return messages


def response_text(value: Any, field: str) -> str:
    """One response: a string, a single assistant message, or a list of messages whose last
    is the assistant reply (the caller checks the earlier turns against the prompt)."""
    if isinstance(value, str):
        return value
    messages = to_messages(value, field)
    if not messages:
        raise FieldError(field, "empty list of messages")
    last = messages[-1]
    if last["role"] != "assistant":
        role = last["role"]
        raise FieldError(field, f"the last message must be the assistant reply, not {role!r}")
    return text_of(last["content"], field)


def prompt_and_responses(
    prompt: Any, chosen: Any, rejected: Any, *, prompt_field: str = "prompt"
) -> tuple[list[Message], str, str]:
    """Split a pair into prompt messages and two response texts.

    Handles the explicit form (``prompt`` given; responses are strings, one assistant
    message, or whole conversations that repeat the prompt) and the implicit form (no
    prompt: the shared beginning of ``chosen`` and ``rejected`` is the prompt).
    """
    if prompt is None:
        return _implicit_prompt(chosen, rejected)
    messages = to_messages(prompt, prompt_field)
    histories = [_history(chosen, "chosen"), _history(rejected, "rejected")]
    if histories[0] and histories[1] and _plain(histories[0]) != _plain(histories[1]):
        raise FieldError("rejected", "the turns before the reply differ from chosen's")
    history = histories[0] or histories[1]
    if history:
        # whole conversations: their earlier turns are the full prompt (system turns included)
        if _plain(history)[-1:] != _plain(messages)[-1:]:
            field = "chosen" if histories[0] else "rejected"
            message = f"the turns before the reply do not end with the {prompt_field}"
            raise FieldError(field, message)
        messages = history
    return messages, response_text(chosen, "chosen"), response_text(rejected, "rejected")


def _history(value: Any, field: str) -> list[Message]:
    if isinstance(value, list) and len(value) > 1:
        return to_messages(value, field)[:-1]
    return []


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[list[Message], str, str]:
    if isinstance(chosen, str) and isinstance(rejected, str):
        shared = _shared_text_prefix(chosen, rejected)
        if not shared.strip():
            raise FieldError("prompt", "missing field (and chosen and rejected share no prefix)")
        prompt = to_messages(shared.rstrip(), "prompt")
        return prompt, chosen[len(shared) :], rejected[len(shared) :]
    chosen_messages = to_messages(chosen, "chosen")
    rejected_messages = to_messages(rejected, "rejected")
    if not chosen_messages or not rejected_messages:
        raise FieldError("chosen" if not chosen_messages else "rejected", "empty list of messages")
    history, rest = chosen_messages[:-1], rejected_messages[:-1]
    if _plain(history) != _plain(rest):
        raise FieldError("rejected", "the turns before the reply differ from chosen's")
    if not history:
        raise FieldError("prompt", "missing field (and chosen has no turns before the reply)")
    return history, response_text(chosen, "chosen"), response_text(rejected, "rejected")


def _shared_text_prefix(first: str, second: str) -> str:
    """The common beginning, cut back to a whitespace boundary so no word is split."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    if length in (len(first), len(second)):
        return first[:length]
    while length > 0 and not first[length - 1].isspace():
        length -= 1
    return first[:length]


def _plain(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m["role"], _content_key(m["content"])) for m in messages]


def _content_key(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    return repr(content)


def resolve_images(value: Any, field: str, ctx: RowContext) -> list[Any]:
    """A row's image entry (one item or a list) as sample image values, nothing read."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    images = []
    for index, item in enumerate(items):
        try:
            images.append(resolve_image(item, ctx.base_dir))
        except ImageRefError as error:
            raise FieldError(f"{field}[{index}]", str(error)) from None
    return images


def attach_images(messages: list[Message], count: int, field: str) -> list[Message]:
    """Give the prompt exactly ``count`` image parts, in placeholder order.

    ``<image>`` placeholders in string contents become ``{"type": "image"}`` parts between
    ``{"type": "text"}`` parts. Without any placeholder or image part, the images go before
    the first user turn's text. More placeholders than images, or some but fewer, is an error.
    """
    converted = [dict(m, content=_split_placeholders(m["content"])) for m in messages]
    found = sum(_image_parts(m["content"]) for m in converted)
    if found > count:
        raise FieldError(
            field, f"{found} {IMAGE_PLACEHOLDER} placeholders but only {_n(count, 'image')}"
        )
    if 0 < found < count:
        raise FieldError(
            field, f"{_n(count, 'image')} but only {found} {IMAGE_PLACEHOLDER} placeholders"
        )
    if found == 0 and count > 0:
        index = next((i for i, m in enumerate(converted) if m["role"] == "user"), 0)
        content = converted[index]["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        converted[index]["content"] = [{"type": "image"} for _ in range(count)] + parts
    return converted


def _split_placeholders(content: Any) -> Any:
    if not isinstance(content, str) or IMAGE_PLACEHOLDER not in content:
        return content
    parts: list[dict[str, Any]] = []
    for piece in re.split(f"({re.escape(IMAGE_PLACEHOLDER)})", content):
        if piece == IMAGE_PLACEHOLDER:
            parts.append({"type": "image"})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def _image_parts(content: Any) -> int:
    if isinstance(content, str):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
