"""Text: chat preference pairs (UltraFeedback-style, with scores), judged by IFEval."""

from __future__ import annotations

from tasks.base import Task

TEXT = Task(
    name="text",
    description="chat preference pairs with response scores (UltraFeedback binarized style)",
    data_format="ultrafeedback",
    modality="text",
    defaults={
        "task": "text",
        "model": {"kind": "causal_lm", "dtype": "bfloat16", "gradient_checkpointing": True},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05},
        # Uni-DPO's text runs: max_length 2048, max_prompt_length 1800 (authors' configs).
        "data": {
            "format": "ultrafeedback",
            "modality": "text",
            "max_length": 2048,
            "max_prompt_length": 1800,
            "calibration": "none",
        },
        "loss": {"name": "uni_dpo"},
        "reference": {"mode": "adapter_off"},
        "train": {
            "learning_rate": 1e-6,
            "epochs": 1,
            "batch_size": 1,
            "grad_accum": 16,
            "scheduler": "cosine",
            "warmup_ratio": 0.1,
            "mixed_precision": "bf16",
        },
    },
    eval_suite=["preference", "ifeval"],
)
