"""``data_summary.json``: what a run trained on, written by the trainer before the first step.

Pairs by (modality, source), with and without scores and images, the score distributions
(raw, and as the loss saw them after calibration), and token lengths. Only the pairs the run
really uses count: samples dropped by tokenization or ``data.limit`` are left out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdpo.types import PreferenceSample, TokenizedPair

FORMAT_VERSION = 1
HISTOGRAM_BINS = 24


def describe(values: Iterable[float]) -> dict[str, float | int | None]:
    """n, mean, std, min, p10, p50, p90, max of the finite values (None when there are none)."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "p10": None, "p50": None,
                "p90": None, "max": None}  # fmt: skip
    p10, p50, p90 = np.percentile(array, [10, 50, 90])
    return {
        "n": int(array.size),
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(array.min()),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "max": float(array.max()),
    }


def histogram(series: dict[str, Sequence[float]], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Counts of several series over shared edges (so they can be drawn on one axis)."""
    finite = {
        name: np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        for name, values in series.items()
    }
    pooled = np.concatenate([v for v in finite.values() if v.size] or [np.zeros(0)])
    if pooled.size == 0:
        return {"edges": [], **{name: [] for name in series}}
    # About √n bins (at most ``bins``): enough to see a shape, not so many that it is noise.
    bins = max(5, min(bins, math.ceil(math.sqrt(pooled.size / max(1, len(finite))))))
    low, high = float(pooled.min()), float(pooled.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = {
        name: np.histogram(v, bins=edges)[0].astype(int).tolist() for name, v in finite.items()
    }
    return {"edges": [float(e) for e in edges], **counts}


def _scores(
    samples: Sequence[PreferenceSample] | Sequence[TokenizedPair],
) -> tuple[list[float], list[float]]:
    chosen, rejected = [], []
    for sample in samples:
        if sample.score_chosen is None or sample.score_rejected is None:
            continue
        chosen.append(float(sample.score_chosen))
        rejected.append(float(sample.score_rejected))
    return chosen, rejected


def _score_block(samples: Sequence[Any]) -> dict[str, Any]:
    chosen, rejected = _scores(samples)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    finite = [m for m in margins if math.isfinite(m)]
    return {
        "chosen": describe(chosen),
        "rejected": describe(rejected),
        "margin": describe(margins),
        "flipped": sum(m < 0 for m in finite),
        "ties": sum(m == 0 for m in finite),
        "histogram": histogram({"chosen": chosen, "rejected": rejected}),
        "margin_histogram": histogram({"margin": margins}),
    }


def _group(samples: list[PreferenceSample], pairs: list[TokenizedPair]) -> dict[str, Any]:
    with_scores = sum(s.has_scores for s in samples)
    entry: dict[str, Any] = {
        "pairs": len(samples),
        "with_scores": with_scores,
        "with_images": sum(bool(s.images) for s in samples),
        "image_contrastive": sum(s.rejected_images is not None for s in samples),
        "images": sum(len(s.images) for s in samples),
    }
    if with_scores:
        entry["raw_scores"] = _score_block(samples)
        entry["calibrated_scores"] = _score_block(pairs)
    return entry


def _tokens(pairs: list[TokenizedPair]) -> dict[str, Any]:
    return {
        "prompt": describe(len(p.prompt_ids) for p in pairs),
        "chosen": describe(len(p.chosen_ids) for p in pairs),
        "rejected": describe(len(p.rejected_ids) for p in pairs),
    }


def summarize_split(
    samples: Sequence[PreferenceSample], pairs: Sequence[TokenizedPair]
) -> dict[str, Any]:
    """One split: its pairs by (modality, source) and in total, scores and token lengths.

    ``samples`` are the raw samples (before calibration); ``pairs`` the tokenized pairs the
    run uses (calibrated scores). Samples without a pair are left out.
    """
    used = {p.id for p in pairs}
    kept = [s for s in samples if s.id in used]
    by_group: dict[tuple[str, str], list[PreferenceSample]] = {}
    for sample in kept:
        by_group.setdefault((sample.modality, sample.source), []).append(sample)
    pairs_by_group: dict[tuple[str, str], list[TokenizedPair]] = {}
    for pair in pairs:
        pairs_by_group.setdefault((pair.modality, pair.source), []).append(pair)
    groups = []
    for (modality, source), members in sorted(by_group.items()):
        group_pairs = pairs_by_group.get((modality, source), [])
        groups.append({"modality": modality, "source": source, **_group(members, group_pairs)})
    return {
        "pairs": len(pairs),
        "given": len(samples),
        "left_out": len(samples) - len(kept),
        "groups": groups,
        "total": _group(kept, list(pairs)),
        "tokens": _tokens(list(pairs)),
    }


def write_data_summary(
    path: str | Path,
    splits: dict[str, tuple[Sequence[PreferenceSample], Sequence[TokenizedPair]]],
    *,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write ``data_summary.json``: ``splits`` maps "train"/"eval" to (raw samples, pairs)."""
    summary = {
        "version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "calibration": (calibration or {}).get("method", "none"),
        "splits": {name: summarize_split(*parts) for name, parts in splits.items()},
    }
    path = Path(path)
    path.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
