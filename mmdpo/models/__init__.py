"""Model loading for the engine: quantization, text and VLM loading, LoRA, the VLM families."""

from mmdpo.models.loading import ModelInfo, enable_gradient_checkpointing, load_policy
from mmdpo.models.lora import apply_lora, lora_target_modules
from mmdpo.models.quantization import check_quantization_available, make_quantization_config

__all__ = [
    "ModelInfo",
    "apply_lora",
    "check_quantization_available",
    "enable_gradient_checkpointing",
    "load_policy",
    "lora_target_modules",
    "make_quantization_config",
]
