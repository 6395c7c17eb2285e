"""Sharded checkpoints (FSDP, DeepSpeed ZeRO) without launching processes: the save writes the
gathered weights and one optimizer file per process, the load hands full weights to the
sharding, and a resume with another layout is refused. Two ranks run as threads, as in
``test_checkpoint.py``; real FSDP and DeepSpeed runs are in ``test_sharded.py`` (slow).
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from mmdpo.checkpoint import (
    CheckpointError,
    adapter_file_keys,
    load_checkpoint,
    save_checkpoint,
)
from mmdpo.sharding import Sharding, trainable_names
from tests.mmdpo.test_checkpoint import run_as_two_ranks, tiny_base


def peft_model(modules_to_save=None) -> PeftModel:
    torch.manual_seed(5)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=modules_to_save
    )
    return get_peft_model(tiny_base(), lora)


def optimizer_for(model, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def shifted_weights(model) -> dict[str, torch.Tensor]:
    """Stand-in for gathered weights: the trainable ones, each moved off the model's value."""
    return {
        name: param.detach() + 0.5 + index
        for index, (name, param) in enumerate(model.named_parameters())
        if param.requires_grad
    }


def sharding(rank: int, world_size: int, weights, loaded=None, kind="fsdp1") -> Sharding:
    names = tuple(weights)
    return Sharding(
        kind,
        world_size,
        names,
        gather_weights=lambda: dict(weights) if rank == 0 else {},
        load_weights=(loaded.update if loaded is not None else lambda w: None),
    )


def save_as_two_ranks(tmp_path, model, weights, kind="fsdp1"):
    """Each rank with its own optimizer (lr 0.1 and 0.2), the barrier between them."""

    def rank(index: int, wait) -> None:
        save_checkpoint(
            tmp_path,
            3,
            model=model,
            optimizer=optimizer_for(model, lr=0.1 * (index + 1)),
            train_state={"step": 3},
            is_main_process=index == 0,
            process_index=index,
            barrier=wait,
            sharding=sharding(index, 2, weights, kind=kind),
        )

    run_as_two_ranks(rank)
    return tmp_path / "checkpoints" / "step-000003"


def test_sharded_save_writes_the_gathered_adapter_and_each_optimizer(tmp_path, monkeypatch):
    model = peft_model()
    weights = shifted_weights(model)

    def local_state_dict(*args, **kwargs):
        raise AssertionError("a sharded save must not read the model's local state dict")

    monkeypatch.setattr(model, "state_dict", local_state_dict)
    path = save_as_two_ranks(tmp_path, model, weights)
    monkeypatch.undo()

    # The adapter is the gathered weights, in PEFT's format: from_pretrained loads them.
    loaded = PeftModel.from_pretrained(tiny_base(), str(path))
    expected = get_peft_model_state_dict(model, state_dict=weights)
    reloaded = get_peft_model_state_dict(loaded)
    assert reloaded.keys() == expected.keys() and len(expected) == 8
    assert all(torch.equal(reloaded[key], value) for key, value in expected.items())
    own = get_peft_model_state_dict(model)
    assert not any(torch.equal(own[key], value) for key, value in expected.items())

    layout = json.loads((path / "sharding.json").read_text())
    assert layout == {
        "kind": "fsdp1",
        "world_size": 2,
        "optimizer": ["optimizer_rank_0.pt", "optimizer_rank_1.pt"],
    }
    assert not (path / "optimizer.pt").exists()
    for index, lr in ((0, 0.1), (1, 0.2)):
        state = torch.load(path / f"optimizer_rank_{index}.pt", weights_only=True)
        assert state["param_groups"][0]["lr"] == pytest.approx(lr)
    manifest = json.loads((path / "manifest.json").read_text())["files"]
    assert {"optimizer_rank_0.pt", "optimizer_rank_1.pt", "sharding.json"} <= set(manifest)


def test_sharded_load_hands_the_full_weights_to_the_sharding(tmp_path):
    model = peft_model()
    weights = shifted_weights(model)
    path = save_as_two_ranks(tmp_path, model, weights)

    fresh = peft_model()
    before = {k: v.clone() for k, v in get_peft_model_state_dict(fresh).items()}
    for rank in (0, 1):
        loaded: dict[str, torch.Tensor] = {}
        optimizer = optimizer_for(fresh, lr=1.0)
        state = load_checkpoint(
            path,
            model=fresh,
            optimizer=optimizer,
            process_index=rank,
            restore_rng=False,
            sharding=sharding(rank, 2, weights, loaded),
        )
        assert state == {"step": 3}
        # Keyed as the model's trainable parameters, every one, with the saved values.
        assert loaded.keys() == weights.keys()
        assert all(torch.equal(loaded[name], weights[name]) for name in weights)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (rank + 1))
    # The sharding loads the weights (a collective); the checkpoint does not write them itself.
    after = get_peft_model_state_dict(fresh)
    assert all(torch.equal(after[key], value) for key, value in before.items())


