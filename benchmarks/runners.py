"""One timed training run of mmdpo or TRL, in the current (fresh) process.

``run(spec)`` trains for ``spec["steps"]`` optimizer steps on the case's model and pairs and
returns the wall-clock time at the end of every step, the tokens and pairs of every step, the
first step's loss and the process's peak memory. Both engines are timed the same way: the
clock is read when a step has finished (after the optimizer step and the step's logging), so a
step's time covers collation, the forwards, the backward, clipping, the optimizer and logging.
The process's CPU time is read at the same points: on a machine shared with other jobs it
moves much less than the wall clock (with ``--threads 1`` it is the step's compute time).
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from workload import IMAGE_PLACEHOLDERS, load_pairs

LORA_R, LORA_ALPHA = 16, 32
LEARNING_RATE = 1e-5
BETA = 0.1
SEED = 42


def fresh_folder(path: Path) -> Path:
    """``path``, emptied: a run never continues or mixes with an earlier run's files."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def peak_memory_bytes() -> int:
    """Peak CUDA memory allocated when on a GPU, else the process's peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ----------------------------------------------------------------------------------- mmdpo


def _pairs(spec: dict[str, Any]) -> list[Any]:
    """The case's pairs; only the first ``limit_pairs`` when set (the same-work check)."""
    pairs = load_pairs(Path(spec["pairs"]))
    return pairs[: spec["limit_pairs"]] if spec.get("limit_pairs") else pairs


def _dtype(spec: dict[str, Any]) -> str:
    return spec.get("dtype") or "float32"


def mmdpo_config(spec: dict[str, Any], output_dir: Path) -> Any:
    """The run's config: the shared settings, then the arm's overrides (its forward layout)."""
    from mmdpo.config import load_config

    bf16 = _dtype(spec) == "bfloat16"
    return load_config(
        None,
        [
            f"model.name_or_path={spec['model_dir']}",
            f"model.dtype={_dtype(spec)}",
            f"model.quantization={spec['quantization']}",
            "data.train=in-memory",
            f"data.max_length={spec['max_length']}",
            "data.shuffle=false",
            "loss.name=dpo",
            f"loss.kwargs.beta={BETA}",
            "loss.length_normalized=false",
            f"reference.mode={spec['reference']}",
            f"reference.cache_dir={output_dir / 'reference_cache'}",
            f"lora.r={LORA_R}",
            f"lora.alpha={LORA_ALPHA}",
            "lora.dropout=0.0",
            f"train.output_dir={output_dir}",
            f"train.batch_size={spec['batch_size']}",
            f"train.max_steps={spec['steps']}",
            f"train.learning_rate={LEARNING_RATE}",
            "train.scheduler=constant",
            "train.warmup_ratio=0",
            f"train.max_grad_norm={spec.get('max_grad_norm', 1.0)}",
            *(["train.mixed_precision=bf16"] if bf16 else []),
            "train.optimizer=adamw",
            f"train.seed={SEED}",
            "train.progress=false",
            "train.save_every=0",
            "train.keep_last=1",
            "train.plots=false",
            *spec.get("overrides", []),
        ],
    )


def mmdpo_samples(spec: dict[str, Any]) -> list[Any]:
    from mmdpo.types import PreferenceSample

    samples = []
    for pair in _pairs(spec):
        samples.append(
            PreferenceSample(
                id=pair.id,
                prompt=pair.prompt,
                chosen=pair.chosen,
                rejected=pair.rejected,
                images=list(pair.images),
                modality="vision" if pair.images else "text",
                source="bench",
            )
        )
    return samples


