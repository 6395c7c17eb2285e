"""Uni-DPO: DPO weighted by data quality and by model fit, plus a calibrated NLL term.

Uni-DPO, Peng et al., arXiv 2506.10054 (ICLR 2026), exactly as in the authors' code
(``uni_dpo_loss`` in ``Textual/train/scripts/uni_dpo_trainer.py``, the same in their math and
vision trees) and in DESIGN.md. All log-probs are mean per-token log-probs ℓ.

Pairs without scores (NaN in ``score_chosen`` or ``score_rejected``, the batch convention)
get w_qual = 1 (plain DPO weight) and a closed c-NLL gate (c = 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdpo.losses.base import check_pair_tensors
from mmdpo.types import LossOutput


def quality_weight(
    score_chosen: torch.Tensor, score_rejected: torch.Tensor, eta: float, dtype: torch.dtype
) -> torch.Tensor:
    """Quality-aware weight, Uni-DPO §"w_qual": σ(η (S_w − S_l)) on raw scores; a constant
    (scores carry no gradient). Pairs without scores (NaN) keep weight 1. Shape: (B,)"""
    has_scores = ~(torch.isnan(score_chosen) | torch.isnan(score_rejected))
    score_margin = (score_chosen - score_rejected).to(dtype).detach()
    ones = torch.ones(score_margin.shape, dtype=dtype, device=score_margin.device)
    return torch.where(has_scores, torch.sigmoid(eta * score_margin), ones)


def perf_weight(
    policy_margin: torch.Tensor, beta: float, tau_ref: float, gamma: float
) -> torch.Tensor:
    """Performance-aware (focal) weight, Uni-DPO §"w_perf": (1 − σ(β(ℓ_w − ℓ_l) − τ_ref))^γ
    on the policy-only margin. Computed as exp(γ · log σ(−x)), since 1 − σ(x) = σ(−x), which
    stays finite where σ(−x) underflows. Shape: (B,)"""
    return torch.exp(gamma * F.logsigmoid(-(beta * policy_margin - tau_ref)))


@torch.no_grad()
def nll_gate(
    ref_chosen_logps: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    score_chosen: torch.Tensor,
    tau_good: float | torch.Tensor,
) -> torch.Tensor:
    """Calibrated NLL gate, Uni-DPO §"c-NLL": c = 1[ℓ_w⁰ > ℓ_w] · 1[S_w ≥ τ_good]. No gradient;
    a NaN score compares False, so unscored pairs are never gated on. Shape: (B,)"""
    gate = (ref_chosen_logps > policy_chosen_logps) & (score_chosen >= tau_good)
    return gate.to(policy_chosen_logps.dtype)


def uni_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    score_chosen: torch.Tensor,
    score_rejected: torch.Tensor,
    *,
    beta: float = 2.0,
    eta: float = 0.7,
    tau_ref: float = 2.0,
    gamma: float = 3.0,
    nll_lambda: float = 0.001,
    tau_good: float | torch.Tensor = 3.2,
    detach_perf_weight: bool = False,
    use_quality_weight: bool = True,
    use_perf_weight: bool = True,
) -> LossOutput:
    """Per pair: −w_qual · w_perf · log σ(β Δ) − λ · c · ℓ_w.

    Args:
        policy_chosen_logps, policy_rejected_logps: policy mean log-probs ℓ_w, ℓ_l. Shape: (B,)
        ref_chosen_logps, ref_rejected_logps: reference mean log-probs ℓ_w⁰, ℓ_l⁰. Shape: (B,)
        score_chosen, score_rejected: raw quality scores S_w, S_l; NaN where absent. Shape: (B,)
        beta: β, scales the DPO margin and the policy margin inside w_perf.
        eta: η, sharpness of the quality weight.
        tau_ref: τ_ref, the policy margin at which w_perf is 2^−γ.
        gamma: γ, the focal exponent of w_perf.
        nll_lambda: λ, the weight of the calibrated NLL; 0 switches it off.
        tau_good: τ_good, the chosen score from which a response counts as good; a float,
            or a tensor of shape (B,) for a threshold per pair (per calibration group).
        detach_perf_weight: stop gradient through w_perf (the authors' code does not).
        use_quality_weight: False sets w_qual = 1 (the "without w_qual" ablation).
        use_perf_weight: False sets w_perf = 1 (the "without w_perf" ablation).

    Returns:
        LossOutput with rewards β(ℓ − ℓ⁰) and metrics ``w_qual``, ``w_perf``, ``nll_gate``
        (c), ``margin`` (β Δ), ``policy_margin`` (ℓ_w − ℓ_l).
    """
    check_pair_tensors(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
        score_chosen=score_chosen,
        score_rejected=score_rejected,
    )
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    policy_margin = policy_chosen_logps - policy_rejected_logps
    # Δ = (ℓ_w − ℓ_w⁰) − (ℓ_l − ℓ_l⁰): the DPO log-ratio margin (Rafailov et al. 2023, Eq. 7).
    margin = policy_margin - (ref_chosen_logps - ref_rejected_logps)
    logits = beta * margin

    w_qual = (
        quality_weight(score_chosen, score_rejected, eta, policy_margin.dtype)
        if use_quality_weight
        else torch.ones_like(policy_margin)
    )
    if use_perf_weight:
        w_perf = perf_weight(policy_margin, beta, tau_ref, gamma)
        if detach_perf_weight:
            w_perf = w_perf.detach()
    else:
        w_perf = torch.ones_like(policy_margin)

    c = nll_gate(ref_chosen_logps, policy_chosen_logps, score_chosen, tau_good)

    # Uni-DPO objective: −w_qual · w_perf · log σ(β Δ) + λ · c · (−ℓ_w); the engine takes the mean.
    losses = -w_qual * w_perf * F.logsigmoid(logits) - nll_lambda * c * policy_chosen_logps

    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    weights = {"w_qual": w_qual.detach(), "w_perf": w_perf.detach(), "nll_gate": c}
    margins = {"margin": logits.detach(), "policy_margin": policy_margin.detach()}
    return LossOutput(losses, chosen_rewards, rejected_rewards, {**weights, **margins})
