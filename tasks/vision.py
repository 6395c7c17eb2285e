"""Vision: image-text preference pairs for a VLM, judged by POPE and CHAIR (hallucination)."""

from __future__ import annotations

from tasks.base import Task

VISION = Task(
    name="vision",
    description="image-text preference pairs (LLaMA-Factory ranking rows, Uni-DPO release)",
    data_format="llamafactory_ranking",
    modality="vision",
    defaults={
        "task": "vision",
        "model": {"kind": "vlm", "dtype": "bfloat16", "gradient_checkpointing": True},
        # LoRA on the language model only; the vision tower stays frozen.
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05},
        # Uni-DPO's vision run: cutoff_len 4096 (authors' LLaMA-Factory script). No modality
        # override: the adapter marks rows with images vision and text-only rows text.
        "data": {
            "format": "llamafactory_ranking",
            "max_length": 4096,
            "calibration": "none",
        },
        "loss": {"name": "uni_dpo"},
        "reference": {"mode": "adapter_off"},
        "train": {
            "learning_rate": 6e-6,
            "epochs": 1,
            "batch_size": 1,
            "grad_accum": 16,
            "scheduler": "cosine",
            "warmup_ratio": 0.0,
            "mixed_precision": "bf16",
        },
    },
    eval_suite=["preference", "pope", "chair"],
)
