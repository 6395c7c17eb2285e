"""The reference model, in one place: its modes, the precompute pass, and building it.

Modes (``reference.mode``):

- ``adapter_off``: the policy with its LoRA adapter switched off (no second copy);
- ``model``: a separate frozen model (``reference.model``, default the policy's base);
- ``precomputed``: log-probs computed once before training into a :class:`ReferenceCache`
  (``mmdpo/reference_cache.py``, the storage) and looked up by content hash;
- ``none``: reference-free losses (SimPO, ORPO).

A run uses two steps. :func:`precompute_reference` runs before ``accelerator.prepare``, on the
plain model, in the main process (the others wait, then read the file): under FSDP or ZeRO-3
a forward of the wrapped model in one process only would wait for the others forever.
:func:`build_reference` runs after ``accelerator.prepare`` on the prepared model: under FSDP
the adapter-off forward must go through the wrapper, which gathers the root unit's weights.
Every reference forward runs in eval mode (dropout off) under ``torch.no_grad``; the policy's
train/eval state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdpo.forward import (
    PairImages,
    PairLogps,
    concatenated_forward,
    encode_pair_images,
    project_pair_images,
    unwrap,
)
from mmdpo.reference_cache import ReferenceCache, pair_key
from mmdpo.run_folder import RunFolder
from mmdpo.types import PreferenceBatch, TokenizedPair

MODES = ("adapter_off", "model", "precomputed", "none")


# ---------------------------------------------------------------------------- adapter off


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


@contextlib.contextmanager
def adapter_disabled(model: Any) -> Iterator[Any]:
    """The policy (possibly wrapped by accelerate) with its adapter off, in eval mode under
    no_grad. The wrapper is what runs the forward; the adapter is switched on the module."""
    with reference_context(unwrap(model)):
        yield model


def _train_mode_difference(name: str, module: nn.Module) -> str | None:
    """Why ``module`` computes something else with the adapter off (the reference runs with
    it off, in eval mode), or None."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    if isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper):
        return f"{name} has an adapter"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{name} is a batch norm (train and eval modes differ)"
    rates = [getattr(module, "p", 0.0)] if isinstance(module, nn.Dropout) else []
    rates += [getattr(module, key, 0.0) for key in ("dropout", "attention_dropout")]
    if any(isinstance(rate, float) and rate > 0 for rate in rates):
        return f"{name} drops out in train mode"
    return None


