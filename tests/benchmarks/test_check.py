"""The benchmark's same-work check: it compares gradients, and a broken backward fails it.

The slow tests run each engine's real first optimizer step on the benchmark's tiny preset:
a base layer cut out of mmdpo's backward leaves the loss unchanged (a loss-only check passes)
and fails the gradient check; on a CPU with AVX512-BF16, TRL's 4-bit run with a precomputed
reference is caught the same way, with TRL named as the wrong side.
"""

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import check  # noqa: E402

# ------------------------------------------------------------------------------------ fast


def _grads(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    names = [f"model.layers.{i}.mlp.down_proj.lora_{ab}.weight" for i in range(3) for ab in "AB"]
    return {name: torch.randn(8, 16, generator=generator) for name in names}


def test_equal_gradients_pass_and_one_perturbed_tensor_fails():
    ours, theirs = _grads(), _grads()
    assert check.compare_gradients(ours, theirs)["passed"]
    # fp32 noise (1e-6 relative) passes; a 1 % change of one tensor does not.
    noisy = {n: g * (1 + 1e-6) for n, g in ours.items()}
    assert check.compare_gradients(noisy, theirs)["passed"]
    name = "model.layers.1.mlp.down_proj.lora_A.weight"
    ours[name] = ours[name] * 1.01
    result = check.compare_gradients(ours, theirs)
    assert not result["passed"]
    assert result["failing"] == 1 and result["failing_names"] == [name]
    assert result["worst"] == name and 0.009 < result["max_rel_err"] < 0.011


def test_a_missing_or_zero_gradient_fails():
    ours, theirs = _grads(), _grads()
    name = "model.layers.0.mlp.down_proj.lora_B.weight"
    del ours[name]
    result = check.compare_gradients(ours, theirs)
    assert not result["passed"] and result["only_trl"] == [name]
    ours[name] = torch.zeros_like(theirs[name])  # a gradient that never arrived
    result = check.compare_gradients(ours, theirs)
    assert not result["passed"] and result["max_rel_err"] == 1.0


def test_names_match_across_the_engines_wrappers():
    mmdpo = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    wrapped = "module._orig_mod.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert check.canonical_name(mmdpo) == check.canonical_name(wrapped)
    assert check.canonical_name(mmdpo) == "model.layers.0.self_attn.q_proj.lora_A.weight"


def _side(tmp_path, name: str, grads: dict, loss: float, layout=(0, 0)) -> dict:
    path = tmp_path / f"{name}.pt"
    torch.save(grads, path)
    return {
        "loss": loss,
        "rows": [[5, 6, 7]],
        "chosen_logps": -1.0,
        "rejected_logps": -2.0,
        "grads_path": str(path),
        "inference_layout": list(layout),
    }


def test_same_loss_different_gradients_is_a_failure_that_names_the_wrong_side(tmp_path):
    theirs_grads = _grads()
    broken = {n: g * 0.5 if "layers.0" in n else g for n, g in theirs_grads.items()}
    ours = _side(tmp_path, "ours", _grads(), 0.6931)
    theirs = _side(tmp_path, "theirs", broken, 0.6931, layout=(14, 14))
    verdict = check.compare_sides(ours, theirs)
    assert verdict["abs_diff"] == 0.0 and verdict["same_tokens"]
    assert not verdict["passed"]
    assert "2 of 6 gradient tensors differ" in verdict["reason"]
    assert "TRL's gradient is wrong: 14 of its 14 4-bit layers" in verdict["reason"]
    assert check.compare_sides(ours, _side(tmp_path, "same", _grads(), 0.69312))["passed"]


# ------------------------------------------------------------------------------------ slow


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    """The benchmark's tiny text model and two pairs (one batch)."""
    import workload

    root = tmp_path_factory.mktemp("bench")
    folder = workload.model_folder(root, "text", "tiny")
    pairs = workload.synthetic_pairs(2, sizes=workload.PRESETS["tiny"], vision=False)
    workload.save_pairs(pairs, root / "pairs.jsonl")
    return root, folder


def _spec(root: Path, folder: Path, engine: str, tag: str, **changes) -> dict:
    spec = {
        "engine": engine,
        "family": "text",
        "vision": False,
        "model_dir": str(folder),
        "pairs": str(root / "pairs.jsonl"),
        "quantization": "none",
        "reference": "adapter_off",
        "max_length": 64,
        "batch_size": 2,
        "steps": 1,
        "max_grad_norm": 0.0,
        "trl_runs": True,
        "work_dir": str(root / tag),
        "grads_path": str(root / f"{tag}.pt"),
    }
    return {**spec, **changes}


@pytest.mark.slow
def test_a_base_layer_cut_out_of_the_backward_fails_the_check(tiny_text, monkeypatch):
    """mmdpo with one base layer's output detached: same loss as TRL, wrong gradients."""
    import mmdpo.trainer as engine

    root, folder = tiny_text
    theirs = check.run_side(_spec(root, folder, "trl", "trl"))
    ours = check.run_side(_spec(root, folder, "mmdpo", "mmdpo"))
    verdict = check.compare_sides(ours, theirs)
    assert verdict["passed"], verdict["reason"]
    assert verdict["gradients"]["max_rel_err"] < 1e-4

    load = engine.load_model_for_training

    def load_with_a_cut(config, *args, **kwargs):
        model = load(config, *args, **kwargs)
        layer = model.base_model.model.model.layers[1].mlp.down_proj.base_layer
        layer.register_forward_hook(lambda module, inputs, output: output.detach())
        return model

    monkeypatch.setattr(engine, "load_model_for_training", load_with_a_cut)
    cut = check.run_side(_spec(root, folder, "mmdpo", "cut"))
    verdict = check.compare_sides(cut, theirs)
    assert verdict["abs_diff"] <= check.LOSS_TOLERANCE  # a loss-only check would pass
    assert not verdict["passed"]
    assert "gradient tensors differ" in verdict["reason"]
    assert verdict["gradients"]["max_rel_err"] > 0.1


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_avx512_bf16(), reason="bitsandbytes repacks only on AVX512-BF16")
def test_trl_4bit_with_a_precomputed_reference_is_caught_on_this_cpu(tiny_text):
    """TRL's precompute runs the 4-bit model in eval mode without grad; on this CPU class
    bitsandbytes then repacks its layers and TRL's backward skips the base weights."""
    root, folder = tiny_text
    changes = {"quantization": "4bit"}
    ours = check.run_side(_spec(root, folder, "mmdpo", "m4", reference="precomputed", **changes))
    good = check.run_side(_spec(root, folder, "trl", "t4", **changes))
    bad = check.run_side(_spec(root, folder, "trl", "t4p", reference="precomputed", **changes))
    assert ours["inference_layout"][0] == 0 and ours["inference_layout"][1] > 0
    assert check.compare_sides(ours, good)["passed"]
    verdict = check.compare_sides(ours, bad)
    assert verdict["abs_diff"] <= check.LOSS_TOLERANCE
    assert not verdict["passed"]
    assert "TRL's gradient is wrong" in verdict["reason"]
