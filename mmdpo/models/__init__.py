"""Model loading for the engine: quantization, text and VLM loading, LoRA, the VLM families.

The names below load their module on first use, so that importing ``mmdpo.models.families``
(the collator and the forward do) does not import transformers' model classes and peft.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ModelInfo": "mmdpo.models.loading",
    "enable_gradient_checkpointing": "mmdpo.models.loading",
    "load_policy": "mmdpo.models.loading",
    "apply_lora": "mmdpo.models.lora",
    "lora_target_modules": "mmdpo.models.lora",
    "check_quantization_available": "mmdpo.models.quantization",
    "make_quantization_config": "mmdpo.models.quantization",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mmdpo.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
