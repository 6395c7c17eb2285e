"""Run setup: checks before any model is loaded, the model, optimizer and schedule.

The reference is built in ``mmdpo.reference``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mmdpo.config import Config
from mmdpo.losses import LossSpec
from mmdpo.models.families import UnknownFamilyError, get_family, is_vlm_config
from mmdpo.models.loading import load_policy, processing_from_pretrained
from mmdpo.models.lora import apply_lora
from mmdpo.models.quantization import check_quantization_available
from mmdpo.process import is_main_process
from mmdpo.reference import mode_problem
from mmdpo.types import PreferenceSample


class SetupError(ValueError):
    """A combination of settings and data that cannot run; found before loading any model."""


@dataclass(frozen=True)
class ModelFacts:
    """What a run knows of its model before any weights load; decided once per run.

    Attributes:
        config: the model's transformers config (read once, handed to the loader).
        is_vlm: ``model.kind``, or for ``auto`` whether the config has a vision config.
    """

    config: Any
    is_vlm: bool

    @property
    def model_type(self) -> str:
        return getattr(self.config, "model_type", "") or ""


def model_facts(config: Config) -> ModelFacts:
    """Read the model's config once; decide whether it is an image-text model."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(
            config.model.name_or_path, trust_remote_code=config.model.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise SetupError(
            f"model.name_or_path: cannot read the config of {config.model.name_or_path!r} "
            f"({err}). Give a local folder, or a hub id while online."
        ) from None
    kind = config.model.kind
    return ModelFacts(
        model_config, kind == "vlm" or (kind == "auto" and is_vlm_config(model_config))
    )


def check_run(
    config: Config,
    spec: LossSpec,
    samples: list[PreferenceSample],
    facts: ModelFacts | None = None,
) -> None:
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
    facts = facts or model_facts(config)
    _check_images(config, samples, facts)
    no_scores = not any(s.has_scores for s in samples)
    if "score_chosen" in spec.extra_inputs and no_scores and is_main_process():
        print(
            f"warning: loss {spec.name!r} weights pairs by their scores, but no sample has "
            "scores; every pair gets quality weight 1 and the c-NLL gate stays closed"
        )


def _check_images(config: Config, samples: list[PreferenceSample], facts: ModelFacts) -> None:
    """Images need an image-text model of a family the engine knows how to drive."""
    with_images = [s.id for s in samples if s.images or s.rejected_images]
    if with_images and not facts.is_vlm:
        raise SetupError(
            f"data: {len(with_images)} sample(s) have images (e.g. {with_images[0]}) but "
            f"{config.model.name_or_path!r} ({facts.model_type}) is a text-only model"
        )
    if with_images:
        try:
            get_family(facts.model_type)
        except UnknownFamilyError as err:
            raise SetupError(f"model.name_or_path: {config.model.name_or_path!r}: {err}") from None


def load_processing(config: Config, facts: ModelFacts | None = None) -> tuple[Any, bool]:
    """The tokenizer (text) or processor (VLM), without loading any weights."""
    facts = facts or model_facts(config)
    processing = processing_from_pretrained(
        config.model.name_or_path,
        is_vlm=facts.is_vlm,
        trust_remote_code=config.model.trust_remote_code,
    )
    return processing, facts.is_vlm


def load_model_for_training(
    config: Config, facts: ModelFacts | None = None, processing: Any = None
) -> Any:
    """The policy, quantized as configured, with a fresh LoRA adapter when enabled.

    ``facts`` and ``processing``: what the run has read already (not read a second time).
    """
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
        model_config=facts.config if facts is not None else None,
        processing=processing,
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
