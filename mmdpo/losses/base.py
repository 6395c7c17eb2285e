"""The loss spec: one registry entry, its declared needs, its defaults, and a uniform call."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mmdpo.types import LossOutput


def check_pair_tensors(**tensors: torch.Tensor | None) -> None:
    """Raise a ValueError unless every given tensor is 1-D and all share one shape (B,)."""
    present = {name: t for name, t in tensors.items() if t is not None}
    shapes = {name: tuple(t.shape) for name, t in present.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        raise ValueError(f"loss inputs must all have shape (B,); got {shapes}")


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


# What a hyperparameter may hold: rule name -> (test, the words of the error message).
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "number": (_is_number, "a finite number"),
    "positive": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "non_negative": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "below_half": (lambda v: _is_number(v) and 0 <= v < 0.5, "a number in [0, 0.5)"),
    "number_or_auto": (lambda v: v == "auto" or _is_number(v), "a finite number or 'auto'"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def _default_rule(default: Any) -> str:
    return "bool" if isinstance(default, bool) else "number"


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the loss function and what the engine must give it.

    Attributes:
        name: the registry key.
        fn: the pure loss function; its keyword-only parameters are the hyperparameters.
        needs_reference: the loss reads reference log-probs (``ref_chosen_logps``,
            ``ref_rejected_logps``); the engine must run or load the reference.
        length_normalized: the loss expects mean per-token log-probs, not summed ones.
        extra_inputs: further per-pair inputs the loss reads: ``score_chosen``/``score_rejected``
            or ``chosen_nll``.
        summary: one line for docs and ``--help``.
        rules: hyperparameter -> a ``VALUE_RULES`` name, checked when a config is read; a
            hyperparameter not named here must be a finite number (true/false for a bool
            default).
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    length_normalized: bool
    extra_inputs: tuple[str, ...] = ()
    summary: str = ""
    rules: Mapping[str, str] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyperparameters and their default values, read from the function signature."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def resolve_kwargs(self, loss_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``loss_kwargs``; an unknown key raises a ValueError."""
        defaults = self.defaults
        loss_kwargs = dict(loss_kwargs or {})
        unknown = sorted(set(loss_kwargs) - set(defaults))
        if unknown:
            raise ValueError(
                f"loss {self.name!r} got unknown hyperparameter(s) {unknown}; "
                f"valid keys: {', '.join(sorted(defaults))}"
            )
        return {**defaults, **loss_kwargs}

    def check_values(self, loss_kwargs: Mapping[str, Any]) -> dict[str, str]:
        """Each given hyperparameter whose value its rule rejects -> the reason, e.g.
        ``{"beta": "expected a positive number, got 'high'"}`` (unknown keys: ``resolve_kwargs``).
        """
        defaults = self.defaults
        problems = {}
        for key, value in loss_kwargs.items():
            if key not in defaults:
                continue
            test, words = VALUE_RULES[self.rules.get(key, _default_rule(defaults[key]))]
            if not test(value):
                problems[key] = f"expected {words}, got {value!r}"
        return problems

    def compute(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        ref_chosen_logps: torch.Tensor | None = None,
        ref_rejected_logps: torch.Tensor | None = None,
        score_chosen: torch.Tensor | None = None,
        score_rejected: torch.Tensor | None = None,
        chosen_nll: torch.Tensor | None = None,
        **hyperparams: Any,
    ) -> LossOutput:
        """Call the loss with the inputs it declares; the engine calls every loss this way.

        Inputs the loss does not declare are ignored. Missing reference log-probs raise a
        ValueError when ``needs_reference``. Missing scores become NaN, which the losses
        read as "no score" (the batch convention). ``chosen_nll`` may stay None.
        """
        kwargs = self.resolve_kwargs(hyperparams)
        inputs: dict[str, torch.Tensor | None] = {}
        if self.needs_reference:
            if ref_chosen_logps is None or ref_rejected_logps is None:
                raise ValueError(f"loss {self.name!r} needs reference log-probs")
            inputs.update(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
        if "score_chosen" in self.extra_inputs:
            missing = torch.full_like(policy_chosen_logps.detach(), float("nan"))
            inputs["score_chosen"] = missing if score_chosen is None else score_chosen
            inputs["score_rejected"] = missing if score_rejected is None else score_rejected
        if "chosen_nll" in self.extra_inputs:
            inputs["chosen_nll"] = chosen_nll
        return self.fn(policy_chosen_logps, policy_rejected_logps, **inputs, **kwargs)
