"""``mmdpo export RUN --out DIR``: a trained run as a standalone model folder, with a model card.

With ``merge`` (the default) the base model is loaded unquantized in ``dtype`` from the run's
``model.name_or_path``, the LoRA adapter of the run's newest checkpoint that verifies (sizes
and sha256 against its manifest; a damaged newer one is named and skipped) is applied and
merged into its weights, and the result is saved in Hugging Face format (safetensors) with the
tokenizer or processor: ``AutoModelForCausalLM.from_pretrained(DIR)`` loads it, no peft needed.
A run trained on a 4-bit or 8-bit base therefore exports the full-precision base plus the merged
adapter. Without ``merge`` the adapter files are copied instead. Either way a ``README.md``
model card records the base model, the loss and its hyperparameters, the data, the steps and
the final metrics. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mmdpo import checkpoint as ckpt
from mmdpo.config import DTYPES, Config
from mmdpo.run_folder import RunFolder, RunFolderError, check_output_dir

ADAPTER_FILES = ("adapter_config.json", ckpt.ADAPTER_WEIGHTS)


class ExportError(ValueError):
    """A run that cannot be exported as asked; the message says why."""


def _mmdpo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmdpo")
    except PackageNotFoundError:
        return "unknown"


def _find_checkpoint(folder: RunFolder, checkpoint: str | Path | None) -> Path:
    """The newest checkpoint that verifies, or the one asked for (which must verify)."""
    if checkpoint is None:
        found = folder.latest_checkpoint()
        if found is None:
            raise ExportError(
                f"{folder.path}: no complete checkpoint that verifies under "
                f"{folder.checkpoints_dir} (did the run save one? train.save_every, or the "
                "run's end, writes it)"
            )
        return found
    path = Path(checkpoint)
    if not path.is_absolute() and not path.exists():
        path = folder.checkpoints_dir / path
    try:
        return ckpt.verified_checkpoint(path)
    except ckpt.CheckpointError as err:
        raise ExportError(str(err)) from None


def _load_run(folder: RunFolder) -> Config:
    try:
        return folder.config()
    except RunFolderError as err:
        raise ExportError(str(err)) from None


def _merged_model(config: Config, checkpoint: Path, dtype: str) -> tuple[Any, Any]:
    """The base in full precision with the checkpoint's weights applied; and its processing."""
    from peft import PeftModel
    from safetensors.torch import load_model

    from mmdpo.models.loading import load_policy

    model, processing, _ = load_policy(
        config.model.name_or_path,
        kind=config.model.kind,
        quantization="none",
        dtype=dtype,
        trust_remote_code=config.model.trust_remote_code,
        prepare_for_training=False,
    )
    if (checkpoint / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(model, str(checkpoint)).merge_and_unload()
    else:  # a full fine-tuning run (lora.enabled=false) saves the whole state dict
        load_model(model, str(checkpoint / ckpt.MODEL_WEIGHTS))
    model.eval()
    return model, processing


def _copy_adapter(checkpoint: Path, folder: Path) -> None:
    if not (checkpoint / "adapter_config.json").is_file():
        raise ExportError(
            f"{checkpoint}: holds full model weights, not a LoRA adapter; export with merge"
        )
    for item in checkpoint.iterdir():
        # The adapter files and any extra adapters' subfolders; not optimizer or RNG state.
        if item.name in ADAPTER_FILES:
            shutil.copy2(item, folder / item.name)
        elif item.is_dir() and (item / "adapter_config.json").is_file():
            shutil.copytree(item, folder / item.name)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    merge: bool = True,
    checkpoint: str | Path | None = None,
    dtype: str = "bfloat16",
) -> Path:
    """Export a run's latest (or the given) checkpoint to ``out_dir``; return ``out_dir``.

    Args:
        run_dir: the run folder (``train.output_dir``): config.yaml, checkpoints/, metrics.jsonl.
        out_dir: the folder to create; it must not exist yet (or be empty).
        merge: merge the adapter into the unquantized base (True) or copy the adapter (False).
        checkpoint: a checkpoint folder or its name (``step-000100``); default the latest.
        dtype: dtype of the merged weights: float32, bfloat16 or float16.
    """
    if dtype not in DTYPES:
        raise ExportError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    folder, out_dir = RunFolder(run_dir), Path(out_dir)
    run_dir = folder.path
    config = _load_run(folder)
    try:
        check_output_dir(out_dir, "--out")
    except RunFolderError as err:
        raise ExportError(str(err)) from None
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"--out {out_dir}: already exists; choose another --out or remove it")
    source = _find_checkpoint(folder, checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent)
    )
    try:
        if merge:
            model, processing = _merged_model(config, source, dtype)
            model.save_pretrained(str(temporary), safe_serialization=True)
        else:
            from mmdpo.setup import load_processing

            _copy_adapter(source, temporary)
            processing, _ = load_processing(config)
        processing.save_pretrained(str(temporary))
        card = model_card(config, run_dir, source, merge=merge, dtype=dtype)
        (temporary / "README.md").write_text(card, encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(temporary, out_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out_dir


# --- the model card -------------------------------------------------------------------------


def _final_metrics(run_dir: Path, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last logged train record and eval record up to ``step``."""
    records = RunFolder(run_dir).metrics()
    kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= step]
    train = [r for r in kept if "loss" in r and "skipped" not in r]
    evals = [r for r in kept if any(key.startswith("eval/") for key in r)]
    train_last = {
        k: v
        for k, v in (train[-1] if train else {}).items()
        if not k.startswith(("eval/", "perf/", "memory/")) and k not in ("lr", "epoch")
    }
    eval_last = {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("eval/")}
    return train_last, eval_last


def _table(values: dict[str, Any], keys: list[str] | None = None) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    for key in keys or sorted(values):
        if key in values and key != "step":
            value = values[key]
            rows.append(
                f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            )
    return rows


def model_card(config: Config, run_dir: Path, checkpoint: Path, *, merge: bool, dtype: str) -> str:
    """README.md for the exported folder: YAML front matter, then what was trained and how."""
    base = config.model.name_or_path
    step = ckpt.checkpoint_step(checkpoint)
    loss = config.loss.resolve()
    train_metrics, eval_metrics = _final_metrics(run_dir, step)
    is_vlm = _is_vlm(config)
    auto = "AutoModelForImageTextToText" if is_vlm else "AutoModelForCausalLM"
    data = config.data.train if isinstance(config.data.train, list) else [config.data.train]
    front = {
        "base_model": base,
        "library_name": "transformers" if merge else "peft",
        "tags": ["mmdpo", config.loss.name, "preference-alignment", "lora"],
    }
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---", ""]
    lines += [
        f"# {Path(base).name or base} aligned with {config.loss.name}",
        "",
        f"Trained with mmdpo {_mmdpo_version()} from the run `{run_dir}`, checkpoint "
        f"`{checkpoint.name}` ({step} optimizer steps).",
        "",
        "## Model",
        "",
        f"- base model: `{base}`",
        f"- training precision: {config.model.dtype}, quantization {config.model.quantization}",
        f"- LoRA: r={config.lora.r}, alpha={config.lora.alpha}, "
        f"targets {config.lora.target_modules}"
        if config.lora.enabled
        else "- full fine-tuning (no LoRA)",
        "- this folder: "
        + (
            f"the base loaded unquantized in {dtype} with the adapter merged into its weights"
            if merge
            else "the LoRA adapter only (load it on top of the base model)"
        ),
        "",
        "## Objective",
        "",
        f"- loss: `{config.loss.name}`",
        "- hyperparameters: " + ", ".join(f"{k}={v}" for k, v in loss.hyperparams.items()),
        f"- length-normalized (mean per-token) log-probs: {loss.average}",
        f"- reference: {config.reference.mode}",
        "",
        "## Data",
        "",
        *(f"- train: `{entry}`" for entry in data),
        f"- eval: `{config.data.eval}`" if config.data.eval else "- eval: none given",
        f"- format {config.data.format}, max_length {config.data.max_length}, "
        f"score calibration {config.data.calibration}",
        "",
        "## Training",
        "",
        f"- steps: {step}, batch_size {config.train.batch_size} x grad_accum "
        f"{config.train.grad_accum} per process, learning rate {config.train.learning_rate} "
        f"({config.train.scheduler}), seed {config.train.seed}",
        "",
        "Final train metrics:",
        "",
        *(_table(train_metrics) if train_metrics else ["(none logged)"]),
        "",
        "Final eval metrics:",
        "",
        *(_table(eval_metrics) if eval_metrics else ["(no held-out data)"]),
        "",
        "## Use",
        "",
        *_usage(auto, base, merge),
    ]
    return "\n".join(lines)


def _usage(auto: str, base: str, merge: bool) -> list[str]:
    """The model card's code block that loads the exported folder."""
    if merge:
        code = [
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'model = {auto}.from_pretrained("path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        ]
    else:
        code = [
            "from peft import PeftModel",
            f"from transformers import {auto}",
            "",
            f'base = {auto}.from_pretrained("{base}")',
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
        ]
    return ["```python", *code, "```", ""]


def _is_vlm(config: Config) -> bool:
    if config.model.kind != "auto":
        return config.model.kind == "vlm"
    from transformers import AutoConfig

    from mmdpo.models.loading import is_vlm_config

    try:
        model_config = AutoConfig.from_pretrained(
            config.model.name_or_path, trust_remote_code=config.model.trust_remote_code
        )
    except (OSError, ValueError):
        return False
    return is_vlm_config(model_config)


# --- the command ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo export``."""
    parser.add_argument("run", help="the run folder (train.output_dir)")
    parser.add_argument("--out", required=True, help="the folder to create")
    parser.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge the adapter into the unquantized base (default); --no-merge copies "
        "the adapter only",
    )
    parser.add_argument("--checkpoint", help="a checkpoint folder or name (default: the latest)")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=DTYPES, help="dtype of the merged weights"
    )


def run(args: argparse.Namespace) -> int:
    """``mmdpo export``: 0 on success, 2 with one clear line for a user's mistake."""
    try:
        out = export_run(
            args.run, args.out, merge=args.merge, checkpoint=args.checkpoint, dtype=args.dtype
        )
    except (ExportError, ckpt.CheckpointError, RunFolderError) as err:
        print(f"mmdpo export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {out}")
    return 0
