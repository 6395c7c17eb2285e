"""Summaries over seeds: mean, standard deviation and a Student-t 95% confidence interval.

Used by ``mmdpo ablate`` to report each variant's metrics and its paired difference to a
baseline (the same seeds, so the pairing removes the seed-to-seed variance they share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1..30 (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: exact table values up to 30 degrees of freedom, then a close expansion."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    # Cornish-Fisher expansion of t in terms of the normal quantile (error < 1e-4 for df > 30).
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Summary:
    """A metric over n seeds.

    Attributes:
        n: how many values.
        mean: their mean.
        std: sample standard deviation (n - 1 in the denominator); 0 for n = 1.
        low, high: the 95% confidence interval of the mean (Student t); equal to the mean
            for n = 1, where no interval can be given.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of zero (needs n >= 2)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def summarize(values: Sequence[float]) -> Summary:
    """Mean, standard deviation and 95% interval of ``values`` (NaN values are refused)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarize")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"NaN among the values {values}")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def paired_difference(values: dict[int, float], baseline: dict[int, float]) -> Summary:
    """Summary of ``values[s] - baseline[s]`` over the seeds both have."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        raise ValueError("no seed in common with the baseline")
    return summarize([values[s] - baseline[s] for s in seeds])
