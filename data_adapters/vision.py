"""Vision preference sets: RLAIF-V (one image, a question, chosen, rejected) and VLFeedback
(a prompt, an image, several completions rated per aspect by GPT-4V).

VLFeedback pairs: a completion's score is the mean of its numeric aspect ratings (ratings
that are empty or ``N/A`` are left out of the mean, other non-numeric ones are an error).
Chosen is the highest mean, rejected the lowest; on a tie the completion listed first wins
both times. A row whose rated completions all have the same mean has no preference and is
reported as invalid, as is one with fewer than two rated completions.
"""

from __future__ import annotations

from typing import Any

from data_adapters.fields import (
    FieldError,
    RowContext,
    attach_images,
    first_present,
    get,
    resolve_images,
    text_of,
    to_messages,
    to_score,
)
from mmdpo.types import PreferenceSample

_RLAIF_EXTRAS = ("ds_name", "origin_dataset", "origin_split")
_NOT_RATED = ("", "n/a", "na", "none")


def _images(row: dict[str, Any], ctx: RowContext, *keys: str) -> list[Any]:
    key = first_present(row, *keys)
    if key is None:
        raise FieldError(keys[0], "missing field")
    images = resolve_images(row[key], key, ctx)
    if not images:
        raise FieldError(key, "no image")
    return images


def convert_rlaif_v(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One RLAIF-V row -> a vision sample (``image`` bytes/struct, else ``image_path``)."""
    images = _images(row, ctx, "image", "image_path", "images")
    prompt = to_messages(text_of(get(row, "question"), "question"), "question")
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=attach_images(prompt, len(images), "question"),
        chosen=text_of(get(row, "chosen"), "chosen"),
        rejected=text_of(get(row, "rejected"), "rejected"),
        images=images,
        modality="vision",
        source=ctx.source,
        meta=ctx.meta(**{key: row[key] for key in _RLAIF_EXTRAS if row.get(key) is not None}),
    )


def convert_vlfeedback(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One VLFeedback row -> a vision sample: best-rated vs worst-rated completion."""
    images = _images(row, ctx, "images", "image", "img_path")
    prompt = to_messages(text_of(get(row, "prompt"), "prompt"), "prompt")
    rated = [c for c in _completions(get(row, "completions")) if c["score"] is not None]
    if len(rated) < 2:
        raise FieldError("completions", f"need at least 2 rated completions, got {len(rated)}")
    best = max(rated, key=lambda c: (c["score"], -c["index"]))
    worst = min(rated, key=lambda c: (c["score"], c["index"]))
    if best["score"] == worst["score"]:
        raise FieldError(
            "completions",
            f"all rated completions have the same mean rating ({best['score']:g}); no preference",
        )
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=attach_images(prompt, len(images), "prompt"),
        chosen=best["response"],
        rejected=worst["response"],
        images=images,
        score_chosen=best["score"],
        score_rejected=worst["score"],
        modality="vision",
        source=ctx.source,
        meta=ctx.meta(
            chosen_model=best["model"],
            rejected_model=worst["model"],
            ratings=[{k: c[k] for k in ("model", "score", "ratings")} for c in rated],
        ),
    )


def _completions(value: Any) -> list[dict[str, Any]]:
    """Completions as a list of dicts; Hub-loaded rows may hold them as a dict of lists."""
    if isinstance(value, dict):
        keys = list(value)
        columns = zip(*value.values(), strict=False)
        value = [dict(zip(keys, items, strict=False)) for items in columns]
    if not isinstance(value, list):
        raise FieldError("completions", f"expected a list, got {type(value).__name__}")
    completions = []
    for index, item in enumerate(value):
        where = f"completions[{index}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"expected an object, got {type(item).__name__}")
        ratings = _ratings(item.get("annotations") or {}, where)
        completions.append(
            {
                "index": index,
                "model": item.get("model"),
                "response": text_of(item.get("response") or "", f"{where}.response"),
                "ratings": ratings,
                "score": sum(ratings.values()) / len(ratings) if ratings else None,
            }
        )
    return completions


def _ratings(annotations: Any, where: str) -> dict[str, float]:
    if not isinstance(annotations, dict):
        raise FieldError(f"{where}.annotations", "expected an object of per-aspect ratings")
    ratings = {}
    for aspect, note in annotations.items():
        value = note.get("Rating", note.get("rating")) if isinstance(note, dict) else note
        if value is None or (isinstance(value, str) and value.strip().lower() in _NOT_RATED):
            continue
        ratings[aspect] = to_score(value, f"{where}.annotations.{aspect}")
    return ratings
