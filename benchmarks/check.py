"""The same-work check: mmdpo and TRL must do the same first optimizer step.

Each side runs through its own training entry point (``mmdpo.trainer.train``, TRL's
``DPOTrainer.train``) for one optimizer step on the first batch, with the same non-zero LoRA
weights (a function of each parameter's name, rounded to bf16 so that TRL's bf16 adapters on
4-bit models can hold the same values), in float32, with gradient clipping off. A global
optimizer pre-step hook copies every trainable parameter's gradient just before the step.
The check then requires, between the two sides:

- the same token ids in every row;
- the same sigmoid-DPO loss, within ``LOSS_TOLERANCE``;
- the same trainable parameters, and for each one a gradient whose difference is within
  ``GRAD_RTOL`` of its size: ``|g_mmdpo - g_trl| <= GRAD_RTOL * max(|g_mmdpo|, |g_trl|)``
  (Frobenius norms, per tensor). fp32 forwards of the two engines agree to ~1e-6 relative;
  their gradients to ~1e-5 (measured at every shape of this benchmark); a backward that
  loses a path (a base layer cut out of the graph) moves the LoRA gradients below it by
  tens of percent.

A loss can match while the gradients do not: bitsandbytes 0.49/0.50 on CPUs with AVX512-BF16
repacks a 4-bit layer into an inference-only layout after one eval-mode forward without grad,
and from then on the layer's forward is unchanged but its backward skips the base weight.
Each side therefore also reports how many of its 4-bit layers were in that layout at its
optimizer step, which names the side whose gradient is wrong.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import runners
import torch

LOSS_TOLERANCE = 1e-4
GRAD_RTOL = 1e-3


@torch.no_grad()
def set_adapter(model: Any) -> int:
    """Overwrite every LoRA A/B matrix with seeded values derived from its name."""
    count = 0
    for name, param in model.named_parameters():
        if "lora_A" not in name and "lora_B" not in name:
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(canonical_name(name).encode()))
        scale = 0.02 if "lora_B" in name else param.shape[-1] ** -0.5
        values = torch.randn(param.shape, generator=generator) * scale
        param.copy_(values.to(torch.bfloat16).to(param.dtype))
        count += 1
    return count


def canonical_name(name: str) -> str:
    """A trainable parameter's name without the wrappers' prefixes and the adapter's name,
    so that mmdpo's and TRL's names of the same weight are equal."""
    for prefix in ("module.", "_orig_mod.", "base_model.model."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace(".default.", ".")


def inference_layout_layers(model: Any) -> tuple[int, int]:
    """(4-bit layers in bitsandbytes' inference-only CPU layout, all 4-bit layers)."""
    packed = total = 0
    for module in model.modules():
        # bitsandbytes' own layer; peft's LoRA wrapper of it has the same class name.
        kind = type(module)
        if kind.__name__ != "Linear4bit" or not kind.__module__.startswith("bitsandbytes"):
            continue
        quant_state = getattr(module.weight, "quant_state", None)
        if quant_state is None:
            continue
        total += 1
        packed += bool(getattr(quant_state, "packing_format_for_cpu", False))
    return packed, total


class FirstStepGradients:
    """Copies the gradients of ``model``'s trainable parameters at the first optimizer step
    (any optimizer: a global pre-step hook), and the model's 4-bit layout at that moment."""

    def __init__(self, model_getter):
        self.model_getter = model_getter
        self.grads: dict[str, torch.Tensor] | None = None
        self.without_grad: list[str] = []
        self.layout = (0, 0)
        self.handle = None

    def __enter__(self) -> FirstStepGradients:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.handle = register_optimizer_step_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def _hook(self, optimizer, args, kwargs) -> None:
        if self.grads is not None:
            return
        model = self.model_getter()
        self.grads = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if param.grad is None:
                self.without_grad.append(canonical_name(name))
            else:
                self.grads[canonical_name(name)] = param.grad.detach().float().cpu().clone()
        self.layout = inference_layout_layers(model)


def _token_rows(pairs: list[Any]) -> list[list[int]]:
    """Chosen rows then rejected rows, as both engines lay out a batch."""
    chosen = [list(p.prompt_ids) + list(p.chosen_ids) for p in pairs]
    rejected = [list(p.prompt_ids) + list(p.rejected_ids) for p in pairs]
    return chosen + rejected


def mmdpo_side(spec: dict[str, Any]) -> dict[str, Any]:
    """One optimizer step of mmdpo's own loop on the first batch; its loss and gradients."""
    import mmdpo.trainer as engine
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.setup import load_processing

    config = runners.mmdpo_config(
        spec, runners.fresh_folder(Path(spec["work_dir"]) / "check-mmdpo")
    )
    samples = runners.mmdpo_samples(spec)
    processing, is_vlm = load_processing(config)
    transform = PairTransform(processing, TransformSettings(config.data.max_length), is_vlm=is_vlm)
    rows = _token_rows([transform(s) for s in samples])

    seen: dict[str, Any] = {}
    load, objective = engine.load_model_for_training, engine.compute_objective

    def load_with_adapter(config, *args, **kwargs):
        model = load(config, *args, **kwargs)
        set_adapter(model)
        seen["model"] = model
        return model

    def first_objective(*args, **kwargs):
        result = objective(*args, **kwargs)
        if "loss" not in seen:
            seen["loss"] = float(result.loss.detach())
            seen["chosen"] = float(result.policy.chosen_sum.detach().mean())
            seen["rejected"] = float(result.policy.rejected_sum.detach().mean())
        return result

    engine.load_model_for_training, engine.compute_objective = load_with_adapter, first_objective
    try:
        with FirstStepGradients(lambda: seen["model"]) as capture:
            engine.train(config, samples)
    finally:
        engine.load_model_for_training, engine.compute_objective = load, objective
    return _side_result(seen, rows, capture)


def trl_side(spec: dict[str, Any]) -> dict[str, Any]:
    """One optimizer step of TRL's DPOTrainer on the first batch; its loss and gradients."""
    trainer = runners.trl_trainer(spec)
    if spec["quantization"] != "none":
        # TRL casts the adapters of a quantized model to bf16; the check compares fp32 math,
        # so it puts them back in fp32 (the timed runs keep TRL's bf16 adapters).
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    set_adapter(trainer.model)
    seen: dict[str, Any] = {}
    compute_loss = trainer.compute_loss

    def first_loss(model, inputs, *args, **kwargs):
        loss = compute_loss(model, inputs, *args, **kwargs)
        if "loss" not in seen:
            value = loss[0] if isinstance(loss, tuple) else loss
            metrics = trainer._metrics["train"]
            seen["loss"] = float(value.detach())
            seen["chosen"] = float(metrics["logps/chosen"][-1])
            seen["rejected"] = float(metrics["logps/rejected"][-1])
            ids, mask = inputs["input_ids"].cpu(), inputs["attention_mask"].bool().cpu()
            seen["rows"] = [row[keep].tolist() for row, keep in zip(ids, mask, strict=True)]
        return loss

    trainer.compute_loss = first_loss
    with FirstStepGradients(lambda: trainer.model) as capture:
        trainer.train()
    return _side_result(seen, seen.get("rows", []), capture)


def _side_result(seen: dict[str, Any], rows: list[list[int]], capture: FirstStepGradients):
    if capture.grads is None or "loss" not in seen:
        raise RuntimeError("the engine took no optimizer step: nothing to compare")
    return {
        "loss": seen["loss"],
        "chosen_logps": seen["chosen"],
        "rejected_logps": seen["rejected"],
        "rows": rows,
        "grads": capture.grads,
        "without_grad": capture.without_grad,
        "inference_layout": list(capture.layout),
    }


def trl_refusal(spec: dict[str, Any]) -> str | None:
    """TRL's error for a setting it does not run (e.g. a precomputed reference for vision)."""
    try:
        runners.trl_trainer(spec)
    except (ValueError, NotImplementedError) as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return None


def run_side(spec: dict[str, Any]) -> dict[str, Any]:
    """A check child: one side's first step; the gradients go to ``spec["grads_path"]``."""
    if torch.cuda.is_available():  # the check compares fp32 math, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    out: dict[str, Any] = {}
    if spec["engine"] == "trl" and spec.get("refused_reference"):
        refused = {**spec, "reference": spec["refused_reference"], "limit_pairs": None}
        out["trl_refusal"] = trl_refusal(refused)
    side = trl_side(spec) if spec["engine"] == "trl" else mmdpo_side(spec)
    torch.save(side.pop("grads"), spec["grads_path"])
    return {**out, **side, "grads_path": spec["grads_path"]}


# ------------------------------------------------------------------------------ comparison


def compare_gradients(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], rtol: float = GRAD_RTOL
) -> dict[str, Any]:
    """Per-tensor relative differences of two gradient sets keyed by canonical names."""
    only_ours = sorted(set(ours) - set(theirs))
    only_theirs = sorted(set(theirs) - set(ours))
    errors: dict[str, float] = {}
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name].double(), theirs[name].double()
        if a.shape != b.shape:
            errors[name] = float("inf")
            continue
        scale = max(float(a.norm()), float(b.norm()))
        errors[name] = float((a - b).norm()) / scale if scale > 0 else 0.0
    failing = sorted((n for n, e in errors.items() if not e <= rtol), key=lambda n: -errors[n])
    worst = max(errors, key=lambda n: errors[n]) if errors else None
    return {
        "compared": len(errors),
        "rtol": rtol,
        "max_rel_err": errors[worst] if worst else None,
        "worst": worst,
        "failing": len(failing),
        "failing_names": failing[:5],
        "only_mmdpo": only_ours[:5],
        "only_trl": only_theirs[:5],
        "passed": bool(errors) and not failing and not only_ours and not only_theirs,
    }


