"""Score calibration per (modality, source): hand-worked values, properties, persistence."""

import json
import math
import random

import numpy as np
import pytest

from mmdpo.calibration import Calibration, fit_calibration
from mmdpo.types import PreferenceSample


def make(score_chosen, score_rejected, modality="text", source="judge", index=0):
    return PreferenceSample(
        id=f"{modality}-{source}-{index}",
        prompt="q",
        chosen="a",
        rejected="b",
        score_chosen=score_chosen,
        score_rejected=score_rejected,
        modality=modality,
        source=source,
    )


# Group (text, judge): pairs (8, 2), (6, 4), (10, missing); pooled 2, 4, 6, 8, 10.
JUDGE = [make(8.0, 2.0, index=0), make(6.0, 4.0, index=1), make(10.0, None, index=2)]
# Group (math, prm): constant scores.
CONSTANT = [make(7.0, 7.0, "math", "prm", 0), make(7.0, 7.0, "math", "prm", 1)]


def test_group_statistics():
    """n = 5, mean = 30 / 5 = 6, variance = (4 + 16 + 0 + 4 + 16) / 5 = 8, median chosen of
    8, 6, 10 = 8."""
    stats = fit_calibration(JUDGE).groups[("text", "judge")]
    assert (stats.n, stats.n_chosen) == (5, 3)
    assert stats.mean == 6.0
    assert stats.std == pytest.approx(math.sqrt(8.0))
    assert (stats.min, stats.max, stats.median_chosen) == (2.0, 10.0, 8.0)


def test_none_is_identity_and_tau_is_raw_median():
    calibration = fit_calibration(JUDGE, "none")
    sample = calibration.apply(JUDGE[0])
    assert (sample.score_chosen, sample.score_rejected) == (8.0, 2.0)
    assert calibration.tau_good("text", "judge") == 8.0


def test_zscore_values():
    """(8 - 6) / sqrt(8) = 0.7071; (2 - 6) / sqrt(8) = -1.4142; tau = z(median chosen 8)."""
    calibration = fit_calibration(JUDGE, "zscore")
    sample = calibration.apply(JUDGE[0])
    assert sample.score_chosen == pytest.approx(2 / math.sqrt(8))
    assert sample.score_rejected == pytest.approx(-4 / math.sqrt(8))
    assert calibration.tau_good("text", "judge") == pytest.approx(2 / math.sqrt(8))


def test_minmax_values():
    """Range 2..10 to (0, 10): 8 -> (8 - 2) / 8 * 10 = 7.5, 4 -> 2.5; tau = median(7.5, 5, 10).

    To (-1, 1): 8 -> -1 + 6 / 8 * 2 = 0.5. A new score 12 is not clipped: -1 + 10 / 8 * 2 = 1.5.
    """
    calibration = fit_calibration(JUDGE, "minmax")
    sample = calibration.apply(JUDGE[1])
    assert (sample.score_chosen, sample.score_rejected) == (5.0, 2.5)
    assert calibration.transform(8.0, "text", "judge") == 7.5
    assert calibration.tau_good("text", "judge") == 7.5
    narrow = fit_calibration(JUDGE, "minmax", target_range=(-1.0, 1.0))
    assert narrow.transform(8.0, "text", "judge") == 0.5
    assert narrow.transform(12.0, "text", "judge") == 1.5


def test_rank_values_with_ties():
    """Pooled 1, 3, 3, 5: average ranks 1, 2.5, 2.5, 4, scaled (r - 1) / 3 -> 0, 0.5, 0.5, 1.

    An unseen 4 sits between ranks 3 and 4 (3.5 -> 2.5 / 3 = 0.8333); an unseen 0 clips to 0.
    tau_good = median(rank(3), rank(5)) = median(0.5, 1) = 0.75, not rank(median 4) = 0.8333.
    """
    samples = [make(3.0, 1.0, index=0), make(5.0, 3.0, index=1)]
    calibration = fit_calibration(samples, "rank")
    assert [calibration.transform(s, "text", "judge") for s in (1.0, 3.0, 5.0)] == [0, 0.5, 1]
    assert calibration.transform(4.0, "text", "judge") == pytest.approx(2.5 / 3)
    assert calibration.transform(0.0, "text", "judge") == 0.0
    assert calibration.tau_good("text", "judge") == 0.75


