"""The per-batch objective: policy forward, reference log-probs, and the loss, in one place."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from mmdpo.forward import PairLogps, concatenated_forward, unwrap
from mmdpo.losses import LossSpec
from mmdpo.models.reference import reference_context
from mmdpo.reference_cache import ReferenceCache
from mmdpo.types import LossOutput, PreferenceBatch


class ReferenceModel:
    """Reference log-probs for a batch, whichever way the run gets them.

    Modes:
        adapter_off: the policy with its LoRA adapter switched off (no second copy). Give the
            policy as ``accelerator.prepare`` returned it: under FSDP the forward must run
            through the wrapper, which gathers the root unit's weights.
        model: a separate frozen model.
        precomputed: looked up in a :class:`ReferenceCache` filled before training; the batch's
            pair ids map to cache keys through ``keys_by_id``.
        none: the loss is reference-free; asking is a bug.
    """

    def __init__(
        self,
        mode: str,
        *,
        policy: Any = None,
        model: Any = None,
        cache: ReferenceCache | None = None,
        keys_by_id: dict[str, str] | None = None,
    ):
        self.mode = mode
        self.policy = policy
        self.model = model
        self.cache = cache
        self.keys_by_id = keys_by_id or {}

    @torch.no_grad()
    def logps(self, batch: PreferenceBatch) -> PairLogps:
        if self.mode == "adapter_off":
            with adapter_disabled(self.policy):
                return concatenated_forward(self.policy, batch).detach()
        if self.mode == "model":
            return concatenated_forward(self.model, batch).detach()
        if self.mode == "precomputed":
            table = self.cache.lookup([self.keys_by_id[i] for i in batch.ids])
            table = table.to(batch.input_ids.device)
            return PairLogps(table[:, 0], table[:, 1], table[:, 2], table[:, 3])
        raise RuntimeError(f"reference log-probs requested with reference mode {self.mode!r}")


@contextlib.contextmanager
def adapter_disabled(model: Any):
    """The policy with its LoRA adapter off, in eval mode under no_grad (the reference)."""
    with reference_context(unwrap(model)) as base:
        yield base


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
) -> BatchObjective:
    """Policy forward (chosen and rejected rows together), reference, loss; mean over pairs."""
    policy = concatenated_forward(model, batch)
    ref = reference.logps(batch) if spec.needs_reference else None
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
