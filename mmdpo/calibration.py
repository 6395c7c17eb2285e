"""Score calibration per (modality, source) group, and the paper's ``tau_good: auto`` rule.

Scores come on different scales (a reward model's logits, a judge's 1-10, a PRM x 10), so
calibration is fitted on the training samples of each (modality, source) group and saved with
the run, so that resume and eval map scores the same way.

Methods (every one is monotone non-decreasing within a group):

- ``none``: raw scores, the paper's default (Uni-DPO uses raw scores, no renormalisation).
- ``zscore``: ``(s - mean) / std`` over the group's pooled scores (chosen and rejected
  together, population std). A constant group (std 0) maps every score to 0.0.
- ``minmax``: ``lo + (s - min) / (max - min) * (hi - lo)`` with ``target_range=(lo, hi)``,
  default (0, 10): the scale of the paper's judge and PRM x 10 scores, so ``eta = 0.7`` and
  ``tau_good`` keep their meaning. A constant group maps to the midpoint ``(lo + hi) / 2``.
  Scores outside the fitted [min, max] (new data) are not clipped: the map is linear.
- ``rank``: the average rank of the score among the group's pooled scores (ties share their
  mean rank), scaled to [0, 1] by ``(rank - 1) / (n - 1)``; a one-score group maps to 0.5.
  A score never seen in fitting gets the rank it would take between its neighbours, clipped to
  [0, 1]. Only this method stores the sorted pooled scores.

``tau_good(modality, source)`` is the median chosen score of the group on the calibrated scale,
computed at fit time (for ``rank`` the median of calibrated values is not the calibrated median).

Missing scores (None or NaN) are skipped when fitting and left as they are when applying.
A score beyond ``MAX_ABS_SCORE`` (1e30) in magnitude, an infinite one, or one that maps to a
non-finite value raises :class:`CalibrationError` naming the sample (its file and line when
its meta has them): the engine holds scores in float32 (largest 3.4e38), and differences,
sums and squares of scores must stay finite there and in the statistics (the squares behind
``zscore``'s std overflow float64 above ~1e154). Within the bound, no method can overflow.
A group never seen in fitting raises ``KeyError`` by default (``on_unknown="error"``); with
``on_unknown="raw"`` its scores pass through unchanged. Method ``none`` never needs a group.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdpo.types import PreferenceSample

METHODS: tuple[str, ...] = ("none", "zscore", "minmax", "rank")
# float32 holds 3.4e38; 1e30 leaves room for the score differences, the batch sums of metrics
# and eta * (S_w - S_l) of the loss, and for the sums and squares of the statistics in float64.
MAX_ABS_SCORE = 1e30
ON_UNKNOWN: tuple[str, ...] = ("error", "raw")
FORMAT_VERSION = 1

GroupKey = tuple[str, str]


class CalibrationError(ValueError):
    """A score calibration cannot handle: too large, infinite, or mapped to inf or NaN."""


def _is_missing(score: float | None) -> bool:
    return score is None or math.isnan(float(score))


def where(sample: PreferenceSample) -> str:
    """``FILE:LINE`` from the sample's meta when the adapter recorded them, else its id."""
    if "file" in sample.meta and "line" in sample.meta:
        return f"{sample.meta['file']}:{sample.meta['line']}"
    return f"sample {sample.id}"


def check_score(score: float | None, sample: PreferenceSample, name: str) -> None:
    """Refuse an infinite score or one beyond ``MAX_ABS_SCORE`` (missing scores pass)."""
    if _is_missing(score):
        return
    value = float(score)
    if not abs(value) <= MAX_ABS_SCORE:
        raise CalibrationError(
            f"{where(sample)}: {name}: score too large in magnitude ({value:g}); scores must "
            f"lie within +-{MAX_ABS_SCORE:g} so that calibration and the float32 loss stay "
            "finite: rescale them"
        )


@dataclass
class GroupStats:
    """Statistics of one (modality, source) group's raw scores.

    Attributes:
        n: number of scores pooled (chosen and rejected together).
        n_chosen: number of chosen scores.
        pairs: number of pairs in the group, scored or not.
        mean, std: mean and population std (ddof=0) of the pooled scores.
        min, max: range of the pooled scores.
        median_chosen: median raw chosen score (NaN without chosen scores).
        tau_good: median chosen score on the calibrated scale (NaN without chosen scores).
        sorted_scores: the pooled scores in ascending order; filled only for ``rank``.
    """

    n: int
    n_chosen: int
    mean: float
    std: float
    min: float
    max: float
    median_chosen: float
    tau_good: float = math.nan
    pairs: int = 0
    sorted_scores: list[float] = field(default_factory=list)


