"""The reference-based pairwise family: DPO (sigmoid, cDPO), IPO and the hinge (SLiC) loss.

All three act on the reference-adjusted log-ratio margin
h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)) and log the implicit
rewards β·(log π − log π_ref) (DPO, Rafailov et al. 2023, Eq. 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdpo.losses.base import check_pair_tensors
from mmdpo.types import LossOutput


def _margin_and_rewards(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_pair_tensors(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    # Implicit reward r = β log π/π_ref (Rafailov et al. 2023, Eq. 5, without the β log Z term).
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return chosen_logratios - rejected_logratios, chosen_rewards, rejected_rewards


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """DPO with the sigmoid link; ``label_smoothing`` ε > 0 gives conservative DPO (cDPO).

    Args:
        policy_chosen_logps, policy_rejected_logps: summed log-probs of the responses under
            the policy. Shape: (B,)
        ref_chosen_logps, ref_rejected_logps: the same under the reference. Shape: (B,)
        beta: the KL-regularisation strength β.
        label_smoothing: the assumed probability ε ∈ [0, 0.5) that a label is flipped.

    Returns:
        LossOutput with metrics ``margin`` (β·h, the sigmoid's argument).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    margin, chosen_rewards, rejected_rewards = _margin_and_rewards(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    logits = beta * margin
    # DPO objective, Rafailov et al. 2023, Eq. 7: −log σ(β h).
    # cDPO, Mitchell 2023 ("A note on DPO with noisy preferences"): the same loss against soft
    # labels, −(1 − ε) log σ(β h) − ε log σ(−β h).
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(
        -logits
    )
    return LossOutput(losses, chosen_rewards, rejected_rewards, {"margin": logits.detach()})


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """IPO: the squared distance of the log-ratio margin from 1/(2β).

    Expects mean per-token log-probs (the form the IPO authors used in practice and TRL
    implements); β is the regulariser the paper calls τ.

    Returns:
        LossOutput with metrics ``margin`` (h).
    """
    margin, chosen_rewards, rejected_rewards = _margin_and_rewards(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    # IPO, Azar et al. 2023 (ΨPO paper), Eq. 17: (h − 1/(2τ))², with τ = β.
    losses = (margin - 1.0 / (2.0 * beta)) ** 2
    return LossOutput(losses, chosen_rewards, rejected_rewards, {"margin": margin.detach()})


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """The hinge (SLiC) loss on the reference-adjusted margin: relu(1 − β h).

    Returns:
        LossOutput with metrics ``margin`` (β·h).
    """
    margin, chosen_rewards, rejected_rewards = _margin_and_rewards(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    logits = beta * margin
    # SLiC-HF calibration loss, Zhao et al. 2023, Eq. 1: max(0, δ − log P(y_w) + log P(y_l)),
    # here on reference-normalised log-ratios with δ = 1/β and scaled by β (the "hinge-norm"
    # loss of RSO, Liu et al. 2024, §3).
    losses = torch.relu(1.0 - logits)
    return LossOutput(losses, chosen_rewards, rejected_rewards, {"margin": logits.detach()})
