"""The loss spec: one registry entry, its declared needs, its defaults, and a uniform call."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    length_normalized: bool
    extra_inputs: tuple[str, ...] = ()
    summary: str = ""

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
