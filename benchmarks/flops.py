"""FLOP counts of one training step and this machine's measured matmul peak.

Model FLOPs of a step (the same count for both engines: the work the step needs, not the work
an engine happens to do, so an engine that repeats work shows a lower achieved share):

    language model, per row of T real tokens:  F(T) = 2 N T + 2 L d T^2
        N = parameters of the decoder's linear layers and the LM head (embeddings excluded),
        L = layers, d = hidden size; 2 L d T^2 = causal attention scores and values.
    vision tower, per image of P patches:     G(P) = 2 M P + 2 L_v d_v P^2  (M: its linears)
    policy:    3 x (F over the 2B rows + G over the B pairs' images)   (forward + backward)
    reference: 1 x the same forward, or 0 when precomputed.

The rule, per token of the two-row layout: 6N for the policy (2N forward, 4N backward) plus
2N for an adapter-off reference forward: **8N with the adapter-off reference, 6N with a
precomputed one**, plus the attention and vision-tower terms above. With LoRA the backward
computes input gradients only (~2x forward) plus the small adapter gradients, so 6N is the
usual training convention, slightly over the need. The count is the two-row layout's for every
engine and layout: a layout that computes the prompt once (shared-prompt) or skips padding does
less work for the same pairs, and shows it as more model FLOP/s (a throughput in FLOP units,
which can pass what the hardware does). Model FLOP utilisation (MFU) is that rate over the
accelerator's dense bf16 peak: the datasheet's (``DATASHEET_BF16``) and the measured matmul's.
"""

from __future__ import annotations

import time
from typing import Any

import torch

# Dense bf16 tensor-core peak from NVIDIA's datasheets (SXM boards), FLOP/s; the first name
# that occurs in the device's name wins.
DATASHEET_BF16 = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def datasheet_bf16(device_name: str) -> float | None:
    for name, peak in DATASHEET_BF16:
        if name in device_name:
            return peak
    return None


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 7) -> float:
    """FLOP/s of the fastest of ``repeats`` size^3 matmuls in ``dtype`` (GPU when present).

    The fastest, not the median: on a machine shared with other jobs the best run is the one
    closest to what the cores can do."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        size = max(size, 8192)
    elif dtype == torch.bfloat16 and not _cpu_has_bf16():
        size = min(size, 256)  # a slow fallback path (~0.1 GFLOP/s): keep the probe short
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 2 * size**3 / min(times)


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_shape(model_dir: str) -> dict[str, Any]:
    """Linear parameter counts and sizes of the language model and vision tower (meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from mmdpo.models.lora import module_part

    config = AutoConfig.from_pretrained(model_dir)
    vision = getattr(config, "vision_config", None) is not None
    cls = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    counts = {"language": 0, "vision_tower": 0, "projector": 0}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            counts[module_part(name)] += module.weight.numel()
    text = config.get_text_config()
    shape = {
        "language_linear": counts["language"],
        "layers": text.num_hidden_layers,
        "hidden": text.hidden_size,
        "vision_linear": counts["vision_tower"],
        "projector_linear": counts["projector"],
    }
    if vision:
        v = config.vision_config
        shape["vision_layers"] = getattr(v, "depth", None) or v.num_hidden_layers
        shape["vision_hidden"] = getattr(v, "embed_dim", None) or v.hidden_size
        # Qwen2-VL's merger sees one token per 2 x 2 patches.
        shape["projector_divisor"] = getattr(v, "spatial_merge_size", 1) ** 2
    return shape


def step_flops(
    shape: dict[str, Any], row_lengths: list[int], image_patches: list[int], precomputed: bool
) -> float:
    """Model FLOPs of one step with these real row lengths and images (see the module doc)."""
    n, layers, hidden = shape["language_linear"], shape["layers"], shape["hidden"]
    forward = sum(2 * n * t + 2 * layers * hidden * t * t for t in row_lengths)
    for patches in image_patches:
        m = shape["vision_linear"]
        forward += (
            2 * m * patches + 2 * shape["vision_layers"] * shape["vision_hidden"] * patches**2
        )
        forward += 2 * shape["projector_linear"] * patches // shape.get("projector_divisor", 1)
    return forward * (3 if precomputed else 4)
