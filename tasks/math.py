"""Math: solution pairs scored by a process reward model, judged by GSM8K and MATH-500."""

from __future__ import annotations

from tasks.base import Task

MATH = Task(
    name="math",
    description="math solution pairs with PRM scores (x10) and correctness (Uni-DPO math release)",
    data_format="unidpo_math",
    modality="math",
    defaults={
        "task": "math",
        "model": {"kind": "causal_lm", "dtype": "bfloat16", "gradient_checkpointing": True},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05},
        # Uni-DPO's math run: max_length 4096, max_prompt_length 1000 (authors' config).
        "data": {
            "format": "unidpo_math",
            "modality": "math",
            "max_length": 4096,
            "max_prompt_length": 1000,
            "calibration": "none",
        },
        "loss": {"name": "uni_dpo"},
        "reference": {"mode": "adapter_off"},
        "train": {
            "learning_rate": 1e-6,
            "epochs": 2,
            "batch_size": 1,
            "grad_accum": 16,
            "scheduler": "cosine",
            "warmup_ratio": 0.1,
            "mixed_precision": "bf16",
        },
    },
    eval_suite=["preference", "gsm8k", "math500"],
)
