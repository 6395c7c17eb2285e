import math

import pytest

from eval.stats import paired_difference, summarize, t_quantile_975


def test_summary_by_hand():
    """[1, 2, 3]: mean 2, std sqrt((1 + 0 + 1) / 2) = 1, t_{0.975,2} = 4.303,
    half width 4.303 / sqrt(3) = 2.4843."""
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.low == pytest.approx(2 - 4.303 / math.sqrt(3))
    assert s.high == pytest.approx(2 + 4.303 / math.sqrt(3))
    assert not s.excludes_zero()


def test_one_value_has_no_interval_and_nan_is_refused():
    s = summarize([0.5])
    assert (s.low, s.high, s.std) == (0.5, 0.5, 0.0)
    assert not s.excludes_zero()
    with pytest.raises(ValueError, match="NaN"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        summarize([])


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30, 31, 45, 100, 1000):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)


def test_paired_difference_uses_common_seeds():
    """Differences 0.1, 0.2, 0.3 on seeds 0-2 (seed 3 has no baseline): mean 0.2, std 0.1."""
    values = {0: 0.6, 1: 0.7, 2: 0.8, 3: 0.9}
    baseline = {0: 0.5, 1: 0.5, 2: 0.5}
    d = paired_difference(values, baseline)
    assert d.n == 3
    assert d.mean == pytest.approx(0.2)
    assert d.std == pytest.approx(0.1)
    # 0.2 +- 4.303 * 0.1 / sqrt(3) = 0.2 +- 0.248: the interval crosses zero.
    assert d.low == pytest.approx(0.2 - 0.24843, abs=1e-4) and not d.excludes_zero()
    tight = paired_difference({0: 0.70, 1: 0.71, 2: 0.69}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert tight.excludes_zero()  # 0.2 +- 4.303 * 0.01 / sqrt(3) = 0.2 +- 0.025
