"""The same-work check: the first batch through mmdpo's engine and TRL's DPOTrainer must give
the same sigmoid-DPO loss (within 1e-4) on the same token ids.

Both policies get the same non-zero LoRA weights first (a function of each parameter's name,
rounded to bf16 so that TRL's bf16 adapters on 4-bit models hold the same values), so the policy
differs from the reference and the loss is not the trivial log 2 of a fresh adapter.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import runners
import torch

TOLERANCE = 1e-4


@torch.no_grad()
def set_adapter(model: Any) -> int:
    """Overwrite every LoRA A/B matrix with seeded values derived from its name."""
    count = 0
    for name, param in model.named_parameters():
        if "lora_A" not in name and "lora_B" not in name:
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        scale = 0.02 if "lora_B" in name else param.shape[-1] ** -0.5
        values = torch.randn(param.shape, generator=generator) * scale
        param.copy_(values.to(torch.bfloat16).to(param.dtype))
        count += 1
    return count


def _rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]


def mmdpo_first_batch(spec: dict[str, Any]) -> dict[str, Any]:
    from accelerate import Accelerator

    from mmdpo.data.collate import PreferenceCollator
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.losses import get_loss
    from mmdpo.objective import compute_objective
    from mmdpo.reference import build_reference, precompute_reference
    from mmdpo.setup import load_model_for_training, load_processing

    out_dir = Path(spec["work_dir"]) / "check-mmdpo"
    config = runners.mmdpo_config(spec, out_dir)
    loss = get_loss(config.loss.name)
    hyperparams = loss.resolve_kwargs(config.loss.kwargs)
    processing, is_vlm = load_processing(config)
    transform = PairTransform(processing, TransformSettings(config.data.max_length), is_vlm=is_vlm)
    pairs = [transform(s) for s in runners.mmdpo_samples(spec)[: spec["batch_size"]]]
    collate = PreferenceCollator(transform.tokenizer.pad_token_id)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = load_model_for_training(config).to(accelerator.device)
    precomputed = precompute_reference(config, loss, model, pairs, collate, out_dir, accelerator)
    reference = build_reference(config, loss, model, accelerator, precomputed)
    set_adapter(model)
    model.train()
    batch = collate(pairs).to(accelerator.device)
    with torch.no_grad():
        objective = compute_objective(model, batch, loss, hyperparams, reference, average=False)
    return {
        "loss": float(objective.loss),
        "chosen_logps": float(objective.policy.chosen_sum.mean()),
        "rejected_logps": float(objective.policy.rejected_sum.mean()),
        "rows": _rows(batch.input_ids.cpu(), batch.attention_mask.cpu()),
    }


def trl_first_batch(spec: dict[str, Any]) -> dict[str, Any]:
    trainer = runners.trl_trainer(spec)
    if spec["quantization"] != "none":
        # TRL casts the adapters of a quantized model to bf16; mmdpo keeps them in fp32. The
        # check compares the data, masks and loss, so it puts TRL's back in fp32 (the timed
        # runs keep TRL's bf16 adapters).
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    set_adapter(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train"]
    return {
        "loss": float(loss),
        "chosen_logps": float(metrics["logps/chosen"][-1]),
        "rejected_logps": float(metrics["logps/rejected"][-1]),
        "rows": _rows(batch["input_ids"].cpu(), batch["attention_mask"].cpu()),
    }


def trl_refusal(spec: dict[str, Any]) -> str | None:
    """TRL's error for a setting it does not run (e.g. a precomputed reference for vision)."""
    try:
        runners.trl_trainer(spec)
    except (ValueError, NotImplementedError) as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return None


def run_check(spec: dict[str, Any]) -> dict[str, Any]:
    """Both engines on the first batch; or TRL's refusal where it does not run the case."""
    if not spec["trl_runs"]:
        return {"trl_refusal": trl_refusal(spec)}
    ours = mmdpo_first_batch(spec)
    theirs = trl_first_batch(spec)
    difference = abs(ours["loss"] - theirs["loss"])
    return {
        "mmdpo_loss": ours["loss"],
        "trl_loss": theirs["loss"],
        "abs_diff": difference,
        "passed": difference <= TOLERANCE and ours["rows"] == theirs["rows"],
        "same_tokens": ours["rows"] == theirs["rows"],
        "mmdpo_chosen_logps": ours["chosen_logps"],
        "trl_chosen_logps": theirs["chosen_logps"],
        "mmdpo_rejected_logps": ours["rejected_logps"],
        "trl_rejected_logps": theirs["rejected_logps"],
    }
