"""Properties every loss keeps, the uni_dpo switches and gradients, and the registry contract."""

import pytest
import torch

from mmdpo.losses import LOSSES, LossSpec, dpo_loss, get_loss, uni_dpo_loss

B = 4


def make_inputs(dtype=torch.float32, requires_grad=False) -> dict[str, torch.Tensor]:
    """Mean-scale log-probs for B pairs, away from every gate boundary, and scores."""
    values = {
        "policy_chosen_logps": [-1.0, -1.6, -0.7, -2.2],
        "policy_rejected_logps": [-1.4, -1.3, -1.9, -2.0],
        "ref_chosen_logps": [-1.2, -1.3, -0.9, -1.9],
        "ref_rejected_logps": [-1.3, -1.5, -1.7, -2.1],
        "score_chosen": [4.0, 3.5, 2.0, 5.0],
        "score_rejected": [2.0, 3.0, 1.0, 4.5],
        "chosen_nll": [1.0, 1.6, 0.7, 2.2],
    }
    tensors = {k: torch.tensor(v, dtype=dtype) for k, v in values.items()}
    if requires_grad:
        for tensor in tensors.values():
            tensor.requires_grad_(True)
    return tensors


def compute(spec: LossSpec, inputs: dict[str, torch.Tensor], **hyperparams):
    return spec.compute(
        inputs["policy_chosen_logps"],
        inputs["policy_rejected_logps"],
        ref_chosen_logps=inputs["ref_chosen_logps"],
        ref_rejected_logps=inputs["ref_rejected_logps"],
        score_chosen=inputs["score_chosen"],
        score_rejected=inputs["score_rejected"],
        chosen_nll=inputs["chosen_nll"],
        **hyperparams,
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_outputs_have_pair_shape_and_rewards_metrics_are_detached(name):
    out = compute(LOSSES[name], make_inputs(requires_grad=True))
    assert out.losses.shape == (B,) and out.losses.requires_grad
    for tensor in (out.chosen_rewards, out.rejected_rewards, *out.metrics.values()):
        assert tensor.shape == (B,)
        assert not tensor.requires_grad
    assert "margin" in out.metrics


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("side", ["raise_chosen", "lower_rejected"])
def test_pair_the_policy_prefers_more_has_lower_loss(name, side):
    inputs = make_inputs()
    before = compute(LOSSES[name], inputs).losses
    if side == "raise_chosen":
        inputs["policy_chosen_logps"] = inputs["policy_chosen_logps"] + 0.05
    else:
        inputs["policy_rejected_logps"] = inputs["policy_rejected_logps"] - 0.05
    after = compute(LOSSES[name], inputs).losses
    assert torch.all(after < before), (before, after)


def test_uni_dpo_without_weights_and_nll_equals_dpo():
    inputs = make_inputs()
    logps = [inputs[k] for k in list(inputs)[:4]]
    uni = uni_dpo_loss(
        *logps,
        inputs["score_chosen"],
        inputs["score_rejected"],
        beta=2.0,
        nll_lambda=0.0,
        use_quality_weight=False,
        use_perf_weight=False,
    )
    dpo = dpo_loss(*logps, beta=2.0)
    torch.testing.assert_close(uni.losses, dpo.losses)
    torch.testing.assert_close(uni.chosen_rewards, dpo.chosen_rewards)
    torch.testing.assert_close(uni.rejected_rewards, dpo.rejected_rewards)
    assert torch.all(uni.metrics["w_qual"] == 1) and torch.all(uni.metrics["w_perf"] == 1)


def uni(inputs, **hyperparams):
    names = list(inputs)[:6]
    return uni_dpo_loss(*(inputs[k] for k in names), nll_lambda=0.2, **hyperparams)


def test_uni_dpo_gradcheck_float64_with_w_perf_in_the_graph():
    """The authors' form: gradient flows through w_perf as well as through log σ(βΔ)."""
    inputs = make_inputs(torch.float64)
    logps = tuple(inputs[k].requires_grad_(True) for k in list(inputs)[:4])
    scores = (inputs["score_chosen"], inputs["score_rejected"])

    def objective(*x):
        return uni_dpo_loss(*x, *scores, nll_lambda=0.2).losses

    assert torch.autograd.gradcheck(objective, logps)


def test_uni_dpo_gradcheck_float64_with_w_perf_detached():
    """With w_perf detached the gradient is that of mean(W · loss without w_perf), W frozen.

    λ = 0 here because the c-NLL term is added, not multiplied by w_perf. The surrogate is
    gradchecked, and the detached loss's autograd gradient must equal the surrogate's.
    """
    inputs = make_inputs(torch.float64)
    logps = tuple(inputs[k].requires_grad_(True) for k in list(inputs)[:4])
    scores = (inputs["score_chosen"], inputs["score_rejected"])
    detached = uni_dpo_loss(*logps, *scores, nll_lambda=0.0, detach_perf_weight=True)
    frozen_w_perf = detached.metrics["w_perf"]
    assert not torch.all(frozen_w_perf == 1)

    def surrogate(*x):
        plain = uni_dpo_loss(*x, *scores, nll_lambda=0.0, use_perf_weight=False)
        return frozen_w_perf * plain.losses

    assert torch.autograd.gradcheck(surrogate, logps)
    grads_detached = torch.autograd.grad(detached.losses.sum(), logps)
    grads_surrogate = torch.autograd.grad(surrogate(*logps).sum(), logps)
    for got, want in zip(grads_detached, grads_surrogate, strict=True):
        torch.testing.assert_close(got, want)
    # Detaching changes the gradient, never the value.
    in_graph = uni_dpo_loss(*logps, *scores, nll_lambda=0.0)
    torch.testing.assert_close(in_graph.losses, detached.losses)
    grad_in_graph = torch.autograd.grad(in_graph.losses.sum(), logps[0])[0]
    assert not torch.allclose(grad_in_graph, grads_detached[0])


def test_c_nll_gate_blocks_gradient_through_its_indicators():
    """The c-NLL part, uni_dpo minus dpo with both weights off, is −λ c ℓ_w exactly:
    d/dℓ_w = −λ c, and nothing reaches ℓ_w⁰ or S_w through the gate."""
    inputs = make_inputs(torch.float64, requires_grad=True)
    logps = [inputs[k] for k in list(inputs)[:4]]
    scores = [inputs["score_chosen"], inputs["score_rejected"]]
    switches = {"use_quality_weight": False, "use_perf_weight": False}
    out = uni_dpo_loss(*logps, *scores, beta=2.0, nll_lambda=0.2, tau_good=3.2, **switches)
    c_nll = out.losses - dpo_loss(*logps, beta=2.0).losses
    gate = out.metrics["nll_gate"]
    # ℓ⁰_w > ℓ_w on pairs 1 and 3; S_w ≥ 3.2 on pairs 0, 1 and 3.
    torch.testing.assert_close(gate, torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64))
    grad_policy, grad_ref, grad_score = torch.autograd.grad(
        c_nll.sum(), [logps[0], logps[2], scores[0]], allow_unused=True
    )
    torch.testing.assert_close(grad_policy, -0.2 * gate)
    torch.testing.assert_close(grad_ref, torch.zeros_like(grad_ref))
    assert grad_score is None


