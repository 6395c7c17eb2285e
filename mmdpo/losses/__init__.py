"""The loss library: pure functions from per-pair sequence log-probs to per-pair losses.

Every loss takes per-pair log-probs of shape (B,) plus keyword hyperparameters and returns a
``LossOutput``: unreduced ``losses`` (B,) whose mean is the objective, detached
``chosen_rewards``/``rejected_rewards`` (B,), and ``metrics``, detached per-pair tensors (B,)
(every loss logs ``margin``, the argument of its link function).

The engine calls every loss the same way, through its registry entry::

    spec = get_loss(config.loss)                  # ValueError listing valid names if unknown
    hyperparams = spec.resolve_kwargs(loss_kwargs) # defaults + overrides; unknown keys raise
    out = spec.compute(
        policy_chosen_logps, policy_rejected_logps,
        ref_chosen_logps=..., ref_rejected_logps=...,   # read only if spec.needs_reference
        score_chosen=..., score_rejected=...,           # read only if in spec.extra_inputs
        chosen_nll=...,                                 # read only if in spec.extra_inputs
        **hyperparams,
    )
    out.losses.mean().backward()

A run resolves its loss once, ``resolve_loss(name, kwargs, length_normalized)`` (or
``config.loss.resolve()``): a ``LossSetting`` with the spec, the hyperparameters (each value
checked against the spec's ``rules``) and the choice of mean or summed log-probs, which
training, evaluation and export share.

The engine asks ``spec.needs_reference`` whether to run the reference, and
``spec.length_normalized`` whether to pass mean per-token log-probs (True) or summed ones
(False). Turning length normalisation off for ``uni_dpo`` (the paper's ablation) is the
engine's switch, not the loss's. Formulas, papers and defaults: docs/losses.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmdpo.losses.base import LossSpec, check_pair_tensors
from mmdpo.losses.dpo import dpo_loss, hinge_loss, ipo_loss
from mmdpo.losses.orpo import orpo_loss
from mmdpo.losses.simpo import simpo_loss
from mmdpo.losses.uni_dpo import uni_dpo_loss

LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(
        name="dpo",
        fn=dpo_loss,
        needs_reference=True,
        length_normalized=False,
        summary="DPO, sigmoid link; label_smoothing > 0 gives cDPO",
        rules={"beta": "positive", "label_smoothing": "below_half"},
    ),
    "ipo": LossSpec(
        name="ipo",
        fn=ipo_loss,
        needs_reference=True,
        length_normalized=True,
        summary="IPO, squared loss towards a margin of 1/(2β)",
        rules={"beta": "positive"},
    ),
    "hinge": LossSpec(
        name="hinge",
        fn=hinge_loss,
        needs_reference=True,
        length_normalized=False,
        summary="SLiC hinge on the reference-adjusted margin",
        rules={"beta": "positive"},
    ),
    "simpo": LossSpec(
        name="simpo",
        fn=simpo_loss,
        needs_reference=False,
        length_normalized=True,
        summary="SimPO, reference-free with target margin γ",
        rules={"beta": "positive"},
    ),
    "orpo": LossSpec(
        name="orpo",
        fn=orpo_loss,
        needs_reference=False,
        length_normalized=True,
        extra_inputs=("chosen_nll",),
        summary="ORPO, chosen NLL plus an odds-ratio term",
        rules={"odds_ratio_weight": "non_negative"},
    ),
    "uni_dpo": LossSpec(
        name="uni_dpo",
        fn=uni_dpo_loss,
        needs_reference=True,
        length_normalized=True,
        extra_inputs=("score_chosen", "score_rejected"),
        summary="Uni-DPO: quality and performance weights plus calibrated NLL",
        rules={
            "beta": "positive",
            "eta": "non_negative",
            "gamma": "non_negative",
            "nll_lambda": "non_negative",
            "tau_good": "number_or_auto",
        },
    ),
}


def get_loss(name: str) -> LossSpec:
    """The registry entry for ``name``; an unknown name raises a ValueError listing valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}"
        ) from None


@dataclass(frozen=True)
class LossSetting:
    """A run's loss, resolved once and used alike by training, evaluation and export.

    Attributes:
        spec: the registry entry.
        hyperparams: the loss's defaults overridden by the run's ``loss.kwargs``.
        average: mean per-token log-probs (True) or summed ones (False): the run's
            ``loss.length_normalized``, or what the loss declares when that is None.
    """

    spec: LossSpec
    hyperparams: dict[str, Any]
    average: bool

    @property
    def name(self) -> str:
        return self.spec.name


def resolve_loss(
    name: str, kwargs: dict[str, Any] | None = None, length_normalized: bool | None = None
) -> LossSetting:
    """The ``LossSetting`` of a loss name, its kwargs and the length-normalisation switch.

    Raises a ValueError for an unknown name or hyperparameter, or a value its rule rejects
    (the message names the hyperparameter).
    """
    spec = get_loss(name)
    hyperparams = spec.resolve_kwargs(kwargs)
    problems = spec.check_values(kwargs or {})
    if problems:
        key, reason = next(iter(problems.items()))
        raise ValueError(f"{key}: {reason}")
    average = spec.length_normalized if length_normalized is None else bool(length_normalized)
    return LossSetting(spec, hyperparams, average)


__all__ = [
    "LOSSES",
    "LossSetting",
    "LossSpec",
    "check_pair_tensors",
    "dpo_loss",
    "get_loss",
    "hinge_loss",
    "ipo_loss",
    "orpo_loss",
    "resolve_loss",
    "simpo_loss",
    "uni_dpo_loss",
]
