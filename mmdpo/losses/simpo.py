"""SimPO: a reference-free margin loss on length-normalised log-probs (Meng et al. 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdpo.losses.base import check_pair_tensors
from mmdpo.types import LossOutput


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
) -> LossOutput:
    """SimPO: −log σ(β ℓ_w − β ℓ_l − γ), with ℓ the mean per-token log-prob.

    ``gamma`` is the target reward margin γ itself, as written in the paper's objective; the
    authors' code and hyperparameter tables use the ratio γ/β instead, so their ratio r maps
    to ``gamma = r * beta`` here.

    Args:
        policy_chosen_logps, policy_rejected_logps: mean per-token log-probs. Shape: (B,)
        beta: reward scale β.
        gamma: target reward margin γ.

    Returns:
        LossOutput with metrics ``margin`` (β(ℓ_w − ℓ_l) − γ, the sigmoid's argument).
    """
    check_pair_tensors(
        policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps
    )
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    # Length-normalised reward r = β/|y| log π(y|x), Meng et al. 2024, Eq. 4.
    chosen_rewards = beta * policy_chosen_logps
    rejected_rewards = beta * policy_rejected_logps
    # SimPO objective, Meng et al. 2024, Eq. 6: −log σ(r_w − r_l − γ).
    logits = chosen_rewards - rejected_rewards - gamma
    losses = -F.logsigmoid(logits)
    return LossOutput(
        losses,
        chosen_rewards.detach(),
        rejected_rewards.detach(),
        {"margin": logits.detach()},
    )
