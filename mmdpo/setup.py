"""Run setup: checks before any model is loaded, the model, optimizer and schedule.

The reference is built in ``mmdpo.reference``."""

from __future__ import annotations

import math
from typing import Any

import torch

from mmdpo.config import Config
from mmdpo.losses import LossSpec
from mmdpo.models.loading import is_vlm_config, load_policy
from mmdpo.models.lora import apply_lora
from mmdpo.models.quantization import check_quantization_available
from mmdpo.process import is_main_process
from mmdpo.reference import mode_problem
from mmdpo.types import PreferenceSample


class SetupError(ValueError):
    """A combination of settings and data that cannot run; found before loading any model."""


def _model_config(config: Config) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            config.model.name_or_path, trust_remote_code=config.model.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise SetupError(
            f"model.name_or_path: cannot read the config of {config.model.name_or_path!r} "
            f"({err}). Give a local folder, or a hub id while online."
        ) from None


def _is_vlm(config: Config, model_config: Any) -> bool:
    """The configured kind, or for ``auto`` whether the model config has a vision config."""
    kind = config.model.kind
    return kind == "vlm" or (kind == "auto" and is_vlm_config(model_config))


def check_run(config: Config, spec: LossSpec, samples: list[PreferenceSample]) -> None:
    """Refuse wrong combinations with a clear message, before any weights are loaded."""
    mode = config.reference.mode
    problem = mode_problem(mode, spec)
    if problem:
        raise SetupError(problem)
    check_quantization_available(config.model.quantization)
    if mode == "model":
        check_quantization_available(config.reference.quantization)
    if not samples:
        raise SetupError("data.train: no training samples")
    with_images = [s.id for s in samples if s.images or s.rejected_images]
    model_config = _model_config(config)
    is_vlm = _is_vlm(config, model_config)
    if with_images and not is_vlm:
        raise SetupError(
            f"data: {len(with_images)} sample(s) have images (e.g. {with_images[0]}) but "
            f"{config.model.name_or_path!r} ({model_config.model_type}) is a text-only model"
        )
    no_scores = not any(s.has_scores for s in samples)
    if "score_chosen" in spec.extra_inputs and no_scores and is_main_process():
        print(
            f"warning: loss {spec.name!r} weights pairs by their scores, but no sample has "
            "scores; every pair gets quality weight 1 and the c-NLL gate stays closed"
        )


def load_processing(config: Config) -> tuple[Any, bool]:
    """The tokenizer (text) or processor (VLM), without loading any weights."""
    from transformers import AutoProcessor, AutoTokenizer

    model_config = _model_config(config)
    is_vlm = _is_vlm(config, model_config)
    remote = config.model.trust_remote_code
    if is_vlm:
        processing = AutoProcessor.from_pretrained(
            config.model.name_or_path, trust_remote_code=remote
        )
        tokenizer = processing.tokenizer
    else:
        processing = tokenizer = AutoTokenizer.from_pretrained(
            config.model.name_or_path, trust_remote_code=remote
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processing, is_vlm


def load_model_for_training(config: Config) -> Any:
    """The policy, quantized as configured, with a fresh LoRA adapter when enabled."""
    m = config.model
    model, _, _ = load_policy(
        m.name_or_path,
        kind=m.kind,
        quantization=m.quantization,
        quant_type=m.quant_type,
        double_quant=m.double_quant,
        dtype=m.dtype,
        trust_remote_code=m.trust_remote_code,
        attn_implementation=m.attn_implementation,
        prepare_for_training=True,
        gradient_checkpointing=m.gradient_checkpointing,
    )
    if not config.lora.enabled:
        return model
    lora = config.lora
    return apply_lora(
        model,
        r=lora.r,
        alpha=lora.alpha,
        dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=lora.modules_to_save,
        freeze_vision_tower=lora.freeze_vision_tower,
        freeze_projector=lora.freeze_projector,
    )


def build_optimizer(config: Config, model: Any) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SetupError("the model has no trainable parameters (check lora.target_modules)")
    t = config.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if t.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=t.learning_rate, weight_decay=t.weight_decay)


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine, linear or constant."""
    warmup = int(math.ceil(config.train.warmup_ratio * total_steps))
    kind = config.train.scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
