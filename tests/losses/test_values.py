"""Each loss against values worked out by hand, at the shapes the engine passes: (B,) float32."""

import math

import pytest
import torch

from mmdpo.losses import dpo_loss, hinge_loss, ipo_loss, orpo_loss, simpo_loss, uni_dpo_loss


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def assert_close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, t(*expected), rtol=0, atol=1e-6)


# Summed log-probs for the reference-based losses, two pairs:
#   pair 0: policy (−10, −12), reference (−11, −11): h = (−10 + 11) − (−12 + 11) = 2
#   pair 1: policy (−7, −5),   reference (−6, −6):   h = (−7 + 6) − (−5 + 6) = −2
SUMMED = (t(-10.0, -7.0), t(-12.0, -5.0), t(-11.0, -6.0), t(-11.0, -6.0))


def test_dpo_values():
    """β = 0.1, so β h = (0.2, −0.2).

    loss = −log σ(β h) = softplus(−β h):
        pair 0: ln(1 + e^−0.2) = ln 1.8187308 = 0.5981389
        pair 1: ln(1 + e^0.2)  = ln 2.2214028 = 0.7981389
    rewards β(π − π_ref): chosen (0.1, −0.1), rejected (−0.1, 0.1); margin metric = β h.
    """
    out = dpo_loss(*SUMMED, beta=0.1)
    assert_close(out.losses, [0.5981389, 0.7981389])
    assert_close(out.chosen_rewards, [0.1, -0.1])
    assert_close(out.rejected_rewards, [-0.1, 0.1])
    assert_close(out.metrics["margin"], [0.2, -0.2])


def test_cdpo_values():
    """β = 0.1, ε = 0.25. Since softplus(x) = softplus(−x) + x,
    loss = (1 − ε) softplus(−βh) + ε softplus(βh) = softplus(−βh) + ε βh:
        pair 0: 0.5981389 + 0.25 · 0.2    = 0.6481389
        pair 1: 0.7981389 + 0.25 · (−0.2) = 0.7481389
    """
    out = dpo_loss(*SUMMED, beta=0.1, label_smoothing=0.25)
    assert_close(out.losses, [0.6481389, 0.7481389])


def test_ipo_values():
    """Mean log-probs. β = 0.1, so the target margin is 1/(2β) = 5.
    pair 0: policy (−1, −2),   reference (−1.5, −1.5): h = 0.5 − (−0.5) = 1,  (1 − 5)² = 16
    pair 1: policy (−2, −1.5), reference (−1.8, −1.6): h = −0.2 − 0.1 = −0.3, (−5.3)² = 28.09
    """
    out = ipo_loss(t(-1.0, -2.0), t(-2.0, -1.5), t(-1.5, -1.8), t(-1.5, -1.6), beta=0.1)
    torch.testing.assert_close(out.losses, t(16.0, 28.09), rtol=1e-6, atol=1e-5)
    assert_close(out.metrics["margin"], [1.0, -0.3])


def test_hinge_values():
    """β = 0.5, so β h = (1, −1): relu(1 − 1) = 0 and relu(1 + 1) = 2."""
    out = hinge_loss(*SUMMED, beta=0.5)
    assert_close(out.losses, [0.0, 2.0])
    assert_close(out.chosen_rewards, [0.5, -0.5])


def test_simpo_values():
    """Mean log-probs, β = 2, γ = 1; rewards β ℓ.
    pair 0: ℓ = (−1, −2):   rewards (−2, −4), margin −2 + 4 − 1 = 1,  softplus(−1) = 0.3132617
    pair 1: ℓ = (−2, −1.5): rewards (−4, −3), margin −4 + 3 − 1 = −2, softplus(2)  = 2.1269280
    """
    out = simpo_loss(t(-1.0, -2.0), t(-2.0, -1.5), beta=2.0, gamma=1.0)
    assert_close(out.losses, [0.3132617, 2.1269280])
    assert_close(out.chosen_rewards, [-2.0, -4.0])
    assert_close(out.rejected_rewards, [-4.0, -3.0])
    assert_close(out.metrics["margin"], [1.0, -2.0])


