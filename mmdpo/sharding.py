"""Runs whose weights or optimizer state are split across processes (FSDP, DeepSpeed ZeRO).

Under FSDP and DeepSpeed ZeRO each process holds a part of the weights (ZeRO-3, FSDP) or of the
optimizer state (every ZeRO stage, FSDP); ``model.state_dict()`` on the main process alone is
then wrong (ZeRO-3) or a collective that never completes (FSDP). :func:`sharding_for` describes
how to gather and restore them in this run; ``mmdpo.checkpoint`` uses it to save and resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# The child that FSDP1, activation checkpointing and torch.compile wrappers hold the module in.
WRAPPED_CHILDREN = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
_WRAPPER_PREFIXES = tuple(f"{name}." for name in WRAPPED_CHILDREN)


class ShardingError(RuntimeError):
    """The gathered or restored weights do not match the model's trainable parameters."""


@dataclass(frozen=True)
class Sharding:
    """How a run whose weights or optimizer state are split across processes saves and loads.

    :func:`sharding_for` builds one from accelerate's state.

    Attributes:
        kind: how the run is sharded ("fsdp1", "fsdp2", "deepspeed_zero3", ...): the optimizer
            files of one kind cannot be loaded by another.
        world_size: the number of processes. The optimizer state is saved one file per process.
        trainable_names: the names of the trainable parameters as in the unwrapped model's
            ``state_dict()`` (no wrapper prefixes): the weights a checkpoint restores.
        gather_weights: called on every process (a collective); returns the full trainable
            weights, keyed as ``trainable_names``, on the main process (others may get ``{}``).
        load_weights: called on every process with the same full weights (a collective).
        load_optimizer: ``(optimizer, state)`` restores this process's optimizer state; None
            calls ``optimizer.load_state_dict(state)``.
        safe_globals: classes the optimizer files hold besides tensors and plain values
            (DeepSpeed's loss scaler), allowed to ``torch.load(weights_only=True)``.
    """

    kind: str
    world_size: int
    trainable_names: tuple[str, ...]
    gather_weights: Callable[[], dict[str, torch.Tensor]]
    load_weights: Callable[[dict[str, torch.Tensor]], None]
    load_optimizer: Callable[[Any, Any], None] | None = None
    safe_globals: tuple[Any, ...] = ()


def sharding_for(accelerator: Any, model: torch.nn.Module) -> Sharding | None:
    """How to save and load ``model`` (as ``accelerator.prepare`` returned it) in this run.

    None for one process and DDP (each process holds everything; the main one saves alone).
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return _fsdp_sharding(model, accelerator.num_processes)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return _deepspeed_sharding(accelerator, model)
    return None


def trainable_names(module: torch.nn.Module) -> tuple[str, ...]:
    """The trainable parameters' names without wrapper prefixes (as in a full state dict)."""
    names = []
    for name, param in module.named_parameters():
        if param.requires_grad:
            for prefix in _WRAPPER_PREFIXES:
                name = name.replace(prefix, "")
            names.append(name)
    if any(name.endswith("_flat_param") for name in names):
        raise ValueError(
            "FSDP1 without use_orig_params: the trainable weights have no names of their own; "
            "set fsdp_use_orig_params: true (as in mmdpo/configs/accelerate/fsdp.yaml)"
        )
    return tuple(names)


def _fsdp_sharding(model: torch.nn.Module, world_size: int) -> Sharding:
    """FSDP1 (use_orig_params) or FSDP2: full trainable weights to the main process's CPU."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    names = trainable_names(model)
    if isinstance(model, FullyShardedDataParallel):
        kind, gather, load = "fsdp1", _fsdp1_gather(model), _fsdp1_load(model)
    else:
        kind, gather, load = "fsdp2", _fsdp2_gather(model), _fsdp2_load(model)

    def gather_trainable() -> dict[str, torch.Tensor]:
        full = gather()  # empty except on the main process
        missing = [name for name in names if full and name not in full]
        if missing:
            raise ShardingError(f"the gathered state dict lacks {missing[:5]}")
        return {name: full[name] for name in names} if full else {}

    return Sharding(kind, world_size, names, gather_trainable, load)


def _fsdp1_gather(model: Any) -> Callable[[], dict[str, torch.Tensor]]:
    # Every unit is gathered in turn and offloaded to rank 0's CPU (the base weights too: FSDP1
    # cannot gather some parameters only), as accelerate's get_state_dict does.
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType

    def gather() -> dict[str, torch.Tensor]:
        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with type(model).state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
            return model.state_dict()

    return gather


def _fsdp1_load(model: Any) -> Callable[[dict[str, torch.Tensor]], None]:
    from torch.distributed.fsdp import StateDictType

    def load(weights: dict[str, torch.Tensor]) -> None:
        # Each unit is gathered, given the weights it owns, and sharded again.
        with type(model).state_dict_type(model, StateDictType.FULL_STATE_DICT):
            result = model.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise ShardingError(f"weights the model lacks: {result.unexpected_keys[:5]}")

    return load


def _fsdp2_gather(model: Any) -> Callable[[], dict[str, torch.Tensor]]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    def gather() -> dict[str, torch.Tensor]:
        # Only the trainable DTensors are gathered, not the frozen base.
        options = StateDictOptions(
            full_state_dict=True, cpu_offload=True, ignore_frozen_params=True
        )
        return get_model_state_dict(model, options=options)

    return gather


def _fsdp2_load(model: Any) -> Callable[[dict[str, torch.Tensor]], None]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    def load(weights: dict[str, torch.Tensor]) -> None:
        options = StateDictOptions(full_state_dict=True, strict=False)
        result = set_model_state_dict(model, dict(weights), options=options)
        if result.unexpected_keys:
            raise ShardingError(f"weights the model lacks: {result.unexpected_keys[:5]}")

    return load


def _deepspeed_sharding(accelerator: Any, engine: Any) -> Sharding:
    """ZeRO 1-3: the optimizer state (with fp32 master weights) is split across processes;
    under ZeRO-3 the weights too, gathered here for the trainable parameters only."""
    import deepspeed
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    module = engine.module
    names = trainable_names(module)
    params = dict(module.named_parameters())
    trainable = [params[name] for name in names]
    stage = accelerator.state.deepspeed_plugin.zero_stage
    zero3 = stage == 3
    main, rank, world_size = (
        accelerator.is_main_process,
        accelerator.process_index,
        accelerator.num_processes,
    )

    def gather() -> dict[str, torch.Tensor]:
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None, enabled=zero3):
            if not main:
                return {}
            pairs = zip(names, trainable, strict=True)
            return {name: param.detach().to("cpu", copy=True) for name, param in pairs}

    def load(weights: dict[str, torch.Tensor]) -> None:
        # Under ZeRO-3 rank 0 writes the gathered weights and DeepSpeed re-partitions them.
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=0, enabled=zero3):
            if main or not zero3:
                with torch.no_grad():
                    for name, param in zip(names, trainable, strict=True):
                        param.copy_(weights[name])

    def load_optimizer(optimizer: Any, state: Any) -> None:
        # A ZeRO optimizer takes the list of every process's state and reads its own entry;
        # the fp32 master weights come from the saved state, not from the (maybe 16-bit) model.
        states = [None] * world_size
        states[rank] = state
        zero_optimizer = getattr(optimizer, "optimizer", optimizer)
        zero_optimizer.load_state_dict(states, load_from_fp32_weights=True)

    safe = (ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address)
    kind = f"deepspeed_zero{stage}"
    return Sharding(kind, world_size, names, gather, load, load_optimizer, safe)