def test_uni_dpo_pairs_without_scores_get_unit_quality_weight_and_no_nll():
    inputs = make_inputs()
    inputs["score_chosen"][1] = float("nan")
    inputs["score_rejected"][3] = float("nan")
    out = uni(inputs)
    assert torch.isfinite(out.losses).all()
    assert out.metrics["w_qual"][1] == 1 and out.metrics["w_qual"][3] == 1
    assert out.metrics["nll_gate"][1] == 0  # ℓ⁰_w > ℓ_w here, but no score: gate stays shut
    assert out.metrics["nll_gate"][3] == 1  # S_w = 5 ≥ τ_good: only the margin is unknown
    assert out.metrics["w_qual"][0] == torch.sigmoid(torch.tensor(0.7 * 2.0))


def test_uni_dpo_accepts_a_threshold_per_pair():
    """S_w = (4, 3.5, 2, 5) and ℓ⁰_w > ℓ_w on pairs 1 and 3; τ_good = (0, 4, 0, 4) opens pair 3."""
    inputs = make_inputs()
    tau_good = torch.tensor([0.0, 4.0, 0.0, 4.0])
    out = uni(inputs, tau_good=tau_good)
    torch.testing.assert_close(out.metrics["nll_gate"], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_spec_compute_fills_missing_scores_with_nan():
    inputs = make_inputs()
    spec = get_loss("uni_dpo")
    out = spec.compute(*(inputs[k] for k in list(inputs)[:4]))
    assert torch.all(out.metrics["w_qual"] == 1) and torch.all(out.metrics["nll_gate"] == 0)


def test_uni_dpo_switches_off_each_component():
    inputs = make_inputs()
    full = uni(inputs)
    no_qual = uni(inputs, use_quality_weight=False)
    no_perf = uni(inputs, use_perf_weight=False)
    assert torch.all(no_qual.metrics["w_qual"] == 1) and not torch.all(full.metrics["w_qual"] == 1)
    assert torch.all(no_perf.metrics["w_perf"] == 1) and not torch.all(full.metrics["w_perf"] == 1)
    without_nll = uni_dpo_loss(*(inputs[k] for k in list(inputs)[:6]), nll_lambda=0.0)
    nll = -0.2 * full.metrics["nll_gate"] * inputs["policy_chosen_logps"]
    torch.testing.assert_close(full.losses, without_nll.losses + nll)


def test_cdpo_with_zero_smoothing_is_dpo_and_bad_smoothing_raises():
    logps = [make_inputs()[k] for k in list(make_inputs())[:4]]
    torch.testing.assert_close(
        dpo_loss(*logps, label_smoothing=0.0).losses, dpo_loss(*logps).losses
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*logps, label_smoothing=0.5)


def test_registry_declares_needs():
    expected = {
        "dpo": (True, False, ()),
        "ipo": (True, True, ()),
        "hinge": (True, False, ()),
        "simpo": (False, True, ()),
        "orpo": (False, True, ("chosen_nll",)),
        "uni_dpo": (True, True, ("score_chosen", "score_rejected")),
    }
    declared = {
        name: (spec.needs_reference, spec.length_normalized, spec.extra_inputs)
        for name, spec in LOSSES.items()
    }
    assert declared == expected
    assert all(spec.name == name for name, spec in LOSSES.items())


def test_defaults_come_from_the_signature():
    assert get_loss("dpo").defaults == {"beta": 0.1, "label_smoothing": 0.0}
    uni_defaults = get_loss("uni_dpo").defaults
    assert uni_defaults["beta"] == 2.0 and uni_defaults["detach_perf_weight"] is False
    assert get_loss("simpo").resolve_kwargs({"gamma": 0.5}) == {"beta": 2.0, "gamma": 0.5}


def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(
        ValueError, match="unknown loss 'kto'.*dpo, hinge, ipo, orpo, simpo, uni_dpo"
    ):
        get_loss("kto")


def test_unknown_hyperparameter_names_loss_and_valid_keys():
    with pytest.raises(ValueError, match=r"loss 'dpo'.*\['gama'\].*beta, label_smoothing"):
        get_loss("dpo").resolve_kwargs({"gama": 1.0})
    inputs = make_inputs()
    with pytest.raises(ValueError, match="loss 'simpo'"):
        compute(get_loss("simpo"), inputs, beta=2.0, tau_ref=1.0)


def test_missing_reference_raises_and_reference_free_losses_ignore_it():
    inputs = make_inputs()
    pair = (inputs["policy_chosen_logps"], inputs["policy_rejected_logps"])
    with pytest.raises(ValueError, match="needs reference"):
        get_loss("dpo").compute(*pair)
    assert get_loss("simpo").compute(*pair).losses.shape == (B,)
    assert get_loss("orpo").compute(*pair).losses.shape == (B,)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        dpo_loss(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_value_rules_name_real_hyperparameters_and_accept_the_defaults(name):
    spec = LOSSES[name]
    assert set(spec.rules) <= set(spec.defaults)
    assert spec.check_values(spec.defaults) == {}
    bad = {key: "high" for key in spec.defaults}
    assert set(spec.check_values(bad)) == set(spec.defaults)
