"""The prompts file of ``mmdpo pairs``: one prompt per row (JSON, JSONL or Parquet), with the
columns the scorers read kept beside it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdpo.messages import has_text

PROMPT_KEYS = ("prompt", "problem", "question")
ID_KEYS = ("id", "prompt_id", "idx")
IMAGE_KEYS = ("images", "image")


@dataclass
class PromptItem:
    """One prompt to sample from.

    Attributes:
        id: the row's id (``id``, ``prompt_id`` or ``idx``), else ``STEM:LINE``.
        prompt: chat messages (a string prompt is one user turn).
        images: absolute image paths (relative ones resolved against the prompts file).
        fields: the row's columns (gold answer, instructions, known objects, ...).
        where: ``FILE:LINE`` for messages.
    """

    id: str
    prompt: list[dict[str, Any]]
    images: list[Any]
    fields: dict[str, Any]
    where: str

    def extras(self) -> dict[str, Any]:
        """The row's columns other than the id, the prompt and the images (kept in meta)."""
        used = (*PROMPT_KEYS, *ID_KEYS, *IMAGE_KEYS)
        return {key: value for key, value in self.fields.items() if key not in used}


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Prompt rows from a JSON/JSONL/Parquet file: an id, ``prompt`` (string or messages),
    ``problem`` or ``question``, optional ``images``, and any columns the scorers read.

    Raises:
        ValueError: a bad row, as ``FILE:LINE: FIELD: what is wrong``.
    """
    from data_adapters.fields import FieldError, attach_images, first_present, to_messages
    from data_adapters.images import ImageRefError, resolve_image
    from data_adapters.loaders import RowError, describe_source, read_rows

    info = describe_source(path)
    items, seen = [], Counter()
    for line, row in read_rows(path):
        where = f"{info.label}:{line}"
        if isinstance(row, RowError):
            raise ValueError(f"{where}: {row.field}: {row.message}")
        try:
            key = first_present(row, *PROMPT_KEYS)
            if key is None:
                raise FieldError("prompt", f"missing field (one of {', '.join(PROMPT_KEYS)})")
            messages = to_messages(row[key], key)
            image_key = first_present(row, *IMAGE_KEYS)
            images = []
            if image_key:
                values = row[image_key] if isinstance(row[image_key], list) else [row[image_key]]
                for index, value in enumerate(values):
                    try:
                        images.append(resolve_image(value, info.base_dir))
                    except ImageRefError as error:
                        raise FieldError(f"{image_key}[{index}]", str(error)) from None
                messages = attach_images(messages, len(images), key)
        except FieldError as error:
            raise ValueError(f"{where}: {error.field}: {error.message}") from None
        if not any(has_text(message["content"]) for message in messages):
            raise ValueError(f"{where}: {key}: empty prompt")
        id_key = first_present(row, *ID_KEYS)
        sample_id = str(row[id_key]) if id_key else f"{info.stem}:{line}"
        seen[sample_id] += 1
        if seen[sample_id] > 1:
            sample_id = f"{sample_id}#{seen[sample_id]}"
        items.append(PromptItem(sample_id, messages, images, dict(row), where))
    if not items:
        raise ValueError(f"{info.label}: no prompts")
    return items