def test_orpo_values():
    """Mean log-probs ℓ = ln P with P ∈ {0.5, 0.2}; λ = 0.1.
    odds(0.5) = 1, log odds 0; odds(0.2) = 0.25, log odds −ln 4 = −1.3862944.
        pair 0: ℓ_w = ln 0.5, ℓ_l = ln 0.2: log OR = ln 4, σ = 0.8, −ln 0.8 = 0.2231436
                NLL_w = ln 2 = 0.6931472; loss = 0.6931472 + 0.02231436 = 0.7154615
        pair 1: swapped: log OR = −ln 4, σ = 0.2, −ln 0.2 = 1.6094379
                NLL_w = ln 5 = 1.6094379; loss = 1.6094379 + 0.16094379 = 1.7703817
    With chosen_nll = (2, 3) given: 2 + 0.0223144 = 2.0223144 and 3 + 0.1609438 = 3.1609438.
    """
    chosen, rejected = t(math.log(0.5), math.log(0.2)), t(math.log(0.2), math.log(0.5))
    out = orpo_loss(chosen, rejected, odds_ratio_weight=0.1)
    assert_close(out.losses, [0.7154615, 1.7703817])
    assert_close(out.metrics["margin"], [math.log(4.0), -math.log(4.0)])
    out = orpo_loss(chosen, rejected, t(2.0, 3.0), odds_ratio_weight=0.1)
    assert_close(out.losses, [2.0223144, 3.1609438])


def test_uni_dpo_values():
    """Mean log-probs; β = 2, η = 0.7, τ_ref = 2, γ = 3, λ = 0.1, τ_good = 3.2.

    pair 0: ℓ = (−1, −2), ℓ⁰ = (−0.5, −2), S = (4, 4)
        Δ = (−1 + 0.5) − (−2 + 2) = −0.5, β Δ = −1, −log σ(−1) = 1.3132617
        w_qual = σ(0.7 · 0) = 0.5
        w_perf = (1 − σ(2 · 1 − 2))³ = 0.5³ = 0.125
        c = 1[−0.5 > −1] · 1[4 ≥ 3.2] = 1
        loss = 0.5 · 0.125 · 1.3132617 − 0.1 · 1 · (−1) = 0.0820789 + 0.1 = 0.1820789
    pair 1: ℓ = (−2, −2), ℓ⁰ = (−2.5, −1.5), S = (3, 1)
        Δ = (−2 + 2.5) − (−2 + 1.5) = 1, β Δ = 2, −log σ(2) = 0.1269280
        w_qual = σ(0.7 · 2) = σ(1.4) = 0.8021839
        w_perf = (1 − σ(0 − 2))³ = σ(2)³ = 0.8807971³ = 0.6833254
        c = 1[−2.5 > −2] · 1[3 ≥ 3.2] = 0
        loss = 0.8021839 · 0.6833254 · 0.1269280 = 0.0695759
    rewards β(ℓ − ℓ⁰): chosen (−1, 1), rejected (0, −1).
    """
    out = uni_dpo_loss(
        t(-1.0, -2.0),
        t(-2.0, -2.0),
        t(-0.5, -2.5),
        t(-2.0, -1.5),
        t(4.0, 3.0),
        t(4.0, 1.0),
        beta=2.0,
        eta=0.7,
        tau_ref=2.0,
        gamma=3.0,
        nll_lambda=0.1,
        tau_good=3.2,
    )
    assert_close(out.losses, [0.1820789, 0.0695759])
    assert_close(out.chosen_rewards, [-1.0, 1.0])
    assert_close(out.rejected_rewards, [0.0, -1.0])
    assert_close(out.metrics["w_qual"], [0.5, 0.8021839])
    assert_close(out.metrics["w_perf"], [0.125, 0.6833254])
    assert_close(out.metrics["nll_gate"], [1.0, 0.0])
    assert_close(out.metrics["margin"], [-1.0, 2.0])
    assert_close(out.metrics["policy_margin"], [1.0, 0.0])


@pytest.mark.parametrize("use_quality_weight, use_perf_weight", [(False, True), (True, False)])
def test_uni_dpo_ablation_values(use_quality_weight, use_perf_weight):
    """The pairs of test_uni_dpo_values with one weight switched off (set to 1), λ = 0:
    without w_qual: 0.125 · 1.3132617 = 0.1641577, 0.6833254 · 0.1269280 = 0.0867332
    without w_perf: 0.5 · 1.3132617 = 0.6566309, 0.8021839 · 0.1269280 = 0.1018196
    """
    out = uni_dpo_loss(
        t(-1.0, -2.0),
        t(-2.0, -2.0),
        t(-0.5, -2.5),
        t(-2.0, -1.5),
        t(4.0, 3.0),
        t(4.0, 1.0),
        nll_lambda=0.0,
        use_quality_weight=use_quality_weight,
        use_perf_weight=use_perf_weight,
    )
    expected = [0.1641577, 0.0867332] if use_perf_weight else [0.6566309, 0.1018196]
    assert_close(out.losses, expected)
