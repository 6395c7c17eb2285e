"""Checkpoints: exact resume, PEFT-loadable adapters, crash safety, pruning."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.optimization import get_linear_schedule_with_warmup

from mmdpo import checkpoint
from mmdpo.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_checkpoint_calibration,
    prune_checkpoints,
    save_checkpoint,
    verified_checkpoint,
    verify_checkpoint,
)

DATA = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
BATCH_SIZE = 2
TOTAL_STEPS = 6


def tiny_base() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)  # the base weights are the same in every run, as from_pretrained
    return LlamaForCausalLM(config)


def build(adapter_seed: int):
    """Model, optimizer and scheduler as a fresh run builds them."""
    base = tiny_base()
    torch.manual_seed(adapter_seed)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, 1, TOTAL_STEPS)
    return model, optimizer, scheduler


def fresh_train_state() -> dict:
    return {"step": 0, "epoch": 0, "batches_consumed": 0, "sampler_seed": 17}


def train(model, optimizer, scheduler, state: dict, steps: int) -> None:
    """A toy loop whose result depends on the data position and on every RNG.

    Dropout in LoRA draws from torch's RNG; the loss scale draws from python's and numpy's,
    so a resume that forgot any of them would drift.
    """
    model.train()
    batches_per_epoch = len(DATA) // BATCH_SIZE
    for _ in range(steps):
        generator = torch.Generator().manual_seed(state["sampler_seed"] + state["epoch"])
        order = torch.randperm(len(DATA), generator=generator)
        start = state["batches_consumed"] * BATCH_SIZE
        rows = DATA[order[start : start + BATCH_SIZE]]
        scale = 1.0 + 0.1 * random.random() + 0.1 * float(np.random.rand())
        loss = model(input_ids=rows, labels=rows).loss * scale
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        state["step"] += 1
        state["batches_consumed"] += 1
        if state["batches_consumed"] == batches_per_epoch:
            state["epoch"] += 1
            state["batches_consumed"] = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adapter_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_interrupted_and_resumed_run_ends_bitwise_equal(tmp_path):
    seed_everything(1)
    model, optimizer, scheduler = build(adapter_seed=5)
    state = fresh_train_state()
    train(model, optimizer, scheduler, state, TOTAL_STEPS)
    uninterrupted = adapter_weights(model)

    seed_everything(1)
    model, optimizer, scheduler = build(adapter_seed=5)
    state = fresh_train_state()
    train(model, optimizer, scheduler, state, 3)
    config = {"loss": {"name": "unidpo", "beta": 2.0}}
    calibration = {"text/unknown": {"tau_good": 3.2}}
    save_checkpoint(
        tmp_path,
        3,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_state=state,
        config=config,
        calibration=calibration,
    )

    # A new process: new objects, a different adapter init, scrambled RNGs.
    seed_everything(999)
    model, optimizer, scheduler = build(adapter_seed=6)
    path = latest_checkpoint(tmp_path)
    assert path == checkpoint_dir(tmp_path, 3)
    state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    assert state == {"step": 3, "epoch": 0, "batches_consumed": 3, "sampler_seed": 17}
    assert json.loads((path / "config.json").read_text()) == config
    assert load_checkpoint_calibration(path) == calibration
    train(model, optimizer, scheduler, state, TOTAL_STEPS - 3)
    resumed = adapter_weights(model)

    assert resumed.keys() == uninterrupted.keys()
    for name, weight in uninterrupted.items():
        assert torch.equal(resumed[name], weight), name
    assert scheduler.get_last_lr() == pytest.approx([0.0])


def test_resume_without_rng_restore_drifts(tmp_path):
    """The control for the test above: the RNG states are what makes the resume exact."""
    seed_everything(1)
    model, optimizer, scheduler = build(adapter_seed=5)
    state = fresh_train_state()
    train(model, optimizer, scheduler, state, TOTAL_STEPS)
    uninterrupted = adapter_weights(model)

    seed_everything(1)
    model, optimizer, scheduler = build(adapter_seed=5)
    state = fresh_train_state()
    train(model, optimizer, scheduler, state, 3)
    path = save_checkpoint(
        tmp_path, 3, model=model, optimizer=optimizer, scheduler=scheduler, train_state=state
    )
    seed_everything(999)
    model, optimizer, scheduler = build(adapter_seed=6)
    state = load_checkpoint(
        path, model=model, optimizer=optimizer, scheduler=scheduler, restore_rng=False
    )
    train(model, optimizer, scheduler, state, TOTAL_STEPS - 3)
    resumed = adapter_weights(model)
    assert any(not torch.equal(resumed[k], v) for k, v in uninterrupted.items())


def test_saved_adapter_loads_with_peft_from_pretrained(tmp_path):
    seed_everything(1)
    model, optimizer, scheduler = build(adapter_seed=5)
    train(model, optimizer, scheduler, fresh_train_state(), 2)
    path = save_checkpoint(tmp_path, 2, model=model, optimizer=optimizer, scheduler=scheduler)

    assert (path / "adapter_config.json").is_file()
    assert (path / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(tiny_base(), str(path))
    trained = adapter_weights(model)
    reloaded = adapter_weights(loaded)
    assert reloaded.keys() == trained.keys()
    assert all(torch.equal(reloaded[k], v) for k, v in trained.items())
    # Only the adapter is stored, not the base model.
    assert not (path / "model.safetensors").exists()


def test_model_without_adapter_round_trips(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer)

    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, model=other, optimizer=other_optimizer)
    for mine, theirs in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert torch.equal(
        optimizer.state_dict()["state"][0]["momentum_buffer"],
        other_optimizer.state_dict()["state"][0]["momentum_buffer"],
    )


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def test_failed_save_leaves_previous_checkpoint_latest(tmp_path, monkeypatch):
    model = small_model()
    save_checkpoint(tmp_path, 2, model=model)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 4, model=model)
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 2)
    assert not checkpoint_dir(tmp_path, 4).exists()


def test_half_written_folders_are_ignored_and_leftovers_removed(tmp_path):
    model = small_model()
    good = save_checkpoint(tmp_path, 2, model=model)
    root = tmp_path / "checkpoints"
    # A save killed before the rename: a temporary folder with some files.
    (root / "step-000006.tmp").mkdir()
    (root / "step-000006.tmp" / "model.safetensors").write_bytes(b"partial")
    # A folder without a manifest (not written by save_checkpoint, or a broken copy).
    (root / "step-000008").mkdir()
    (root / "step-000008" / "model.safetensors").write_bytes(b"x")
    # A complete-looking folder whose file was truncated afterwards.
    truncated = save_checkpoint(tmp_path, 10, model=model)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:10])

    assert latest_checkpoint(tmp_path, report=lambda _: None) == good
    assert list_checkpoints(tmp_path) == [good]
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated, model=small_model())

    newer = save_checkpoint(tmp_path, 12, model=model)
    assert latest_checkpoint(tmp_path) == newer
    assert not (root / "step-000006.tmp").exists()


def test_corrupted_file_fails_hash_check(tmp_path):
    path = save_checkpoint(tmp_path, 1, model=small_model())
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    # Sizes match: only the hash can tell, and the only checkpoint is not used.
    messages = []
    assert latest_checkpoint(tmp_path, report=messages.append) is None
    assert messages == [
        f"checkpoint {path} is damaged (model.safetensors: sha256 differs from the manifest); "
        "no earlier checkpoint verifies"
    ]
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path, model=small_model())


def damage(folder: Path, how: str) -> None:
    """Damage a checkpoint's weights file after its save, as a disk, a copy or a user might."""
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "same size":
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "truncated":
        weights.write_bytes(bytes(data[:-8]))
    else:
        weights.unlink()