def run_mmdpo(spec: dict[str, Any]) -> dict[str, Any]:
    import mmdpo.trainer as engine

    step_ends: list[float] = []
    step_cpu: list[float] = []

    class TimedBar(engine.ProgressBar):
        def update(self, stats):  # called once per optimizer step, after its logging
            step_ends.append(time.perf_counter())
            step_cpu.append(time.process_time())
            return super().update(stats)

    engine.ProgressBar = TimedBar  # the one instrument: the loop itself is unchanged
    output_dir = fresh_folder(Path(spec["work_dir"]) / "run")
    config = mmdpo_config(spec, output_dir)
    started = time.perf_counter()
    engine.train(config, mmdpo_samples(spec))
    total = time.perf_counter() - started
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r and "perf/pairs_per_s" in r]
    pairs_per_step = spec["batch_size"]
    tokens = [
        r["perf/tokens_per_s"] * pairs_per_step / r["perf/pairs_per_s"] for r in steps
    ]  # the engine's own count of non-padding tokens in each step
    return {
        "step_ends": step_ends,
        "step_cpu": step_cpu,
        "step_tokens": tokens,
        "pairs_per_step": pairs_per_step,
        "first_loss": steps[0]["loss"],
        "peak_memory_bytes": peak_memory_bytes(),
        "total_s": total,
    }


# ------------------------------------------------------------------------------------- TRL


def trl_model(spec: dict[str, Any]) -> Any:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        BitsAndBytesConfig,
    )

    dtype = getattr(torch, _dtype(spec))
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec["quantization"] == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        on_gpu = torch.cuda.is_available()
        kwargs["device_map"] = {"": torch.cuda.current_device()} if on_gpu else "cpu"
    cls = AutoModelForImageTextToText if spec["vision"] else AutoModelForCausalLM
    model = cls.from_pretrained(spec["model_dir"], **kwargs)
    if not torch.cuda.is_available() or spec["quantization"] == "4bit":
        return model
    return model.to("cuda")


def trl_dataset(spec: dict[str, Any]) -> Any:
    """prompt / chosen / rejected as plain text (TRL adds no template); images as PIL."""
    from datasets import Dataset
    from PIL import Image

    rows = []
    for pair in _pairs(spec):
        row = {"prompt": pair.prompt, "chosen": " " + pair.chosen, "rejected": " " + pair.rejected}
        if pair.images:
            placeholders = " ".join([IMAGE_PLACEHOLDERS[spec["family"]]] * len(pair.images))
            row["prompt"] = placeholders + " " + pair.prompt
            row["images"] = []
            for path in pair.images:
                with Image.open(path) as image:
                    row["images"].append(image.convert("RGB"))
        rows.append(row)
    return Dataset.from_list(rows)


def trl_trainer(spec: dict[str, Any], callbacks: list[Any] | None = None) -> Any:
    from peft import LoraConfig
    from transformers import AutoProcessor, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from mmdpo.models.lora import lora_target_modules

    model = trl_model(spec)
    processing = (AutoProcessor if spec["vision"] else AutoTokenizer).from_pretrained(
        spec["model_dir"]
    )
    targets = lora_target_modules(model, "all-linear")  # exactly the layers mmdpo adapts
    peft_config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    args = DPOConfig(
        output_dir=str(fresh_folder(Path(spec["work_dir"]) / "trl")),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=spec["steps"],
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=spec.get("max_grad_norm", 1.0),
        optim="adamw_torch",
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=spec["max_length"],
        precompute_ref_log_probs=spec["reference"] == "precomputed",
        precompute_ref_batch_size=spec["batch_size"],
        gradient_checkpointing=False,
        bf16=_dtype(spec) == "bfloat16",
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=SEED,
        dataloader_num_workers=0,
    )
    return DPOTrainer(
        model=model,
        args=args,
        train_dataset=trl_dataset(spec),
        processing_class=processing,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    from transformers import TrainerCallback

    step_ends: list[float] = []
    step_cpu: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())
            step_cpu.append(time.process_time())

    started = time.perf_counter()
    trainer = trl_trainer(spec, callbacks=[StepClock()])
    trainer.train()
    total = time.perf_counter() - started
    logs = [r for r in trainer.state.log_history if "loss" in r and "num_tokens" in r]
    cumulative = [r["num_tokens"] for r in logs]
    tokens = [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
    return {
        "step_ends": step_ends,
        "step_cpu": step_cpu,
        "step_tokens": tokens,
        "pairs_per_step": spec["batch_size"],
        "first_loss": logs[0]["loss"],
        "peak_memory_bytes": peak_memory_bytes(),
        "total_s": total,
    }


RUNNERS = {"mmdpo": run_mmdpo, "trl": run_trl}