@dataclass
class Calibration:
    """A fitted calibration: per-group statistics plus the method that maps raw scores."""

    method: str = "none"
    target_range: tuple[float, float] = (0.0, 10.0)
    on_unknown: str = "error"
    groups: dict[GroupKey, GroupStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; valid: {METHODS}")
        if self.on_unknown not in ON_UNKNOWN:
            raise ValueError(f"unknown on_unknown {self.on_unknown!r}; valid: {ON_UNKNOWN}")
        lo, hi = (float(v) for v in self.target_range)
        if not lo < hi:
            raise ValueError(f"target_range must satisfy lo < hi, got {self.target_range}")
        self.target_range = (lo, hi)

    # -- mapping -------------------------------------------------------------------------------

    def _group(self, modality: str, source: str) -> GroupStats | None:
        stats = self.groups.get((modality, source))
        if stats is not None and stats.n > 0:
            return stats
        if self.on_unknown == "raw":
            return None
        known = sorted(key for key, value in self.groups.items() if value.n > 0)
        raise KeyError(
            f"no calibration fitted for group (modality={modality!r}, source={source!r}); "
            f"known groups: {known}. Fit on data that includes this source, or use "
            f"on_unknown='raw' to pass its scores through."
        )

    def transform(self, score: float | None, modality: str, source: str) -> float | None:
        """Map one raw score of the given group to the calibrated scale (missing stays missing)."""
        if _is_missing(score) or self.method == "none":
            return score
        stats = self._group(modality, source)
        if stats is None:
            return score
        return _map_score(float(score), stats, self.method, self.target_range)

    def apply(self, sample: PreferenceSample) -> PreferenceSample:
        """A new sample with calibrated scores; the raw ones are kept in ``meta`` when changed.

        Raises CalibrationError for a score beyond ``MAX_ABS_SCORE`` or one whose calibrated
        value is not finite (new data far outside a ``minmax`` group's tiny range, say).
        """
        check_score(sample.score_chosen, sample, "score_chosen")
        check_score(sample.score_rejected, sample, "score_rejected")
        if self.method == "none":
            return sample
        score_chosen = self.transform(sample.score_chosen, sample.modality, sample.source)
        score_rejected = self.transform(sample.score_rejected, sample.modality, sample.source)
        for name, value in (("score_chosen", score_chosen), ("score_rejected", score_rejected)):
            if value is not None and math.isinf(value):
                raise CalibrationError(
                    f"{where(sample)}: {name}: {getattr(sample, name):g} maps to {value} under "
                    f"{self.method} calibration of group {sample.modality}/{sample.source}"
                )
        meta = dict(sample.meta)
        meta.setdefault("raw_score_chosen", sample.score_chosen)
        meta.setdefault("raw_score_rejected", sample.score_rejected)
        return dataclasses.replace(
            sample, score_chosen=score_chosen, score_rejected=score_rejected, meta=meta
        )

    def apply_all(self, samples: Iterable[PreferenceSample]) -> list[PreferenceSample]:
        return [self.apply(sample) for sample in samples]

    def tau_good(self, modality: str, source: str) -> float:
        """The median chosen score of the group on the calibrated scale (the paper's auto rule).

        Raises ``KeyError`` for a group never seen in fitting (whatever ``on_unknown`` says:
        there is no median of unseen data). NaN when the group had no chosen scores.
        """
        stats = self.groups.get((modality, source))
        if stats is None:
            raise KeyError(
                f"no calibration fitted for group (modality={modality!r}, source={source!r}); "
                f"known groups: {sorted(self.groups)}"
            )
        return stats.tau_good

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN written as None)."""
        groups = []
        for (modality, source), stats in sorted(self.groups.items()):
            entry = {"modality": modality, "source": source}
            for name, value in dataclasses.asdict(stats).items():
                entry[name] = None if isinstance(value, float) and math.isnan(value) else value
            groups.append(entry)
        return {
            "version": FORMAT_VERSION,
            "method": self.method,
            "target_range": list(self.target_range),
            "on_unknown": self.on_unknown,
            "groups": groups,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported calibration format version {version}")
        groups: dict[GroupKey, GroupStats] = {}
        float_fields = ("mean", "std", "min", "max", "median_chosen", "tau_good")
        for entry in data.get("groups", []):
            values = {name: entry[name] for name in ("n", "n_chosen")}
            values["pairs"] = int(entry.get("pairs", entry["n_chosen"]))
            for name in float_fields:
                values[name] = math.nan if entry.get(name) is None else float(entry[name])
            values["sorted_scores"] = [float(v) for v in entry.get("sorted_scores", [])]
            groups[(entry["modality"], entry["source"])] = GroupStats(**values)
        return cls(
            method=data["method"],
            target_range=tuple(data.get("target_range", (0.0, 10.0))),
            on_unknown=data.get("on_unknown", "error"),
            groups=groups,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _map_score(
    score: float, stats: GroupStats, method: str, target_range: tuple[float, float]
) -> float:
    if method == "zscore":
        # A constant group carries no ordering information: every score maps to the centre.
        return 0.0 if stats.std == 0.0 else (score - stats.mean) / stats.std
    if method == "minmax":
        lo, hi = target_range
        span = stats.max - stats.min
        if span == 0.0:
            return (lo + hi) / 2.0
        return lo + (score - stats.min) / span * (hi - lo)
    if method == "rank":
        ordered = stats.sorted_scores
        if len(ordered) == 1:
            return 0.5
        below = bisect.bisect_left(ordered, score)
        at_or_below = bisect.bisect_right(ordered, score)
        # Ties take the mean of ranks below+1 .. at_or_below; an unseen score falls between.
        average_rank = (below + 1 + at_or_below) / 2.0 if at_or_below > below else below + 0.5
        return min(1.0, max(0.0, (average_rank - 1.0) / (len(ordered) - 1)))
    raise ValueError(f"unknown calibration method {method!r}; valid: {METHODS}")


def fit_calibration(
    samples: Iterable[PreferenceSample],
    method: str = "none",
    *,
    target_range: tuple[float, float] = (0.0, 10.0),
    on_unknown: str = "error",
) -> Calibration:
    """Fit per-(modality, source) statistics on ``samples`` (missing scores are skipped)."""
    calibration = Calibration(method=method, target_range=target_range, on_unknown=on_unknown)
    pooled: dict[GroupKey, list[float]] = {}
    chosen: dict[GroupKey, list[float]] = {}
    pairs: dict[GroupKey, int] = {}
    for sample in samples:
        check_score(sample.score_chosen, sample, "score_chosen")
        check_score(sample.score_rejected, sample, "score_rejected")
        key = (sample.modality, sample.source)
        pooled.setdefault(key, [])
        chosen.setdefault(key, [])
        pairs[key] = pairs.get(key, 0) + 1
        if not _is_missing(sample.score_chosen):
            pooled[key].append(float(sample.score_chosen))
            chosen[key].append(float(sample.score_chosen))
        if not _is_missing(sample.score_rejected):
            pooled[key].append(float(sample.score_rejected))

    for key, scores in pooled.items():
        values = np.asarray(scores, dtype=np.float64)
        chosen_values = chosen[key]
        has_scores = values.size > 0
        stats = GroupStats(
            n=int(values.size),
            n_chosen=len(chosen_values),
            mean=float(values.mean()) if has_scores else math.nan,
            std=float(values.std()) if has_scores else math.nan,
            min=float(values.min()) if has_scores else math.nan,
            max=float(values.max()) if has_scores else math.nan,
            median_chosen=float(np.median(chosen_values)) if chosen_values else math.nan,
            sorted_scores=sorted(scores) if method == "rank" else [],
            pairs=pairs[key],
        )
        if chosen_values:
            calibrated = [
                s if method == "none" else _map_score(s, stats, method, calibration.target_range)
                for s in chosen_values
            ]
            stats.tau_good = float(np.median(calibrated))
        calibration.groups[key] = stats
    return calibration


def format_groups(calibration: Calibration) -> str:
    """One line per (modality, source) group: pairs, raw mean and std, and tau_good.

    What ``mmdpo train`` prints before the first step and ``mmdpo data inspect`` shows, so
    that a user sees which data were pooled into one score scale.
    """
    method = calibration.method
    scale = "the raw scores" if method == "none" else f"the {method} scale"
    lines = [
        f"score groups (calibration {method}): pairs, mean and std of the raw scores, "
        f"auto tau_good = median chosen score on {scale} (used only with tau_good: auto)"
    ]
    for (modality, source), stats in sorted(calibration.groups.items()):
        head = f"  {modality}/{source}: {stats.pairs} pairs"
        if stats.n == 0:
            lines.append(f"{head}, no scores")
            continue
        spread = f"mean {stats.mean:.4g}, std {stats.std:.4g}"
        lines.append(f"{head}, {spread}, auto tau_good {stats.tau_good:.4g}")
    return "\n".join(lines)
