"""TRL's preference formats: standard or conversational, explicit or implicit prompt, images.

Standard: ``{"prompt": "...", "chosen": "...", "rejected": "..."}``. Conversational: the same
keys holding lists of ``{"role", "content"}`` messages. Implicit prompt: no ``prompt`` key;
the shared beginning of ``chosen`` and ``rejected`` is the prompt. Vision: an ``images`` (or
``image``) key; the prompt's ``{"type": "image"}`` parts or ``<image>`` placeholders mark
where they go. Optional: ``rejected_images``, ``score_chosen``, ``score_rejected``, and
``modality`` (text, math or vision; files written by ``mmdpo score`` / ``mmdpo pairs`` carry
it, so math pairs read back as math).
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
    prompt_and_responses,
    resolve_images,
)
from mmdpo.types import MODALITIES, PreferenceSample


def convert_trl(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One TRL preference row -> a sample (vision when it has images, else text)."""
    prompt, chosen, rejected = prompt_and_responses(
        row.get("prompt"), get(row, "chosen"), get(row, "rejected")
    )
    image_key = first_present(row, "images", "image")
    images = resolve_images(row.get(image_key), image_key, ctx) if image_key else []
    if image_key:
        prompt = attach_images(prompt, len(images), "prompt")
    rejected_images = None
    if row.get("rejected_images") is not None:
        rejected_images = resolve_images(row["rejected_images"], "rejected_images", ctx)
        if len(rejected_images) != len(images):
            raise FieldError(
                "rejected_images",
                f"{len(rejected_images)} images but the prompt has {len(images)}; "
                "both sides need the same number",
            )
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        images=images,
        rejected_images=rejected_images,
        score_chosen=parse_score(row, "score_chosen"),
        score_rejected=parse_score(row, "score_rejected"),
        modality=_modality(row, default="vision" if images else "text"),
        source=ctx.source,
        meta=ctx.meta(),
    )


def _modality(row: dict[str, Any], default: str) -> str:
    value = row.get("modality")
    if value is None:
        return default
    if value not in MODALITIES:
        raise FieldError("modality", f"{value!r} is not one of {', '.join(MODALITIES)}")
    return value