def test_constant_scores_never_divide_by_zero():
    """std = 0 and max = min: zscore maps to 0, minmax to the midpoint 5, rank to 2.5 -> 0.5."""
    for method, expected in [("zscore", 0.0), ("minmax", 5.0), ("rank", 0.5), ("none", 7.0)]:
        calibration = fit_calibration(CONSTANT, method)
        sample = calibration.apply(CONSTANT[0])
        assert (sample.score_chosen, sample.score_rejected) == (expected, expected), method
        assert calibration.tau_good("math", "prm") == expected


def test_one_score_group_rank_is_half():
    calibration = fit_calibration([make(3.0, None)], "rank")
    assert calibration.transform(3.0, "text", "judge") == 0.5


def test_groups_are_separate():
    calibration = fit_calibration(JUDGE + CONSTANT, "minmax")
    assert calibration.transform(7.0, "math", "prm") == 5.0
    assert calibration.transform(7.0, "text", "judge") == 6.25  # (7 - 2) / 8 * 10


def random_samples(seed, count=50):
    rng = random.Random(seed)
    return [make(rng.gauss(3, 2), rng.gauss(1, 2), index=i) for i in range(count)]


def test_zscore_group_has_mean_zero_std_one():
    samples = random_samples(0)
    calibration = fit_calibration(samples, "zscore")
    calibrated = calibration.apply_all(samples)
    pooled = np.array([s.score_chosen for s in calibrated] + [s.score_rejected for s in calibrated])
    assert pooled.mean() == pytest.approx(0.0, abs=1e-12)
    assert pooled.std() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["zscore", "minmax", "rank"])
def test_calibration_is_monotone(method):
    samples = random_samples(1)
    calibration = fit_calibration(samples, method)
    raw = sorted({s.score_chosen for s in samples} | {s.score_rejected for s in samples})
    probes = sorted(raw + [-100.0, 0.123, 100.0])
    mapped = [calibration.transform(score, "text", "judge") for score in probes]
    assert all(a <= b for a, b in zip(mapped, mapped[1:], strict=False))


def test_rank_and_minmax_span_their_range_on_fit_data():
    samples = random_samples(2)
    for method, (low, high) in [("rank", (0.0, 1.0)), ("minmax", (0.0, 10.0))]:
        calibrated = fit_calibration(samples, method).apply_all(samples)
        pooled = [s.score_chosen for s in calibrated] + [s.score_rejected for s in calibrated]
        assert min(pooled) == pytest.approx(low) and max(pooled) == pytest.approx(high)


def test_missing_scores_stay_missing_and_raw_kept_in_meta():
    calibration = fit_calibration(JUDGE, "zscore")
    sample = calibration.apply(JUDGE[2])
    assert sample.score_rejected is None
    assert sample.meta["raw_score_chosen"] == 10.0
    nan_sample = calibration.apply(make(math.nan, 4.0))
    assert math.isnan(nan_sample.score_chosen)
    assert JUDGE[2].score_chosen == 10.0 and "raw_score_chosen" not in JUDGE[2].meta


def test_nan_scores_skipped_when_fitting():
    calibration = fit_calibration([make(math.nan, 2.0), make(4.0, None)], "none")
    stats = calibration.groups[("text", "judge")]
    assert (stats.n, stats.mean, stats.median_chosen) == (2, 3.0, 4.0)


def test_unknown_group_raises_with_known_groups_listed():
    calibration = fit_calibration(JUDGE, "zscore")
    unseen = make(5.0, 1.0, source="new-judge")
    with pytest.raises(KeyError, match="new-judge.*known groups.*judge"):
        calibration.apply(unseen)
    with pytest.raises(KeyError, match="new-judge"):
        calibration.tau_good("text", "new-judge")


def test_unknown_group_passes_raw_when_asked():
    calibration = fit_calibration(JUDGE, "zscore", on_unknown="raw")
    sample = calibration.apply(make(5.0, 1.0, source="new-judge"))
    assert (sample.score_chosen, sample.score_rejected) == (5.0, 1.0)


def test_none_method_needs_no_group():
    calibration = fit_calibration(JUDGE, "none")
    sample = calibration.apply(make(5.0, 1.0, source="new-judge"))
    assert (sample.score_chosen, sample.score_rejected) == (5.0, 1.0)


