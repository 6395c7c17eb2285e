"""LoRA adapters: which linear layers get one (language model only, unless asked), and peft.

A module is classified by the components of its dotted name, against the vision-tower and
projector names of every family in ``mmdpo.models.families`` (projector names win, since
a merger may sit inside the tower), so families laid out the same way need no new names.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from mmdpo.models.families import projector_names, vision_tower_names
from mmdpo.models.loading import enable_gradient_checkpointing

PROJECTOR_NAMES = projector_names()
VISION_TOWER_NAMES = vision_tower_names()
OUTPUT_HEAD_NAMES = frozenset({"lm_head"})


def module_part(name: str) -> str:
    """``"projector"``, ``"vision_tower"`` or ``"language"`` for a dotted module name."""
    components = set(name.split("."))
    if components & PROJECTOR_NAMES:
        return "projector"
    if components & VISION_TOWER_NAMES:
        return "vision_tower"
    return "language"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == target or name.endswith("." + target) for target in targets)


def lora_target_modules(
    model: nn.Module,
    target_modules: str | Sequence[str] = "all-linear",
    *,
    freeze_vision_tower: bool = True,
    freeze_projector: bool = False,
) -> list[str]:
    """Full names of the linear layers that get a LoRA adapter.

    Args:
        target_modules: ``"all-linear"``: every linear layer (bitsandbytes' 4/8-bit linears
            included) except the output head; or module names, each matching a full name or
            its dotted suffix (``"q_proj"``, ``"mlp.down_proj"``). Only an explicit name
            puts LoRA on ``lm_head``.
        freeze_vision_tower: no adapters in the vision encoder.
        freeze_projector: no adapters in the vision-to-text projector (connector, merger).

    Raises:
        ValueError: when nothing matches.
    """
    output_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    excluded_parts = {"vision_tower"} if freeze_vision_tower else set()
    if freeze_projector:
        excluded_parts.add("projector")
    all_linear = isinstance(target_modules, str) and target_modules == "all-linear"
    if isinstance(target_modules, str) and not all_linear:
        target_modules = [target_modules]
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module_part(name) in excluded_parts:
            continue
        if all_linear:
            is_head = module is output_head or name.split(".")[-1] in OUTPUT_HEAD_NAMES
            if not is_head:
                names.append(name)
        elif _matches(name, target_modules):
            names.append(name)
    if not names:
        frozen = ", ".join(sorted(excluded_parts)) or "nothing"
        raise ValueError(
            f"no linear layer matches target_modules={target_modules!r} (frozen: {frozen})"
        )
    return names


def apply_lora(
    model: nn.Module,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: str | Sequence[str] = "all-linear",
    modules_to_save: Sequence[str] | None = None,
    freeze_vision_tower: bool = True,
    freeze_projector: bool = False,
    gradient_checkpointing: bool = False,
) -> PeftModel:
    """Wrap ``model`` in a peft LoRA model; only the adapters (and ``modules_to_save``) train.

    The targets are resolved to full module names by :func:`lora_target_modules`, so a
    vision tower whose layers share names with the language model's (CLIP's ``q_proj``) never
    gets an adapter by accident. An unfrozen projector gets LoRA adapters like any target;
    to train it in full instead, name it in ``modules_to_save`` (not on a quantized model:
    its 4/8-bit weights cannot train).
    """
    targets = lora_target_modules(
        model,
        target_modules,
        freeze_vision_tower=freeze_vision_tower,
        freeze_projector=freeze_projector,
    )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return get_peft_model(model, config)
