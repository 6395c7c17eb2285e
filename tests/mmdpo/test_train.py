"""The training engine end to end on tiny models: references, quantization, resume, bad steps."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from mmdpo.checkpoint import latest_checkpoint
from mmdpo.metrics_log import read_metrics
from mmdpo.trainer import TrainingError, train
from mmdpo.types import PreferenceSample
from tests.fixtures import arithmetic_pairs, make_config, tensorboard_scalars


def adapter_weights(checkpoint):
    return load_file(str(checkpoint / "adapter_model.safetensors"))


def test_uni_dpo_run_writes_a_complete_run_folder(tiny_llama_dir, tmp_path):
    config = make_config(tiny_llama_dir, tmp_path / "run", "train.eval_every=2", "train.plots=true")
    result = train(config, arithmetic_pairs(12), arithmetic_pairs(4, seed=1, prefix="e"))
    run = tmp_path / "run"
    assert result.steps == 3 and result.final_checkpoint == latest_checkpoint(run)
    for name in ("config.yaml", "calibration.json", "metrics.jsonl", "plots/loss.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3]
    assert {"weights/w_qual_mean", "weights/w_perf_mean", "weights/ess", "lr"} <= set(
        train_records[0]
    )
    assert any("eval/rewards/accuracies" in r for r in records)
    assert "eval/spearman_score_reward" in result.eval_metrics

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, result.final_checkpoint)
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values()), "LoRA B stayed zero"
    merged_base = model.get_base_model().state_dict()
    for key, value in reference.items():
        key_in_peft = key.replace(".weight", ".base_layer.weight")
        weight = merged_base.get(key_in_peft, merged_base.get(key))
        assert torch.equal(weight, value), f"base weight {key} changed"


def test_precomputed_reference_equals_adapter_off(tiny_llama_dir, tmp_path):
    from mmdpo.data.collate import PreferenceCollator
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.forward import concatenated_forward
    from mmdpo.losses import get_loss
    from mmdpo.reference import (
        ReferenceModel,
        adapter_disabled,
        build_reference,
        precompute_reference,
    )
    from mmdpo.setup import load_model_for_training, load_processing

    config = make_config(tiny_llama_dir, tmp_path / "run", "reference.mode=precomputed")
    processing, _ = load_processing(config)
    transform = PairTransform(processing, TransformSettings(128))
    pairs = [transform(s) for s in arithmetic_pairs(4)]
    collate = PreferenceCollator(processing.pad_token_id)
    model = load_model_for_training(config)
    with torch.no_grad():  # a non-zero adapter, so adapter_off differs from the policy
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)

    class Acc:
        device = torch.device("cpu")
        is_main_process = True

        @staticmethod
        def wait_for_everyone():
            return None

        @staticmethod
        def autocast():
            import contextlib

            return contextlib.nullcontext()

    spec = get_loss("uni_dpo")
    precomputed = precompute_reference(config, spec, model, pairs, collate, tmp_path, Acc)
    cached = build_reference(config, spec, model, Acc, precomputed)
    batch = collate(pairs)
    live = ReferenceModel("adapter_off", policy=model).logps(batch)
    from_cache = cached.logps(batch)
    assert torch.allclose(live.chosen_sum, from_cache.chosen_sum, atol=1e-5)
    assert torch.allclose(live.rejected_sum, from_cache.rejected_sum, atol=1e-5)
    with torch.no_grad():
        policy = concatenated_forward(model, batch)
        with adapter_disabled(model):
            base = concatenated_forward(model, batch)
    assert not torch.allclose(policy.chosen_sum, base.chosen_sum)
    assert torch.allclose(base.chosen_sum, from_cache.chosen_sum, atol=1e-5)


@pytest.mark.parametrize("reference", ["precomputed", "model"])
def test_other_reference_modes_train(tiny_llama_dir, tmp_path, reference):
    config = make_config(tiny_llama_dir, tmp_path / "run", f"reference.mode={reference}")
    result = train(config, arithmetic_pairs(8))
    assert result.steps == 3 and result.final_checkpoint is not None
    if reference == "precomputed":
        assert (tmp_path / "run" / "reference_cache" / "reference_logps.safetensors").is_file()


def test_reference_free_loss(tiny_llama_dir, tmp_path):
    config = make_config(tiny_llama_dir, tmp_path / "run", "loss.name=simpo", "reference.mode=none")
    assert train(config, arithmetic_pairs(8)).steps == 3


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_lora_trains(tiny_llama_dir, tmp_path, quantization):
    config = make_config(
        tiny_llama_dir, tmp_path / "run", f"model.quantization={quantization}", "train.max_steps=2"
    )
    result = train(config, arithmetic_pairs(8))
    weights = adapter_weights(result.final_checkpoint)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())


def test_resume_is_exact(tiny_llama_dir, tmp_path):
    """4 steps straight vs. 2 steps, a fresh process state, --resume, 2 more: same weights."""
    extra = ("train.max_steps=4", "train.save_every=2", "train.keep_last=5", "lora.dropout=0.1")
    pairs = arithmetic_pairs(16)
    full = train(make_config(tiny_llama_dir, tmp_path / "full", *extra), pairs)

    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "step-000002",
        interrupted / "checkpoints" / "step-000002",
    )
    torch.manual_seed(1234)  # scramble the RNG: resume must restore it
    random.seed(99)
    resumed = train(make_config(tiny_llama_dir, interrupted, *extra), pairs, resume=True)
    a, b = adapter_weights(full.final_checkpoint), adapter_weights(resumed.final_checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_without_checkpoint_is_an_error(tiny_llama_dir, tmp_path):
    config = make_config(tiny_llama_dir, tmp_path / "empty")
    with pytest.raises(TrainingError, match="no complete checkpoint"):
        train(config, arithmetic_pairs(8), resume=True)


def test_nan_steps_are_skipped_then_stop_the_run(tiny_llama_dir, tmp_path, monkeypatch):
    import mmdpo.objective as objective

    original = objective.compute_objective
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2:  # steps 1-2 fine (checkpoint at 2), then NaN forever
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr("mmdpo.trainer.compute_objective", poisoned)
    config = make_config(
        tiny_llama_dir,
        tmp_path / "run",
        "train.max_steps=8",
        "train.save_every=2",
        "train.max_bad_steps=2",
    )
    with pytest.raises(TrainingError, match="2 steps in a row"):
        train(config, arithmetic_pairs(16))
    assert latest_checkpoint(tmp_path / "run").name == "step-000002"
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "skipped" in r] == [3, 4]


def test_vision_data_with_text_model_is_refused_before_loading(tiny_llama_dir, tmp_path):
    from mmdpo.setup import SetupError

    sample = PreferenceSample(
        id="v", prompt="What?", chosen="A", rejected="B", images=["x.png"], modality="vision"
    )
    with pytest.raises(SetupError, match="text-only model"):
        train(make_config(tiny_llama_dir, tmp_path / "run"), [sample])


def test_precomputed_with_reference_free_loss_is_refused(tiny_llama_dir, tmp_path):
    from mmdpo.setup import SetupError

    config = make_config(
        tiny_llama_dir, tmp_path / "run", "loss.name=simpo", "reference.mode=precomputed"
    )
    with pytest.raises(SetupError, match="reference-free"):
        train(config, arithmetic_pairs(4))


@pytest.mark.parametrize("reference", ["adapter_off", "precomputed"])
def test_vision_training_with_images(tiny_vlm_dir, tmp_path, reference):
    from mmdpo.tiny import random_image

    samples = [
        PreferenceSample(
            id=f"v{i}",
            prompt="What shapes are there?",
            chosen="Some shapes.",
            rejected="A cat.",
            images=[random_image(i)],
            score_chosen=7.0,
            score_rejected=2.0,
            modality="vision",
        )
        for i in range(4)
    ]
    config = make_config(
        tiny_vlm_dir("qwen2_vl"),
        tmp_path / "run",
        "train.max_steps=2",
        f"reference.mode={reference}",
    )
    result = train(config, samples)
    weights = adapter_weights(result.final_checkpoint)
    # The projector (Qwen2-VL's visual.merger) trains by default; the tower's blocks never do.
    assert not any("visual.blocks" in k for k in weights), "LoRA reached the frozen vision tower"
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)


def test_repeated_ids_across_train_and_eval_are_refused(tiny_llama_dir, tmp_path):
    train_pairs, held_out = arithmetic_pairs(8), arithmetic_pairs(2)  # both have p0, p1
    with pytest.raises(TrainingError, match="occur more than once"):
        train(make_config(tiny_llama_dir, tmp_path / "run"), train_pairs, held_out)


@pytest.mark.parametrize("optimizer", ["adamw_8bit", "paged_adamw_8bit"])
def test_8bit_optimizers_train_and_resume_exactly(tiny_llama_dir, tmp_path, optimizer):
    """bitsandbytes' AdamW8bit and PagedAdamW8bit: uint8 moments, exact resume from optimizer.pt.

    bitsandbytes keeps 32-bit moments for tensors under 4096 elements; with lora.r=64 (hidden
    size 64) all LoRA matrices but k_proj's and v_proj's B (32 x 64) take the 8-bit path.
    Without CUDA the paged optimizer warns and runs unpaged (bitsandbytes 0.50).
    """
    import shutil
    import warnings

    extra = (
        f"train.optimizer={optimizer}",
        "lora.r=64",
        "lora.alpha=64",
        "train.max_steps=4",
        "train.save_every=2",
        "train.keep_last=5",
    )
    pairs = arithmetic_pairs(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = train(make_config(tiny_llama_dir, tmp_path / "full", *extra), pairs)
    paged_warning = any("Paged optimizers are not supported" in str(w.message) for w in caught)
    assert paged_warning == (optimizer.startswith("paged") and not torch.cuda.is_available())

    state = torch.load(full.final_checkpoint / "optimizer.pt", weights_only=True)["state"]
    assert len(state) == 28
    moments = [entry["__bnb_optimizer_quant_state__"] for entry in state.values()]
    for m in moments:
        expected = torch.uint8 if m["state1"].numel() >= 4096 else torch.float32
        assert m["state1"].dtype == m["state2"].dtype == expected
    assert sum(m["state1"].dtype == torch.uint8 for m in moments) == 24
    weights = adapter_weights(full.final_checkpoint)
    assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)

    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints").mkdir(parents=True)
    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "step-000002",
        interrupted / "checkpoints" / "step-000002",
    )
    torch.manual_seed(1234)
    resumed = train(make_config(tiny_llama_dir, interrupted, *extra), pairs, resume=True)
    a, b = weights, adapter_weights(resumed.final_checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_image_text_model_under_fsdp_is_refused_before_tokenizing(tiny_vlm_dir, tmp_path):
    """The engine encodes images outside the wrapped forward, which FSDP cannot serve yet."""
    from types import SimpleNamespace

    from mmdpo.config import ConfigError
    from mmdpo.trainer import _prepare_data

    config = make_config(tiny_vlm_dir("qwen2_vl"), tmp_path / "run")
    fsdp = SimpleNamespace(is_main_process=True, distributed_type="FSDP")
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="do not run under FSDP yet.*DeepSpeed ZeRO-3"):
        _prepare_data(config, fsdp, tmp_path / "run", None, arithmetic_pairs(2), [])
    # The same data prepares under DDP ("MULTI_GPU"): only FSDP is refused.
    ddp = SimpleNamespace(is_main_process=True, distributed_type="MULTI_GPU")
    assert (
        len(_prepare_data(config, ddp, tmp_path / "run", None, arithmetic_pairs(2), []).train_pairs)
        == 2
    )


def test_a_tensorboard_only_run_writes_event_files_metrics_and_plots(tiny_llama_dir, tmp_path):
    """Without "jsonl" in train.trackers metrics.jsonl is still written (resume, export and
    the plots read it); tensorboard's own reader finds every logged step."""
    run = tmp_path / "run"
    config = make_config(tiny_llama_dir, run, "train.trackers=[tensorboard]", "train.plots=true")
    result = train(config, arithmetic_pairs(8), arithmetic_pairs(4, seed=1, prefix="e"))
    logged = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    scalars = tensorboard_scalars(run / "tensorboard")
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3]
    assert [value for _, value in scalars["loss"]] == pytest.approx([r["loss"] for r in logged])
    assert scalars["eval/rewards/accuracies"][0][0] == 3
    assert (run / "plots" / "loss.png").is_file() and result.steps == 3


def test_a_failing_plot_never_fails_a_finished_run(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no canvas")

    monkeypatch.setattr("mmdpo.trainer.plot_metrics", broken)
    config = make_config(tiny_llama_dir, tmp_path / "run", "train.max_steps=1", "train.plots=true")
    result = train(config, arithmetic_pairs(4))
    assert result.final_checkpoint.name == "step-000001"
    assert "plots: not written (RuntimeError: no canvas)" in capsys.readouterr().out