def test_group_without_scores():
    """A group seen only without scores: tau_good is NaN; a scored sample from it is unknown."""
    calibration = fit_calibration([make(None, None, source="unscored")], "minmax")
    assert math.isnan(calibration.tau_good("text", "unscored"))
    with pytest.raises(KeyError):
        calibration.transform(1.0, "text", "unscored")
    json.dumps(calibration.to_dict(), allow_nan=False)


@pytest.mark.parametrize("method", ["none", "zscore", "minmax", "rank"])
def test_round_trip(method, tmp_path):
    samples = JUDGE + CONSTANT + random_samples(3, 10) + [make(None, None, source="unscored")]
    calibration = fit_calibration(samples, method, target_range=(1.0, 5.0))
    restored = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    path = tmp_path / "calibration.json"
    calibration.save(path)
    loaded = Calibration.load(path)
    for other in (restored, loaded):
        assert other.to_dict() == calibration.to_dict()
        for sample in samples[:-1]:
            assert other.apply(sample) == calibration.apply(sample)
        assert other.tau_good("text", "judge") == calibration.tau_good("text", "judge")


def test_invalid_settings_list_valid_ones():
    with pytest.raises(ValueError, match="zscore"):
        fit_calibration(JUDGE, "softmax")
    with pytest.raises(ValueError, match="raw"):
        fit_calibration(JUDGE, "zscore", on_unknown="guess")
    with pytest.raises(ValueError, match="lo < hi"):
        fit_calibration(JUDGE, "minmax", target_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="version"):
        Calibration.from_dict({"version": 99, "method": "none"})


def test_scores_within_the_bound_stay_finite_everywhere():
    """At +-MAX_ABS_SCORE every method, tau_good and the loss's float32 weight are finite;
    one step beyond is refused (without the bound, 1e200 makes zscore's std overflow)."""
    import torch

    from mmdpo.calibration import MAX_ABS_SCORE
    from mmdpo.losses.uni_dpo import uni_dpo_loss

    with np.errstate(over="ignore"):
        assert math.isinf(float(np.std([1e200, -1e200])))
    edge = [
        make(MAX_ABS_SCORE, -MAX_ABS_SCORE, index=0),
        make(-MAX_ABS_SCORE, MAX_ABS_SCORE, index=1),
    ]
    for method in ("none", "zscore", "minmax", "rank"):
        calibration = fit_calibration(edge, method)
        stats = calibration.groups[("text", "judge")]
        assert all(math.isfinite(v) for v in (stats.mean, stats.std, stats.tau_good)), method
        for sample in calibration.apply_all(edge):
            assert math.isfinite(sample.score_chosen) and math.isfinite(sample.score_rejected)
    scores = torch.tensor([MAX_ABS_SCORE, -MAX_ABS_SCORE])  # float32, as the collator makes them
    zeros = torch.zeros(2)
    out = uni_dpo_loss(zeros, zeros, zeros, zeros, scores, scores.flip(0), eta=0.7)
    assert torch.isfinite(out.losses).all() and torch.isfinite(out.metrics["w_qual"]).all()


@pytest.mark.parametrize("score", [1.0000001e30, -1e308, float("inf")])
def test_scores_beyond_the_bound_are_refused_naming_the_sample(score):
    from mmdpo.calibration import CalibrationError

    sample = make(score, 1.0)
    sample.meta = {"file": "d.jsonl", "line": 7}
    with pytest.raises(CalibrationError, match=r"^d.jsonl:7: score_chosen: score too large"):
        fit_calibration([sample], "zscore")
    with pytest.raises(CalibrationError, match=r"^sample text-judge-0: score_rejected"):
        fit_calibration(JUDGE).apply(make(1.0, score))
    with pytest.raises(CalibrationError):
        fit_calibration([sample], "none")


def test_a_calibrated_value_that_overflows_is_refused():
    """minmax over a tiny range maps a far-away new score beyond float64: refused, not inf."""
    from mmdpo.calibration import CalibrationError

    tiny = [make(0.0, 1e-300, index=0)]
    calibration = fit_calibration(tiny, "minmax")
    with pytest.raises(CalibrationError, match=r"score_chosen: 1e\+30 maps to inf under minmax"):
        calibration.apply(make(1e30, 0.0))
