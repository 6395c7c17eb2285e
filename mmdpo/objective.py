"""The per-batch objective: policy forward, reference log-probs (``mmdpo.reference``) and the
loss, in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mmdpo.forward import PairLogps, concatenated_forward
from mmdpo.losses import LossSpec
from mmdpo.reference import ReferenceModel
from mmdpo.types import LossOutput, PreferenceBatch


@dataclass
class BatchObjective:
    """Everything one micro-batch produced; ``loss`` carries the gradient."""

    loss: torch.Tensor
    output: LossOutput
    policy: PairLogps
    reference: PairLogps | None
    average: bool


def tau_good_per_pair(
    batch: PreferenceBatch, tau_good: Any, calibration: Any
) -> float | torch.Tensor:
    """``tau_good: auto`` -> the calibrated median chosen score of each pair's group."""
    if tau_good != "auto":
        return tau_good
    if calibration is None:
        raise ValueError("loss.kwargs.tau_good=auto needs the run's score calibration")
    values = [calibration.tau_good(m, s) for m, s in zip(batch.modality, batch.source, strict=True)]
    return torch.tensor(values, dtype=torch.float32, device=batch.input_ids.device)


def compute_objective(
    model: Any,
    batch: PreferenceBatch,
    spec: LossSpec,
    hyperparams: dict[str, Any],
    reference: ReferenceModel | None,
    *,
    average: bool,
    calibration: Any = None,
    forward: Callable[[Any, PreferenceBatch], PairLogps] = concatenated_forward,
) -> BatchObjective:
    """Policy forward (chosen and rejected together, laid out by ``forward``: the run's
    ``PairForward``, two rows by default), reference, loss; mean over pairs."""
    # The images once for the policy and its reference, when the reference can reuse them.
    images = reference.policy_images(model, batch) if spec.needs_reference else None
    policy = forward(model, batch, images=images)
    ref = reference.logps(batch, images) if spec.needs_reference else None
    kwargs = dict(hyperparams)
    if "tau_good" in kwargs:
        kwargs["tau_good"] = tau_good_per_pair(batch, kwargs["tau_good"], calibration)
    output = spec.compute(
        policy.chosen(average),
        policy.rejected(average),
        ref_chosen_logps=None if ref is None else ref.chosen(average),
        ref_rejected_logps=None if ref is None else ref.rejected(average),
        score_chosen=batch.score_chosen.to(policy.chosen_sum.device),
        score_rejected=batch.score_rejected.to(policy.chosen_sum.device),
        chosen_nll=-policy.chosen(True),
        **kwargs,
    )
    return BatchObjective(output.losses.mean(), output, policy, ref, average)
