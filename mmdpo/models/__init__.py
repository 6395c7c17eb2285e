"""Model loading for the engine: quantization, text and VLM loading, LoRA, reference helpers."""

from mmdpo.models.loading import ModelInfo, enable_gradient_checkpointing, load_policy
from mmdpo.models.lora import apply_lora, lora_target_modules
from mmdpo.models.quantization import check_quantization_available, make_quantization_config
from mmdpo.models.reference import eval_no_grad, freeze, reference_context

__all__ = [
    "ModelInfo",
    "apply_lora",
    "check_quantization_available",
    "enable_gradient_checkpointing",
    "eval_no_grad",
    "freeze",
    "load_policy",
    "lora_target_modules",
    "make_quantization_config",
    "reference_context",
]
