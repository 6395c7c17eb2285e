"""Chat messages as plain text: the one helper every layer uses (imports nothing of mmdpo).

A message's ``content`` is a string or a list of parts (``{"type": "text", "text": ...}``,
``{"type": "image"}``), as transformers' chat templates expect.
"""

from __future__ import annotations

from typing import Any


def content_text(content: Any) -> str:
    """The text of a message content: a string as is, else its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def text_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with list contents flattened to their text (for text-only templates)."""
    return [
        {**message, "content": content_text(message.get("content", ""))} for message in messages
    ]


def has_text(content: Any) -> bool:
    """Whether a content holds any non-blank text (in any part that carries ``text``)."""
    if isinstance(content, str):
        return bool(content.strip())
    return any(str(part.get("text", "")).strip() for part in content)
