"""Reference-model helpers: the policy with its adapter off, and freezing a separate model.

The engine's ``mmdpo.objective.ReferenceModel`` picks the mode (adapter_off, model,
precomputed, none); the forwards here run under ``torch.no_grad`` in eval mode (dropout off),
and the policy's train/eval state is restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode under ``torch.no_grad``; each module's mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def reference_context(policy: nn.Module) -> Iterator[nn.Module]:
    """The policy with every LoRA adapter switched off: the base model, no second copy."""
    if not hasattr(policy, "disable_adapter"):
        raise TypeError(
            "reference mode 'adapter_off' needs a peft model (LoRA); got "
            f"{type(policy).__name__}. Use reference mode 'model' or 'precomputed'."
        )
    with eval_no_grad(policy), policy.disable_adapter():
        yield policy


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter requires grad; returns ``model``."""
    model.eval()
    model.requires_grad_(False)
    return model