@pytest.mark.parametrize("how", ["same size", "truncated", "missing"])
def test_a_damaged_newest_checkpoint_is_skipped_with_a_message(tmp_path, how, capsys):
    good = save_checkpoint(tmp_path, 2, model=small_model())
    newest = save_checkpoint(tmp_path, 4, model=small_model())
    size = (newest / "model.safetensors").stat().st_size
    damage(newest, how)
    why = {
        "same size": "model.safetensors: sha256 differs from the manifest",
        "truncated": f"model.safetensors: {size - 8} bytes, the manifest says {size}",
        "missing": "model.safetensors: missing",
    }[how]
    assert latest_checkpoint(tmp_path) == good
    assert capsys.readouterr().err == (
        f"checkpoint {newest} is damaged ({why}); using {good} instead\n"
    )
    assert verify_checkpoint(good) is None and verify_checkpoint(newest) == why
    with pytest.raises(CheckpointError, match="not a complete checkpoint that verifies"):
        verified_checkpoint(newest)


@pytest.mark.slow  # a child process that imports torch and peft
def test_process_killed_during_save_leaves_previous_checkpoint(tmp_path):
    """A real SIGKILL in the middle of a save, in a child process."""
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from mmdpo import checkpoint
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        checkpoint.save_checkpoint({str(tmp_path)!r}, 1, model=model)
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint._fsync_tree = killed
        checkpoint.save_checkpoint({str(tmp_path)!r}, 2, model=model)
        """
    )
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], cwd=repo_root, timeout=120)
    assert result.returncode == -9
    assert (tmp_path / "checkpoints" / "step-000002.tmp" / "manifest.json").is_file()
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 1)


def test_keep_last_prunes_oldest(tmp_path):
    model = small_model()
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model=model, keep_last=2)
    assert list_checkpoints(tmp_path) == [checkpoint_dir(tmp_path, 4), checkpoint_dir(tmp_path, 5)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-000004",
        "step-000005",
    ]
    assert prune_checkpoints(tmp_path, 1) == [checkpoint_dir(tmp_path, 4)]
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 5)


def test_saving_a_step_again_replaces_it(tmp_path):
    model = small_model()
    save_checkpoint(tmp_path, 3, model=model, train_state={"epoch": 0})
    path = save_checkpoint(tmp_path, 3, model=model, train_state={"epoch": 1})
    assert load_checkpoint(path, model=small_model()) == {"epoch": 1}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000003"]


def run_as_two_ranks(rank) -> None:
    """Call ``rank(index, barrier_wait)`` for ranks 0 and 1 in two threads; re-raise errors."""
    barrier = threading.Barrier(2, timeout=60)
    errors = []

    def run(index: int) -> None:
        try:
            rank(index, barrier.wait)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_two_processes_coordinate_through_the_barrier(tmp_path):
    """Two ranks as threads: the main one writes the model, each rank its own RNG file."""
    model = small_model()
    results = {}

    def rank(index: int, wait) -> None:
        results[index] = save_checkpoint(
            tmp_path,
            7,
            model=model,
            is_main_process=index == 0,
            process_index=index,
            barrier=wait,
        )

    run_as_two_ranks(rank)
    path = checkpoint_dir(tmp_path, 7)
    assert results == {0: path, 1: path}
    assert (path / "rng_state_0.pt").is_file() and (path / "rng_state_1.pt").is_file()
    assert latest_checkpoint(tmp_path) == path


def test_rng_state_is_restored(tmp_path):
    model = small_model()
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    path = save_checkpoint(tmp_path, 8, model=model)
    seed_everything(100)
    with pytest.warns(UserWarning, match="rng_state_1.pt missing"):
        load_checkpoint(path, model=small_model(), process_index=1)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1]
    assert np.random.rand() == expected[2]


def test_no_checkpoint_yet(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert list_checkpoints(tmp_path) == []


def test_pruning_counts_only_checkpoints_that_verify(tmp_path):
    """A same-size damaged checkpoint must not push out the good one a resume falls back to."""
    model = small_model()
    good = save_checkpoint(tmp_path, 1, model=model, keep_last=2)
    damaged = save_checkpoint(tmp_path, 2, model=model, keep_last=2)
    damage(damaged, "same size")
    newest = save_checkpoint(tmp_path, 3, model=model, keep_last=2)
    assert list_checkpoints(tmp_path) == [good, damaged, newest]  # step 1 survives
    save_checkpoint(tmp_path, 4, model=model, keep_last=2)
    assert list_checkpoints(tmp_path) == [newest, checkpoint_dir(tmp_path, 4)]