def test_resume_with_another_layout_is_refused(tmp_path):
    model = peft_model()
    weights = shifted_weights(model)
    path = save_as_two_ranks(tmp_path / "sharded", model, weights)
    optimizer = optimizer_for(model, lr=1.0)

    def resume(layout: Sharding | None, with_optimizer: bool = True):
        return load_checkpoint(
            path,
            model=model,
            optimizer=optimizer if with_optimizer else None,
            restore_rng=False,
            sharding=layout,
        )

    with pytest.raises(CheckpointError, match="this run is 1 fsdp1 .* --num_processes 2"):
        resume(sharding(0, 1, weights))
    with pytest.raises(CheckpointError, match="2 fsdp1 processes.* this run is 2 fsdp2"):
        resume(sharding(0, 2, weights, kind="fsdp2"))
    with pytest.raises(CheckpointError, match="saved by a sharded run"):
        resume(None)
    resume(sharding(0, 1, weights), with_optimizer=False)  # the weights alone can move

    unsharded = save_checkpoint(tmp_path / "plain", 1, model=model, optimizer=optimizer)
    with pytest.raises(CheckpointError, match="saved without sharding"):
        layout = sharding(0, 2, weights)
        load_checkpoint(unsharded, model=model, optimizer=optimizer, sharding=layout)


def test_adapter_file_keys_are_those_peft_saves(tmp_path):
    """Every trainable weight, LoRA and modules_to_save, maps to its key in the PEFT file."""
    model = peft_model(modules_to_save=["lm_head"])
    names = trainable_names(model)
    mapping = adapter_file_keys(model, names, "default")
    model.save_pretrained(str(tmp_path))
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert set(mapping) == set(saved)
    assert sorted(mapping.values()) == sorted(names)
    assert any("lm_head" in key for key in mapping)
    own = dict(model.named_parameters())
    assert all(torch.equal(saved[key], own[name]) for key, name in mapping.items())


class Wrapper(torch.nn.Module):
    """Names its child as FSDP1 does (``..._fsdp_wrapped_module.<module>``)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self._fsdp_wrapped_module = module

    def forward(self, *args, **kwargs):
        return self._fsdp_wrapped_module(*args, **kwargs)


def test_layer_wrappers_do_not_hide_adapter_weights(tmp_path):
    """FSDP1 wraps each decoder layer; PEFT would then select none of their weights."""
    model = peft_model()
    layers = model.base_model.model.model.layers
    for index in range(len(layers)):
        layers[index] = Wrapper(layers[index])
    names = trainable_names(model)
    assert not any("_fsdp_wrapped_module" in name for name in names)
    weights = {name: param.detach() + 1 for name, param in zip(names, _params(model), strict=True)}
    path = save_checkpoint(tmp_path, 1, model=model, sharding=sharding(0, 1, weights))

    saved = load_file(str(path / "adapter_model.safetensors"))
    assert len(saved) == len(names) == 8
    assert all(isinstance(layer, Wrapper) for layer in layers), "wrappers put back"
    loaded: dict[str, torch.Tensor] = {}
    load_checkpoint(path, model=model, restore_rng=False, sharding=sharding(0, 1, weights, loaded))
    assert all(torch.equal(loaded[name], weights[name]) for name in names)


def _params(model) -> list[torch.Tensor]:
    return [param for param in model.parameters() if param.requires_grad]


def test_model_without_adapter_saves_gathered_weights(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    weights = {name: param.detach() * 2 for name, param in model.named_parameters()}
    path = save_checkpoint(tmp_path, 1, model=model, sharding=sharding(0, 1, weights))
    saved = load_file(str(path / "model.safetensors"))
    assert saved.keys() == weights.keys()
    assert all(torch.equal(saved[name], weights[name]) for name in weights)
    loaded: dict[str, torch.Tensor] = {}
    load_checkpoint(path, model=model, restore_rng=False, sharding=sharding(0, 1, weights, loaded))
    assert all(torch.equal(loaded[name], weights[name]) for name in weights)
