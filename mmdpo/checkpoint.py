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
most a ``.tmp`` folder, which resume ignores and the next save removes. A checkpoint is used
only if it still verifies (every file at its size and sha256): ``latest_checkpoint`` skips
one that was damaged later, with a message that names it and the one used instead.

Every file that ``load_checkpoint`` reads with ``torch.load`` is read with ``weights_only=True``:
the RNG states are stored as tensors and plain lists, never as numpy objects (DeepSpeed's
optimizer files also hold its loss-scaler objects, allowed by name).

Sharded runs (FSDP, DeepSpeed ZeRO; see ``mmdpo/sharding.py``) differ in two places. The trainable
weights are first gathered by every process together, and the main process writes them, full,
in the same format (the adapter still loads with ``PeftModel.from_pretrained``). The optimizer
state stays split: each process writes its own ``optimizer_rank_<i>.pt`` instead of
``optimizer.pt``, and ``sharding.json`` records the kind of sharding and the number of
processes; a resume with another kind or number is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, load_model, save_file, save_model

from mmdpo.sharding import WRAPPED_CHILDREN, Sharding

CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "manifest.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
TRAIN_STATE_FILE = "train_state.json"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"
SHARDING_FILE = "sharding.json"
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
    sharding: Sharding | None = None,
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
        sharding: for FSDP and DeepSpeed ZeRO (weights or optimizer state split across
            processes): every process must call this, with its own optimizer; the weights are
            gathered and the optimizer state is written one file per process.
    """
    final = checkpoint_dir(run_dir, step)
    temporary = final.with_name(final.name + ".tmp")
    wait = barrier or (lambda: None)
    if sharding is not None and sharding.world_size > 1 and barrier is None:
        raise ValueError("a sharded save with several processes needs their barrier")
    if is_main_process:
        remove_leftovers(run_dir)
        temporary.mkdir(parents=True)
    wait()
    if is_main_process or barrier is not None:
        torch.save(_rng_state(), temporary / f"rng_state_{process_index}.pt")
    weights = None
    if sharding is not None:
        weights = sharding.gather_weights()  # a collective: every process, same order
        if optimizer is not None:
            torch.save(optimizer.state_dict(), temporary / optimizer_shard_name(process_index))
    wait()
    if is_main_process:
        try:
            _write_contents(
                temporary,
                model,
                optimizer if sharding is None else None,
                scheduler,
                train_state,
                config,
                weights=weights,
            )
            if sharding is not None:
                _write_sharding(temporary, sharding, with_optimizer=optimizer is not None)
            if calibration is not None:
                _write_json(temporary / CALIBRATION_FILE, calibration)
            _write_manifest(temporary, step)
            _fsync_tree(temporary)
            _move_into_place(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        if keep_last:
            prune_checkpoints(run_dir, keep_last, known_good=final)
    wait()
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _COMPLETE_NAME.match(p.name) and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(
    run_dir: str | Path, *, report: Callable[[str], None] | None = None
) -> Path | None:
    """The newest checkpoint of a run whose files all match its manifest (sizes and sha256).

    A newer ``step-<n>`` folder that does not verify (a file missing, truncated or changed,
    no readable manifest) is skipped, and ``report`` (default: print to stderr; pass
    ``lambda _: None`` to stay quiet) gets one line naming it, why, and the checkpoint used
    instead. Temporary folders are ignored and never deleted here (``save_checkpoint``
    removes leftovers). Every caller (resume, eval, export) picks checkpoints through this.
    """
    report = report or _print_to_stderr
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    candidates = sorted(
        (p for p in root.iterdir() if _COMPLETE_NAME.match(p.name) and p.is_dir()),
        key=checkpoint_step,
        reverse=True,
    )
    damaged: list[tuple[Path, str]] = []
    for folder in candidates:
        problem = verify_checkpoint(folder)
        if problem is None:
            for bad, why in damaged:
                report(f"checkpoint {bad} is damaged ({why}); using {folder} instead")
            return folder
        damaged.append((folder, problem))
    for bad, why in damaged:
        report(f"checkpoint {bad} is damaged ({why}); no earlier checkpoint verifies")
    return None


def verify_checkpoint(path: str | Path) -> str | None:
    """None when every file the manifest lists is there with its size and sha256; otherwise
    the first problem, e.g. ``adapter_model.safetensors: sha256 differs from the manifest``."""
    path = Path(path)
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        entries = [
            (name, int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"no readable {MANIFEST}"
    for name, size, _ in entries:  # sizes first: cheap, and they catch truncation
        file = path / name
        if not file.is_file():
            return f"{name}: missing"
        if file.stat().st_size != size:
            return f"{name}: {file.stat().st_size} bytes, the manifest says {size}"
    for name, _, digest in entries:
        if _sha256(path / name) != digest:
            return f"{name}: sha256 differs from the manifest"
    return None


def verified_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it verifies; a CheckpointError naming the problem otherwise."""
    problem = verify_checkpoint(path)
    if problem is not None:
        raise CheckpointError(f"{path}: not a complete checkpoint that verifies ({problem})")
    return Path(path)


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    sharding: Sharding | None = None,
) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler and RNG states; return the train state.

    Build the model (with its adapter), optimizer and scheduler as for a fresh run, then call
    this: the adapter weights are loaded into the existing modules bit for bit. ``verify``
    checks every file's sha256 against the manifest first. Each process restores the RNG
    states saved by the process with its index (the main one's when that file is missing).

    ``sharding`` (FSDP, DeepSpeed ZeRO): every process must call this; the weights are loaded
    through ``sharding.load_weights`` and each process reads its own optimizer file. A
    checkpoint saved by a different number of sharded processes, or by an unsharded run, is
    refused when an optimizer is to be restored.
    """
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint")
    if verify:
        _verify_hashes(path)
    _check_layout(path, sharding, with_optimizer=optimizer is not None)
    if sharding is None:
        _load_weights(path, _unwrap(model))
    else:
        sharding.load_weights(_trainable_weights(path, _unwrap(model), sharding.trainable_names))
    if optimizer is not None and sharding is not None:
        with torch.serialization.safe_globals(list(sharding.safe_globals)):
            state = _torch_load(path / optimizer_shard_name(process_index))
        if sharding.load_optimizer is None:
            optimizer.load_state_dict(state)
        else:
            sharding.load_optimizer(optimizer, state)
    elif optimizer is not None:
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


def load_checkpoint_calibration(path: str | Path) -> dict[str, Any] | None:
    """The score-calibration statistics saved with a checkpoint, or None."""
    file = Path(path) / CALIBRATION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def prune_checkpoints(
    run_dir: str | Path, keep_last: int, *, known_good: Path | None = None
) -> list[Path]:
    """Keep the newest ``keep_last`` checkpoints that verify; delete every complete one older
    than them; return the deleted ones.

    Only verified checkpoints count, so a damaged one (same size, changed bytes) never takes
    the place of a good one that a resume could fall back to. ``known_good``: a checkpoint
    just written (its hashes were computed from these very files), not hashed again. A folder
    is renamed out of the ``step-<n>`` namespace before it is deleted, so a crash while
    deleting never leaves a half-deleted folder that looks complete.
    """
    if keep_last <= 0:
        return []
    complete = list_checkpoints(run_dir)
    kept = 0
    for index in range(len(complete) - 1, -1, -1):
        folder = complete[index]
        if folder == known_good or verify_checkpoint(folder) is None:
            kept += 1
        if kept == keep_last:
            doomed = complete[:index]
            break
    else:
        return []
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
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """``weights``: gathered trainable weights of a sharded model, written instead of its own."""
    model = _unwrap(model)
    if isinstance(model, PeftModel) and weights is None:
        model.save_pretrained(str(folder), safe_serialization=True)
    elif isinstance(model, PeftModel):
        _save_gathered_adapter(folder, model, weights)
    elif weights is not None:
        # Cloned: tied weights must not share storage in a safetensors file.
        save_file(
            {k: v.detach().clone().contiguous() for k, v in weights.items()},
            str(folder / MODEL_WEIGHTS),
        )
    else:
        save_model(model, str(folder / MODEL_WEIGHTS))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    if scheduler is not None:
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    _write_json(folder / TRAIN_STATE_FILE, train_state or {})
    _write_json(folder / CONFIG_FILE, config or {})


def _save_gathered_adapter(
    folder: Path, model: PeftModel, weights: dict[str, torch.Tensor]
) -> None:
    """``save_pretrained`` from the gathered trainable weights instead of the model's own."""
    with _wrappers_hidden(model):
        names = tuple(weights)
        saved = set()
        for adapter_name in model.peft_config:
            saved.update(adapter_file_keys(model, names, adapter_name).values())
        if saved != set(names):
            raise CheckpointError(
                f"PEFT would not save the trainable weights {sorted(set(names) - saved)[:5]}"
            )
        # PEFT picks each adapter's weights out of state_dict and strips the adapter name, as
        # it does from the model's own state_dict in an unsharded save.
        model.save_pretrained(str(folder), safe_serialization=True, state_dict=weights)


@contextlib.contextmanager
def _wrappers_hidden(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` with FSDP1 and activation-checkpoint wrappers lifted out of its module tree.

    PEFT finds an adapter's weights by module names and strips only a leading
    ``_fsdp_wrapped_module.``; FSDP1 wraps each decoder layer, so names carry the prefix in the
    middle and nothing would be selected. Only ``_modules`` entries are swapped (no weights are
    touched), and all are put back on exit.
    """
    swapped = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):
                inner = _wrapped_module(child)
                if inner is not child:
                    swapped.append((parent, name, child))
                    parent._modules[name] = inner
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


def _wrapped_module(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The module inside any wrappers around ``module`` (``module`` itself if none)."""
    while module is not None:
        inner = next((module._modules[k] for k in WRAPPED_CHILDREN if k in module._modules), None)
        if inner is None:
            return module
        module = inner
    return module


def optimizer_shard_name(process_index: int) -> str:
    """The file of one process's optimizer state in a sharded checkpoint."""
    return f"optimizer_rank_{process_index}.pt"


def _write_sharding(folder: Path, sharding: Sharding, with_optimizer: bool) -> None:
    files = [optimizer_shard_name(i) for i in range(sharding.world_size)] if with_optimizer else []
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"sharded save: optimizer state missing from {missing}")
    layout = {"kind": sharding.kind, "world_size": sharding.world_size, "optimizer": files}
    _write_json(folder / SHARDING_FILE, layout)


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


def _check_layout(path: Path, sharding: Sharding | None, with_optimizer: bool) -> None:
    """Refuse a resume whose optimizer state was split across another set of processes."""
    file = path / SHARDING_FILE
    saved = json.loads(file.read_text()) if file.is_file() else None
    if saved is not None and sharding is None:
        raise CheckpointError(
            f"{path} was saved by a sharded run ({saved['kind']}, {saved['world_size']} "
            "processes); resume it with the same accelerate config and --num_processes "
            f"{saved['world_size']}"
        )
    if sharding is None or not with_optimizer:
        return
    if saved is None:
        raise CheckpointError(
            f"{path} was saved without sharding (one process or DDP): its optimizer state "
            f"cannot be split across {sharding.kind} processes; resume it as it was saved"
        )
    if (saved["kind"], saved["world_size"]) != (sharding.kind, sharding.world_size):
        raise CheckpointError(
            f"{path} holds the optimizer state of {saved['world_size']} {saved['kind']} "
            f"processes, one file each, and this run is {sharding.world_size} {sharding.kind} "
            f"processes; resume with the same accelerate config and --num_processes "
            f"{saved['world_size']}"
        )


def _trainable_weights(
    path: Path, model: torch.nn.Module, names: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """The checkpoint's weights keyed as the model's trainable parameters, every one of them."""
    if isinstance(model, PeftModel):
        weights: dict[str, torch.Tensor] = {}
        for adapter_name in model.peft_config:
            folder = path if adapter_name == "default" else path / adapter_name
            saved = load_file(str(folder / ADAPTER_WEIGHTS))
            with _wrappers_hidden(model):
                names_by_file_key = adapter_file_keys(model, names, adapter_name)
            unknown = sorted(set(saved) - set(names_by_file_key))
            if unknown:
                raise CheckpointError(
                    f"adapter {adapter_name!r} in {folder} has weights that are not trainable "
                    f"parameters of the model: {unknown[:5]}"
                )
            weights.update({names_by_file_key[key]: value for key, value in saved.items()})
    else:
        weights = load_file(str(path / MODEL_WEIGHTS))
    missing = sorted(set(names) - set(weights))
    if missing:
        raise CheckpointError(f"{path} lacks trainable weights of the model: {missing[:5]}")
    return {name: weights[name] for name in names}


def adapter_file_keys(
    model: PeftModel, names: tuple[str, ...], adapter_name: str
) -> dict[str, str]:
    """The key under which ``save_pretrained`` stores each of the weights ``names``.

    PEFT's own selection and renaming (``get_peft_model_state_dict``) runs over one index tag
    per name instead of the weights, so the mapping is PEFT's, whatever its naming rules.
    """
    tags = {name: torch.tensor(index) for index, name in enumerate(names)}
    selected = get_peft_model_state_dict(model, state_dict=tags, adapter_name=adapter_name)
    mapping = {}
    for file_key, tag in selected.items():
        if not (isinstance(tag, torch.Tensor) and tag.dim() == 0 and tag.dtype == torch.int64):
            raise CheckpointError(f"cannot tell which parameter PEFT saves as {file_key!r}")
        mapping[file_key] = names[int(tag)]
    return mapping


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