def _layout_note(side: str, result: dict[str, Any]) -> str | None:
    packed, total = result.get("inference_layout", (0, 0))
    if not packed:
        return None
    return (
        f"{side}'s gradient is wrong: {packed} of its {total} 4-bit layers were in"
        " bitsandbytes' inference-only CPU layout at its optimizer step (an eval-mode forward"
        " without grad repacks them on AVX512-BF16 CPUs), so its backward skips the quantized"
        " base weights"
    )


def compare_sides(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The check's verdict for an mmdpo side against TRL's side (gradients from their files)."""
    gradients = compare_gradients(
        torch.load(ours["grads_path"], weights_only=True),
        torch.load(theirs["grads_path"], weights_only=True),
    )
    difference = abs(ours["loss"] - theirs["loss"])
    same_tokens = ours["rows"] == theirs["rows"]
    reasons = []
    if not same_tokens:
        reasons.append("different token ids")
    if not difference <= LOSS_TOLERANCE:
        reasons.append(f"losses differ by {difference:.1e}")
    if not gradients["passed"]:
        if gradients["only_mmdpo"] or gradients["only_trl"]:
            reasons.append("different trainable parameters")
        if gradients["failing"]:
            reasons.append(
                f"{gradients['failing']} of {gradients['compared']} gradient tensors differ"
                f" (worst {gradients['max_rel_err']:.1e} relative, {gradients['worst']})"
            )
    for side, result in (("TRL", theirs), ("mmdpo", ours)):
        note = _layout_note(side, result)
        if note and reasons:
            reasons.append(note)
    return {
        "passed": not reasons,
        "reason": "; ".join(reasons) or None,
        "mmdpo_loss": ours["loss"],
        "trl_loss": theirs["loss"],
        "abs_diff": difference,
        "same_tokens": same_tokens,
        "gradients": gradients,
        "mmdpo_chosen_logps": ours["chosen_logps"],
        "trl_chosen_logps": theirs["chosen_logps"],
        "mmdpo_rejected_logps": ours["rejected_logps"],
        "trl_rejected_logps": theirs["rejected_logps"],
        "mmdpo_inference_layout": ours.get("inference_layout"),
        "trl_inference_layout": theirs.get("inference_layout"),
    }
