"""What ``mmdpo data inspect`` shows: counts per modality, score statistics per
(modality, source) group (also as training prints them: pairs, mean, std, tau_good), length
percentiles and a few rendered examples.

Pure functions over samples return data; :func:`format_inspection` turns it into text.
Token lengths need a model's template, so the CLI fills ``Inspection.token_lengths``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_adapters.images import describe_image
from mmdpo.calibration import CalibrationError, fit_calibration, format_groups
from mmdpo.types import PreferenceSample

PERCENTILES = (50, 90, 95, 99, 100)


@dataclass(frozen=True)
class Summary:
    """Summary statistics of a list of numbers."""

    count: int
    mean: float
    std: float
    min: float
    median: float
    max: float


@dataclass(frozen=True)
class ScoreGroup:
    """Scores of one (modality, source) group; ``inverted``: pairs scored chosen < rejected."""

    modality: str
    source: str
    pairs: int
    scored: int
    chosen: Summary | None
    rejected: Summary | None
    margin: Summary | None
    inverted: int


@dataclass
class Inspection:
    """Everything ``inspect`` reports; ``*_lengths`` map field -> percentile -> length."""

    total: int
    per_modality: dict[str, int]
    per_source: dict[str, int]
    with_images: int
    images: int
    score_groups: list[ScoreGroup]
    char_lengths: dict[str, dict[int, float]]
    examples: list[str]
    token_lengths: dict[str, dict[int, float]] | None = field(default=None)
    calibration_groups: str = ""
    """The groups as training prints them before its first step (``format_groups``)."""


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    median = statistics.median(values)
    return Summary(len(values), statistics.fmean(values), std, min(values), median, max(values))


def percentiles(values: Sequence[float], qs: Sequence[int] = PERCENTILES) -> dict[int, float]:
    """Percentiles by linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return {}
    ordered = sorted(values)
    result = {}
    for q in qs:
        rank = (len(ordered) - 1) * q / 100
        low, high = math.floor(rank), math.ceil(rank)
        result[q] = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return result


def score_groups(samples: Sequence[PreferenceSample]) -> list[ScoreGroup]:
    """Score statistics per (modality, source), the groups calibration works on."""
    grouped: dict[tuple[str, str], list[PreferenceSample]] = defaultdict(list)
    for sample in samples:
        grouped[(sample.modality, sample.source)].append(sample)
    groups = []
    for (modality, source), members in sorted(grouped.items()):
        scored = [s for s in members if s.has_scores]
        chosen = [float(s.score_chosen) for s in scored]
        rejected = [float(s.score_rejected) for s in scored]
        margins = [s.score_margin for s in scored]
        groups.append(
            ScoreGroup(
                modality,
                source,
                len(members),
                len(scored),
                summarize(chosen),
                summarize(rejected),
                summarize(margins),
                sum(1 for margin in margins if margin < 0),
            )
        )
    return groups


def prompt_text(sample: PreferenceSample) -> str:
    """The prompt as plain text: ``[role] content`` per turn, images as ``<image>``."""
    lines = []
    for message in sample.prompt:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                "<image>" if part.get("type") == "image" else str(part.get("text", ""))
                for part in content
            )
        lines.append(f"[{message.get('role')}] {content}")
    return "\n".join(lines)


def render_sample(sample: PreferenceSample, max_chars: int = 300) -> str:
    """One sample as readable text, long texts shortened to ``max_chars``."""
    scores = ""
    if sample.has_scores:
        scores = f", scores {sample.score_chosen:g} / {sample.score_rejected:g}"
    lines = [f"--- {sample.id} ({sample.modality}, {sample.source}{scores})"]
    lines.append(_shorten(prompt_text(sample), max_chars))
    if sample.images:
        lines.append("images: " + ", ".join(describe_image(image) for image in sample.images))
    if sample.rejected_images is not None:
        names = ", ".join(describe_image(image) for image in sample.rejected_images)
        lines.append(f"rejected images: {names}")
    lines.append(f"[chosen] {_shorten(sample.chosen, max_chars)}")
    lines.append(f"[rejected] {_shorten(sample.rejected, max_chars)}")
    return "\n".join(lines)


def example_indices(total: int, count: int) -> list[int]:
    """``count`` evenly spaced positions from first to last (deterministic)."""
    if total <= count:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def inspect_samples(
    samples: Sequence[PreferenceSample], n_examples: int = 3, max_chars: int = 300
) -> Inspection:
    """Counts, score statistics, character-length percentiles and rendered examples."""
    lengths: dict[str, list[float]] = {
        "prompt": [_prompt_chars(s) for s in samples],
        "chosen": [len(s.chosen) for s in samples],
        "rejected": [len(s.rejected) for s in samples],
    }
    return Inspection(
        total=len(samples),
        per_modality=dict(Counter(s.modality for s in samples)),
        per_source=dict(Counter(s.source for s in samples)),
        with_images=sum(1 for s in samples if s.images),
        images=sum(len(s.images) + len(s.rejected_images or []) for s in samples),
        score_groups=score_groups(samples),
        char_lengths={name: percentiles(values) for name, values in lengths.items()},
        examples=[
            render_sample(samples[i], max_chars) for i in example_indices(len(samples), n_examples)
        ],
        calibration_groups=_calibration_groups(samples),
    )


def _calibration_groups(samples: Sequence[PreferenceSample]) -> str:
    """Training's view of the groups, on raw scores (the data carry no calibration method)."""
    try:
        return format_groups(fit_calibration(samples, "none"))
    except CalibrationError as error:
        return f"score groups: {error}"


def format_inspection(inspection: Inspection) -> str:
    """The text ``mmdpo data inspect`` prints."""
    lines = [f"{inspection.total} samples"]
    lines.append("per modality: " + _counts(inspection.per_modality))
    lines.append("per source: " + _counts(inspection.per_source))
    lines.append(f"with images: {inspection.with_images} samples, {inspection.images} images")
    lines.append("")
    lines.append("scores per (modality, source):")
    for group in inspection.score_groups:
        lines.append(
            f"  {group.modality}/{group.source}: {group.scored} of {group.pairs} pairs scored"
        )
        for name in ("chosen", "rejected", "margin"):
            summary = getattr(group, name)
            if summary is not None:
                lines.append(f"    {name:<8} {_summary(summary)}")
        if group.inverted:
            lines.append(f"    warning: {group.inverted} pairs score chosen below rejected")
    if inspection.calibration_groups:
        lines.append("")
        lines.append(inspection.calibration_groups)
    for title, table in (
        ("characters", inspection.char_lengths),
        ("tokens", inspection.token_lengths),
    ):
        if table:
            lines.append("")
            lines.append(f"length in {title} (percentiles):")
            for name, values in table.items():
                cells = "  ".join(f"p{q}={value:.0f}" for q, value in values.items())
                lines.append(f"  {name:<8} {cells}")
    lines.append("")
    lines.append("examples:")
    lines.extend(inspection.examples)
    return "\n".join(lines)


def _prompt_chars(sample: PreferenceSample) -> int:
    """Characters of the prompt's text, without role labels or image parts."""
    total = 0
    for message in sample.prompt:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(part.get("text", ""))) for part in content)
    return total


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counts.items())) or "none"


def _summary(summary: Summary) -> str:
    return (
        f"mean {summary.mean:.3g}  std {summary.std:.3g}  min {summary.min:.3g}  "
        f"median {summary.median:.3g}  max {summary.max:.3g}"
    )


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"