def image_sharing(policy: Any) -> tuple[str | None, str]:
    """How much of the policy's image work the adapter-off reference can reuse, and why.

    Switching the adapter off changes only the modules PEFT wrapped (LoRA layers,
    ``modules_to_save`` copies), and the reference runs in eval mode. So:

    - ``"features"``: nothing in the vision tower or projector changes (no adapter there, no
      dropout or batch norm): the reference takes the policy's image features as they are;
    - ``"tower"``: only the projector changes (LoRA on the projector, the default) and the
      family can run its projector alone (``VLMFamily.project``): the reference re-runs the
      projector, adapter off, on the tower states of the policy's encode;
    - None: the reference encodes its images itself (a text model, an adapter in the tower).

    Returns the mode and a line saying why ("" for a text model).
    """
    from mmdpo.models.families import FAMILIES, is_vlm_config, model_type
    from mmdpo.models.lora import module_part

    inner = unwrap(policy)
    if not is_vlm_config(getattr(inner, "config", None)):
        return None, ""
    reasons: dict[str, str] = {}
    for name, module in inner.named_modules():
        part = module_part(name)
        if part != "language" and part not in reasons:
            reason = _train_mode_difference(name, module)
            if reason:
                reasons[part] = reason
    if not reasons:
        return "features", "the adapter does not reach the vision tower or projector"
    if "vision_tower" in reasons:
        return None, reasons["vision_tower"]
    family = FAMILIES.get(model_type(inner))
    if family is None or family.project is None:
        return None, f"{reasons['projector']} and this family's projector cannot run alone"
    return "tower", f"{reasons['projector']}: the projector runs again, adapter off"


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter requires grad; returns ``model``."""
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------- the reference


class ReferenceModel:
    """Reference log-probs for a batch, whichever way the run gets them (see the modes above).

    Build it with :func:`build_reference` (or directly, as tests and the inference module do).
    """

    def __init__(
        self,
        mode: str,
        *,
        policy: Any = None,
        model: Any = None,
        cache: ReferenceCache | None = None,
        keys_by_id: dict[str, str] | None = None,
        forward: Callable[..., PairLogps] = concatenated_forward,
        shares_images: str | None = None,
        sharing_note: str = "",
    ):
        self.mode = mode
        self.policy = policy
        self.model = model
        self.cache = cache
        self.keys_by_id = keys_by_id or {}
        self.forward = forward  # the run's layout (mmdpo.layout_forward.PairForward)
        # adapter_off: how much of the policy's image work logps() reuses (image_sharing);
        # the step's policy forward then encodes each image once for both.
        self.shares_images = shares_images if mode == "adapter_off" else None
        self.sharing_note = sharing_note  # what image_sharing found, for the run's log

    def policy_images(self, model: Any, batch: PreferenceBatch) -> PairImages | None:
        """The batch's images encoded once, for the policy forward and then :meth:`logps`;
        None when this reference encodes its own (or the batch has none)."""
        if self.shares_images is None or not batch.has_images:
            return None
        return encode_pair_images(model, batch)

    @torch.no_grad()
    def logps(self, batch: PreferenceBatch, images: PairImages | None = None) -> PairLogps:
        """The batch's reference log-probs; ``images``: the policy's encode of the batch's
        images, reused as ``shares_images`` says (without it the reference encodes its own)."""
        if self.mode == "adapter_off":
            with adapter_disabled(self.policy) as base:
                if images is not None and self.shares_images == "tower":
                    images = project_pair_images(base, batch, images)
                if images is not None and self.shares_images is not None:
                    return self.forward(base, batch, images=images).detach()
                return self.forward(base, batch).detach()
        if self.mode == "model":
            return self.forward(self.model, batch).detach()
        if self.mode == "precomputed":
            table = self.cache.lookup([self.keys_by_id[i] for i in batch.ids])
            table = table.to(batch.input_ids.device)
            return PairLogps(table[:, 0], table[:, 1], table[:, 2], table[:, 3])
        raise RuntimeError(f"reference log-probs requested with reference mode {self.mode!r}")


def mode_problem(mode: str, spec: Any) -> str | None:
    """Why ``reference.mode`` does not fit the loss ``spec``, or None when it does."""
    if not spec.needs_reference and mode == "precomputed":
        return (
            f"reference.mode=precomputed: loss {spec.name!r} is reference-free; "
            "set reference.mode=none"
        )
    if spec.needs_reference and mode == "none":
        return (
            f"reference.mode=none: loss {spec.name!r} needs a reference; use adapter_off, "
            "model or precomputed"
        )
    return None


def reference_identity(config: Any) -> str:
    """What makes reference log-probs reusable: the model, its precision, the length limit."""
    name = config.reference.model or config.model.name_or_path
    quant = config.reference.quantization if config.reference.model else config.model.quantization
    return f"{name}|{quant}|{config.model.dtype}|{config.model.quant_type}"


# ---------------------------------------------------------------------------- precompute


@dataclass
class PrecomputedReference:
    """The filled cache of a ``precomputed`` run and the key of each pair id."""

    cache: ReferenceCache
    keys_by_id: dict[str, str]


def precompute_reference(
    config: Any,
    spec: Any,
    model: Any,
    pairs: list[TokenizedPair],
    collate: Any,
    run_dir: Path,
    accelerator: Any,
    forward: Callable[[Any, PreferenceBatch], PairLogps] = concatenated_forward,
) -> PrecomputedReference | None:
    """For ``reference.mode: precomputed``, the cache with every pair's reference log-probs.

    Call it before ``accelerator.prepare``. Pairs already in the cache (same tokens, images
    and reference identity) are not computed again. None for the other modes.
    """
    if not spec.needs_reference or config.reference.mode != "precomputed":
        return None
    cache = ReferenceCache(config.reference.cache_dir or RunFolder(run_dir).reference_cache_dir)
    identity = reference_identity(config)
    keys = {pair.id: pair_key(pair, identity) for pair in pairs}
    todo = [pair for pair in pairs if keys[pair.id] not in cache]
    if todo:
        # One process computes the cache and writes it; the others read it (no rank does the
        # pass a second time).
        if accelerator.is_main_process:
            fill_reference_cache(config, model, todo, keys, cache, collate, accelerator, forward)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            cache = ReferenceCache(cache.folder)
    return PrecomputedReference(cache, keys)


@torch.no_grad()
def fill_reference_cache(
    config: Any,
    policy: Any,
    pairs: list[TokenizedPair],
    keys: dict[str, str],
    cache: ReferenceCache,
    collate: Any,
    accelerator: Any,
    forward: Callable[[Any, PreferenceBatch], PairLogps] = concatenated_forward,
) -> None:
    """One pass of the reference (the base: adapter off, or the policy itself) over ``pairs``."""
    from tqdm.auto import tqdm

    use_adapter_off = hasattr(policy, "disable_adapter")
    if not getattr(policy, "hf_device_map", None):  # bitsandbytes models are placed already
        policy.to(accelerator.device)
    batch_size = max(1, config.train.batch_size)
    chunks = range(0, len(pairs), batch_size)
    show = config.train.progress and accelerator.is_main_process
    context = adapter_disabled(policy) if use_adapter_off else eval_no_grad(policy)
    with context:
        for start in tqdm(chunks, total=math.ceil(len(pairs) / batch_size),
                          desc="reference log-probs", disable=not show):  # fmt: skip
            chunk = pairs[start : start + batch_size]
            batch = collate(chunk).to(accelerator.device)
            with accelerator.autocast():
                out = forward(policy, batch)
            table = torch.stack(
                [out.chosen_sum, out.rejected_sum, out.chosen_tokens, out.rejected_tokens], 1
            )
            cache.add([keys[p.id] for p in chunk], table)
    if accelerator.is_main_process:
        cache.save()


# ---------------------------------------------------------------------------- build


def build_reference(
    config: Any,
    spec: Any,
    policy: Any,
    accelerator: Any,
    precomputed: PrecomputedReference | None = None,
    forward: Any = None,
) -> ReferenceModel | None:
    """The reference of the run's mode; None for a reference-free loss.

    Args:
        policy: the policy as ``accelerator.prepare`` returned it (adapter_off runs its
            forward through the wrapper).
        precomputed: what :func:`precompute_reference` returned (mode ``precomputed``).
        forward: the run's ``PairForward`` (default: two rows per pair).
    """
    mode = config.reference.mode
    if not spec.needs_reference:
        return None
    run_forward = forward if forward is not None else concatenated_forward
    if mode == "adapter_off":
        shares, why = image_sharing(policy)
        note = f"{shares or 'nothing'} ({why})" if why else ""
        return ReferenceModel(
            mode, policy=policy, forward=run_forward, shares_images=shares, sharing_note=note
        )
    if mode == "model":
        model = load_reference_model(config, accelerator)
        if hasattr(run_forward, "prepare"):
            run_forward.prepare(model)  # the same layout needs the same attention path
        return ReferenceModel(mode, model=model, forward=run_forward)
    if mode == "precomputed":
        if precomputed is None:
            raise RuntimeError("reference.mode=precomputed: call precompute_reference first")
        return ReferenceModel(mode, cache=precomputed.cache, keys_by_id=precomputed.keys_by_id)
    raise ValueError(f"reference.mode={mode!r}; valid: {', '.join(MODES)}")


def load_reference_model(config: Any, accelerator: Any) -> nn.Module:
    """The separate frozen reference of mode ``model``, on the run's device."""
    from mmdpo.models.loading import load_policy

    ref, _, _ = load_policy(
        config.reference.model or config.model.name_or_path,
        kind=config.model.kind,
        quantization=config.reference.quantization,
        dtype=config.model.dtype,
        trust_remote_code=config.model.trust_remote_code,
        prepare_for_training=False,
    )
    if config.reference.quantization == "none":
        ref = ref.to(accelerator.device)  # bitsandbytes places quantized models itself
    return freeze(ref)
