"""Run setup: checks before any model is loaded, model and reference, optimizer and schedule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmdpo.config import Config
from mmdpo.data.collate import PreferenceCollator
from mmdpo.forward import concatenated_forward
from mmdpo.losses import LossSpec
from mmdpo.models.loading import is_vlm_config, load_policy
from mmdpo.models.lora import apply_lora
from mmdpo.models.quantization import check_quantization_available
from mmdpo.models.reference import freeze
from mmdpo.objective import ReferenceModel, adapter_disabled
from mmdpo.process import is_main_process
from mmdpo.reference_cache import ReferenceCache, pair_key
from mmdpo.run_folder import RunFolder
from mmdpo.types import PreferenceSample, TokenizedPair


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
    if not spec.needs_reference and mode == "precomputed":
        raise SetupError(
            f"reference.mode=precomputed: loss {spec.name!r} is reference-free; "
            "set reference.mode=none"
        )
    if spec.needs_reference and mode == "none":
        raise SetupError(
            f"reference.mode=none: loss {spec.name!r} needs a reference; use adapter_off, "
            "model or precomputed"
        )
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


def reference_identity(config: Config) -> str:
    """What makes reference log-probs reusable: the model, its precision, the length limit."""
    name = config.reference.model or config.model.name_or_path
    quant = config.reference.quantization if config.reference.model else config.model.quantization
    return f"{name}|{quant}|{config.model.dtype}|{config.model.quant_type}"


def prepare_reference(
    config: Config,
    spec: LossSpec,
    policy: Any,
    pairs: list[TokenizedPair],
    collate: PreferenceCollator,
    run_dir: Path,
    accelerator: Any,
) -> ReferenceModel | None:
    """Build the reference the run's mode asks for; ``precomputed`` fills its cache here."""
    mode = config.reference.mode
    if not spec.needs_reference:
        return None
    if mode == "adapter_off":
        return ReferenceModel(mode, policy=policy)
    if mode == "model":
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
        return ReferenceModel(mode, model=freeze(ref))
    cache = ReferenceCache(config.reference.cache_dir or RunFolder(run_dir).reference_cache_dir)
    identity = reference_identity(config)
    keys = {pair.id: pair_key(pair, identity) for pair in pairs}
    todo = [pair for pair in pairs if keys[pair.id] not in cache]
    if todo:
        # One process computes the cache and writes it; the others read it (no rank does the
        # pass a second time).
        if accelerator.is_main_process:
            fill_reference_cache(config, policy, todo, keys, cache, collate, accelerator)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            cache = ReferenceCache(cache.folder)
    return ReferenceModel(mode, cache=cache, keys_by_id=keys)


@torch.no_grad()
def fill_reference_cache(
    config: Config,
    policy: Any,
    pairs: list[TokenizedPair],
    keys: dict[str, str],
    cache: ReferenceCache,
    collate: PreferenceCollator,
    accelerator: Any,
) -> None:
    """One pass of the reference (the base: adapter off, or the policy itself) over ``pairs``."""
    use_adapter_off = hasattr(policy, "disable_adapter")
    if not getattr(policy, "hf_device_map", None):  # bitsandbytes models are placed already
        policy.to(accelerator.device)
    was_training = policy.training
    policy.eval()
    batch_size = max(1, config.train.batch_size)
    steps = math.ceil(len(pairs) / batch_size)
    for start in tqdm(
        range(0, len(pairs), batch_size),
        total=steps,
        desc="reference log-probs",
        disable=not (config.train.progress and accelerator.is_main_process),
    ):
        chunk = pairs[start : start + batch_size]
        batch = collate(chunk).to(accelerator.device)
        with accelerator.autocast():
            if use_adapter_off:
                with adapter_disabled(policy):
                    out = concatenated_forward(policy, batch)
            else:
                out = concatenated_forward(policy, batch)
        table = torch.stack(
            [out.chosen_sum, out.rejected_sum, out.chosen_tokens, out.rejected_tokens], 1
        )
        cache.add([keys[p.id] for p in chunk], table)
    policy.train(was_training)
    if accelerator.is_main_process:
        cache.save()


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
