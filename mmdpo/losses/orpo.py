"""ORPO: supervised NLL plus an odds-ratio preference term, no reference (Hong et al. 2024)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmdpo.losses.base import check_pair_tensors
from mmdpo.types import LossOutput


def _log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, stable near 0 and for large |x| (Mächler 2012, log1mexp)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_nll: torch.Tensor | None = None,
    *,
    odds_ratio_weight: float = 0.1,
) -> LossOutput:
    """ORPO: NLL_w − λ log σ(log odds(y_w) − log odds(y_l)), with odds from mean log-probs.

    Args:
        policy_chosen_logps, policy_rejected_logps: mean per-token log-probs ℓ (< 0). Shape: (B,)
        chosen_nll: the supervised loss on the chosen response, per pair. When None, it is
            −ℓ_w, the chosen response's mean per-token NLL. Shape: (B,)
        odds_ratio_weight: λ, the weight of the odds-ratio term.

    Returns:
        LossOutput with rewards λ·ℓ (as TRL logs them) and metrics ``margin`` (the log
        odds ratio, the sigmoid's argument) and ``nll``.
    """
    check_pair_tensors(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        chosen_nll=chosen_nll,
    )
    # Odds of a response, Hong et al. 2024, Eq. 4: P/(1 − P), with P = exp(ℓ) the geometric
    # mean per-token likelihood; so log odds = ℓ − log(1 − exp(ℓ)).
    log_odds_chosen = policy_chosen_logps - _log1m_exp(policy_chosen_logps)
    log_odds_rejected = policy_rejected_logps - _log1m_exp(policy_rejected_logps)
    log_odds_ratio = log_odds_chosen - log_odds_rejected
    nll = -policy_chosen_logps if chosen_nll is None else chosen_nll
    # ORPO objective, Hong et al. 2024, Eqs. 6-7: L_SFT + λ·(−log σ(log OR)).
    losses = nll - odds_ratio_weight * F.logsigmoid(log_odds_ratio)
    return LossOutput(
        losses,
        odds_ratio_weight * policy_chosen_logps.detach(),
        odds_ratio_weight * policy_rejected_logps.detach(),
        {
            "margin": log_odds_ratio.detach(),
            "nll": nll.detach(),
        },
    )
