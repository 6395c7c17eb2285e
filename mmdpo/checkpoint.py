"""Atomic checkpoints and exact resume.

A checkpoint is one folder, ``<run_dir>/checkpoints/step-000123/``::

    adapter_config.json, adapter_model.safetensors   the LoRA adapter in PEFT format, so
                                                     PeftModel.from_pretrained(base, folder)
                                                     loads it (model.safetensors instead for
                                                     a model without an adapter)
    optimizer.pt, scheduler.pt                       their state dicts (torch.save)
    rng_state_0.pt, rng_state_1.pt, ...              python, numpy, torch and CUDA RNG states,
                                                     one file per process
    train_state.json                                 data position and counters (the caller's)
    config.json, calibration.json                    the run config and score calibration
    manifest.json                                    every file above with its size and sha256

Everything is written into ``step-000123.tmp`` first; the manifest is written last, the files
and folders are fsynced, and only then is the folder renamed into place. So a folder named
``step-<n>`` with a valid manifest is complete, and a process killed during a save leaves at
most a ``.tmp`` folder, which resume ignores and the next save removes.

Every file that ``load_checkpoint`` reads with ``torch.load`` is read with ``weights_only=True``:
the RNG states are stored as tensors and plain lists, never as numpy objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file, load_model, save_model

CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "manifest.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
TRAIN_STATE_FILE = "train_state.json"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1

_COMPLETE_NAME = re.compile(r"^step-(\d+)$")
# Leftovers of an interrupted save (.tmp), replace (.old) or prune (.deleting).
_LEFTOVER_NAME = re.compile(r"^step-\d+\.(tmp|old|deleting)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match its manifest."""


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """The folder that holds the checkpoint of ``step``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def checkpoint_step(path: str | Path) -> int:
    """The step of a checkpoint folder, read from its name."""
    match = _COMPLETE_NAME.match(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not a checkpoint folder (expected step-<number>)")
    return int(match.group(1))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    train_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    keep_last: int | None = None,
    is_main_process: bool = True,
    process_index: int = 0,
    barrier: Callable[[], None] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` atomically and prune old ones; return its folder.

    Args:
        run_dir: the run folder; checkpoints go to ``run_dir/checkpoints``.
        step: the number of optimizer steps taken so far.
        model: the trained model, unwrapped from DDP (``accelerator.unwrap_model``). For a
            PeftModel only the adapter is saved, otherwise the whole state dict.
        optimizer, scheduler: saved through their ``state_dict()``.
        train_state: JSON-able data position and counters (epoch, batches consumed, sampler
            seed, ...), handed back unchanged by ``load_checkpoint``.
        config: the run config as a JSON-able dict.
        calibration: the score-calibration statistics as a JSON-able dict, or None.
        keep_last: keep only the newest ``keep_last`` checkpoints; None or 0 keeps all.
        is_main_process: only the main process writes the model, optimizer and files.
        process_index: this process's rank; each process saves its own RNG states.
        barrier: with several processes, a callable that waits for all of them
            (``accelerator.wait_for_everyone``). Without it only the main process saves.

    Sharded optimizers and models (DeepSpeed ZeRO-3, FSDP) are not gathered here.
    """
    final = checkpoint_dir(run_dir, step)
    temporary = final.with_name(final.name + ".tmp")
    wait = barrier or (lambda: None)
    if is_main_process:
        remove_leftovers(run_dir)
        temporary.mkdir(parents=True)
    wait()
    if is_main_process or barrier is not None:
        torch.save(_rng_state(), temporary / f"rng_state_{process_index}.pt")
    wait()
    if is_main_process:
        try:
            _write_contents(temporary, model, optimizer, scheduler, train_state, config)
            if calibration is not None:
                _write_json(temporary / CALIBRATION_FILE, calibration)
            _write_manifest(temporary, step)
            _fsync_tree(temporary)
            _move_into_place(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        if keep_last:
            prune_checkpoints(run_dir, keep_last)
    wait()
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _COMPLETE_NAME.match(p.name) and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    Temporary folders and folders without a manifest that matches their files (sizes) are
    ignored, never deleted here: ``save_checkpoint`` removes leftovers on the main process.
    """
    complete = list_checkpoints(run_dir)
    return complete[-1] if complete else None


def is_complete(path: str | Path) -> bool:
    """Whether the folder has a readable manifest and every file it lists, at its size."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for name, entry in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != entry["bytes"]:
            return False
    return True


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    process_index: int = 0,
    restore_rng: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler and RNG states; return the train state.

    Build the model (with its adapter), optimizer and scheduler as for a fresh run, then call
    this: the adapter weights are loaded into the existing modules bit for bit. ``verify``
    checks every file's sha256 against the manifest first. Each process restores the RNG
    states saved by the process with its index (the main one's when that file is missing).
    """
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint")
    if verify:
        _verify_hashes(path)
    _load_weights(path, _unwrap(model))
    if optimizer is not None:
        optimizer.load_state_dict(_torch_load(path / OPTIMIZER_FILE))
    if scheduler is not None:
        scheduler.load_state_dict(_torch_load(path / SCHEDULER_FILE))
    if restore_rng:
        rng_file = path / f"rng_state_{process_index}.pt"
        if not rng_file.is_file():
            warnings.warn(
                f"{rng_file.name} missing (different number of processes?); using rank 0's RNG",
                stacklevel=2,
            )
            rng_file = path / "rng_state_0.pt"
        _set_rng_state(_torch_load(rng_file))
    return json.loads((path / TRAIN_STATE_FILE).read_text())


def load_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The run config saved with a checkpoint."""
    return json.loads((Path(path) / CONFIG_FILE).read_text())


def load_checkpoint_calibration(path: str | Path) -> dict[str, Any] | None:
    """The score-calibration statistics saved with a checkpoint, or None."""
    file = Path(path) / CALIBRATION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; return the deleted ones.

    A folder is renamed out of the ``step-<n>`` namespace before it is deleted, so a crash
    while deleting never leaves a half-deleted folder that looks complete.
    """
    if keep_last <= 0:
        return []
    doomed = list_checkpoints(run_dir)[:-keep_last]
    for folder in doomed:
        _remove_folder(folder)
    return doomed


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Delete what interrupted saves, replaces or prunes left behind; return it."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    leftovers = [p for p in root.iterdir() if _LEFTOVER_NAME.match(p.name)]
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
    return leftovers


# --- writing --------------------------------------------------------------------------------


def _write_contents(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    train_state: dict[str, Any] | None,
    config: dict[str, Any] | None,
) -> None:
    model = _unwrap(model)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(folder), safe_serialization=True)
    else:
        save_model(model, str(folder / MODEL_WEIGHTS))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    if scheduler is not None:
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    _write_json(folder / TRAIN_STATE_FILE, train_state or {})
    _write_json(folder / CONFIG_FILE, config or {})


def _write_json(file: Path, value: Any) -> None:
    file.write_text(json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _write_manifest(folder: Path, step: int) -> None:
    files = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        files[file.relative_to(folder).as_posix()] = {
            "bytes": file.stat().st_size,
            "sha256": _sha256(file),
        }
    manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
    _write_json(folder / MANIFEST, manifest)


def _fsync_tree(folder: Path) -> None:
    """Flush every file, then every folder, so the rename never outruns the data."""
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    for sub in [*(p for p in folder.rglob("*") if p.is_dir()), folder]:
        _fsync_dir(sub)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders (Windows)
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _move_into_place(temporary: Path, final: Path) -> None:
    # A rename cannot replace a non-empty folder, so a checkpoint saved again for the same
    # step first moves the old one aside (a name resume ignores).
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, final)
    _fsync_dir(final.parent)


def _remove_folder(folder: Path) -> None:
    doomed = folder.with_name(folder.name + ".deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    _fsync_dir(folder.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading --------------------------------------------------------------------------------


def _verify_hashes(path: Path) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    for name, entry in manifest["files"].items():
        if _sha256(path / name) != entry["sha256"]:
            raise CheckpointError(f"{path / name} does not match its sha256 in the manifest")


def _load_weights(path: Path, model: torch.nn.Module) -> None:
    if not isinstance(model, PeftModel):
        load_model(model, str(path / MODEL_WEIGHTS))
        return
    for adapter_name in model.peft_config:
        # PeftModel.save_pretrained puts the default adapter at the top, others in subfolders.
        folder = path if adapter_name == "default" else path / adapter_name
        weights = load_file(str(folder / ADAPTER_WEIGHTS))
        result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
        if result.unexpected_keys:
            raise CheckpointError(
                f"adapter {adapter_name!r} in {folder} has weights the model lacks: "
                f"{result.unexpected_keys[:5]}"
            )


def _torch_load(file: Path) -> Any:
    return torch.load(file, map_location="cpu", weights_only=True)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model


# --- RNG states -----------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain lists (loadable with ``weights_only=True``)."""
    version, python_state, gauss = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(python_state), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(
        (name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) != torch.cuda.device_count():
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda_states)} devices, "
                f"this machine has {torch.cuda.device_count()}; restoring the common ones",
                stacklevel=3,
            )
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device=index)
