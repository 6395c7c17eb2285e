"""Mixed: one VLM trained on text, math and image pairs together, scores calibrated per group."""

from __future__ import annotations

from tasks.base import Task

MIXED = Task(
    name="mixed",
    description="text, math and image pairs in one run; each data entry names its format",
    data_format="trl",
    modality=None,
    defaults={
        "task": "mixed",
        "model": {"kind": "vlm", "dtype": "bfloat16", "gradient_checkpointing": True},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05},
        # Scores come from a reward model, a PRM x 10 and a judge: z-score each
        # (modality, source) group so one eta and one tau_good fit them all.
        "data": {"format": "trl", "max_length": 2048, "calibration": "zscore"},
        "loss": {"name": "uni_dpo"},
        "reference": {"mode": "adapter_off"},
        "train": {
            "learning_rate": 5e-6,
            "epochs": 1,
            "batch_size": 1,
            "grad_accum": 16,
            "scheduler": "cosine",
            "warmup_ratio": 0.1,
            "mixed_precision": "bf16",
        },
    },
    eval_suite=["preference", "ifeval", "gsm8k", "math500", "pope", "chair"],
)
