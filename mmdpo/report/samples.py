"""``samples.jsonl``: a few prompts answered by the trained model and by its base, for the report.

At the end of a run the trainer picks ``train.samples`` held-out pairs (training pairs when
there is no held-out data, marked ``"split": "train"``) and generates, greedily, the policy's
answer (adapter on) and, for LoRA runs, the base model's (adapter off: the reference). Images
are stored as small inline thumbnails so the report needs nothing else from the data.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmdpo.types import PreferenceSample

THUMBNAIL_SIDE = 256
MAX_NEW_TOKENS = 128


def thumbnail_data_uri(image: Any, side: int = THUMBNAIL_SIDE) -> str:
    """A ``data:`` URI of the image scaled to at most ``side`` pixels (PNG, JPEG if smaller)."""
    from mmdpo.images import open_image

    picture = open_image(image)
    picture.thumbnail((side, side))
    encoded = {}
    for kind, options in (("png", {"optimize": True}), ("jpeg", {"quality": 85})):
        buffer = io.BytesIO()
        picture.save(buffer, format=kind.upper(), **options)
        encoded[kind] = buffer.getvalue()
    kind = min(encoded, key=lambda name: len(encoded[name]))
    return f"data:image/{kind};base64," + base64.b64encode(encoded[kind]).decode("ascii")


def prompt_text(sample: PreferenceSample) -> str:
    """The prompt's turns as plain text ("user: ..."), image parts shown as ``<image>``."""
    lines = []
    for message in sample.prompt:
        content = message.get("content", "")
        if not isinstance(content, str):
            content = "".join(
                part.get("text", "") if part.get("type") == "text" else "<image>"
                for part in content
                if isinstance(part, dict)
            )
        lines.append(f"{message.get('role', 'user')}: {content}")
    return "\n".join(lines)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for token in [value] if isinstance(value, int) else list(value or []):
            if int(token) not in ids:
                ids.append(int(token))
    return ids


def _generate(model: Any, transform: Any, sample: PreferenceSample, max_new_tokens: int) -> str:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in transform.generation_inputs(sample).items()}
    tokenizer = transform.tokenizer
    eos = _eos_ids(model, tokenizer)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0],
    )
    tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    for position, token in enumerate(tokens):
        if token in eos:
            tokens = tokens[:position]
            break
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def pick_samples(
    samples: Sequence[PreferenceSample], used_ids: set[str], count: int
) -> list[PreferenceSample]:
    """Up to ``count`` of the samples the run used, taken in turn from each (modality, source)
    group so that a mixed run shows every kind of pair."""
    groups: dict[tuple[str, str], list[PreferenceSample]] = {}
    for sample in samples:
        if sample.id in used_ids:
            groups.setdefault((sample.modality, sample.source), []).append(sample)
    picked: list[PreferenceSample] = []
    queues = [list(reversed(members)) for _, members in sorted(groups.items())]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop())
    return picked


def token_budget(transform: Any, samples: Sequence[PreferenceSample]) -> int:
    """New tokens allowed per answer: a little over the longest chosen response, at most 128."""
    longest = max((len(transform.tokenizer(s.chosen)["input_ids"]) for s in samples), default=0)
    return max(16, min(MAX_NEW_TOKENS, longest + 8))


@torch.no_grad()
def write_samples(
    path: str | Path,
    model: Any,
    transform: Any,
    samples: Sequence[PreferenceSample],
    *,
    split: str,
    step: int,
    with_base: bool,
    base_context: Any = None,
    max_new_tokens: int | None = None,
) -> Path:
    """Generate the policy's (and, with ``with_base``, the base model's) answer to each
    sample's prompt; write one JSON line per sample.

    Args:
        model: the trained model (unwrapped); put in eval mode here.
        transform: the run's ``PairTransform`` (chat template, processor).
        samples: raw samples (scores before calibration).
        split: "eval" (held-out) or "train" (when the run had no held-out data).
        base_context: a context manager factory ``base_context(model)`` that switches the
            adapter off (``mmdpo.reference.adapter_disabled``).
        max_new_tokens: the cap per answer (default: ``token_budget``).
    """
    model.eval()
    budget = max_new_tokens or token_budget(transform, samples)
    path = Path(path)
    with open(path, "w", encoding="utf-8") as handle:
        for sample in samples:
            started = time.perf_counter()
            record: dict[str, Any] = {
                "id": sample.id,
                "split": split,
                "modality": sample.modality,
                "source": sample.source,
                "prompt": prompt_text(sample),
                "images": [thumbnail_data_uri(image) for image in sample.images],
                "chosen": sample.chosen,
                "rejected": sample.rejected,
                "score_chosen": _finite_or_none(sample.score_chosen),
                "score_rejected": _finite_or_none(sample.score_rejected),
                "policy": _generate(model, transform, sample, budget),
            }
            if with_base and base_context is not None:
                with base_context(model) as base:
                    record["base"] = _generate(base, transform, sample, budget)
            record["generation"] = {
                "step": step,
                "greedy": True,
                "max_new_tokens": budget,
                "seconds": round(time.perf_counter() - started, 3),
            }
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return path
