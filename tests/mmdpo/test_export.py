"""``mmdpo export``: merged or adapter-only folders from a tiny run, their card, clear errors."""

import argparse
import random

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from mmdpo.checkpoint import latest_checkpoint
from mmdpo.config import load_config
from mmdpo.export import ExportError, add_arguments, export_run, run
from mmdpo.trainer import train
from mmdpo.types import PreferenceSample

LOGIT_TOLERANCE = 1e-4


def pairs(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        out.append(
            PreferenceSample(
                id=f"p{seed}-{i}",
                prompt=f"What is {a} plus {b}?",
                chosen=f"The answer is {a + b}.",
                rejected=f"The answer is {a + b + 1}.",
                score_chosen=rng.uniform(5, 9),
                score_rejected=rng.uniform(1, 5),
                source="arith",
            )
        )
    return out


def train_tiny_run(model_dir, run_dir, *extra):
    config = load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            "data.train=in-memory",
            f"train.output_dir={run_dir}",
            "model.dtype=float32",
            "train.batch_size=2",
            "train.max_steps=2",
            "train.learning_rate=2e-2",
            "train.warmup_ratio=0",
            "train.progress=false",
            "train.plots=false",
            "lora.r=4",
            "lora.alpha=8",
            "lora.dropout=0.0",
            "loss.kwargs.beta=3.5",
            *extra,
        ],
    )
    return train(config, pairs(8), pairs(4, seed=1))


@pytest.fixture(scope="module")
def tiny_run(tiny_llama_dir, tmp_path_factory):
    return train_tiny_run(tiny_llama_dir, tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def tiny_4bit_run(tiny_llama_dir, tmp_path_factory):
    return train_tiny_run(
        tiny_llama_dir, tmp_path_factory.mktemp("export4") / "run", "model.quantization=4bit"
    )


def some_input_ids(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tokenizer(["What is 3 plus 4? The answer is 7."], return_tensors="pt").input_ids


@torch.no_grad()
def full_precision_logits_with_adapter(model_dir, checkpoint, input_ids):
    """The reference: the float32 base with the checkpoint's adapter on, not merged."""
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(checkpoint)).eval()
    with_adapter = model(input_ids=input_ids).logits
    with model.disable_adapter():
        without = model(input_ids=input_ids).logits
    return with_adapter, without


@pytest.mark.parametrize("run_name", ["tiny_run", "tiny_4bit_run"])
def test_merged_export_equals_base_plus_adapter(run_name, request, tiny_llama_dir, tmp_path):
    """A 4-bit run exports the full-precision base + merged adapter, compared as such."""
    result = request.getfixturevalue(run_name)
    out = export_run(result.run_dir, tmp_path / "merged", dtype="float32")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".merged.*")), "the temporary folder was left behind"

    input_ids = some_input_ids(tiny_llama_dir)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        merged_logits = merged(input_ids=input_ids).logits
    expected, base_only = full_precision_logits_with_adapter(
        tiny_llama_dir, result.final_checkpoint, input_ids
    )
    assert (expected - base_only).abs().max() > 10 * LOGIT_TOLERANCE, "the adapter is a no-op"
    assert torch.allclose(merged_logits, expected, atol=LOGIT_TOLERANCE, rtol=0)


def test_model_card_records_the_run(tiny_run, tmp_path):
    out = export_run(tiny_run.run_dir, tmp_path / "merged")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ")
    assert "- loss: `uni_dpo`" in card and "beta=3.5" in card and "tau_ref=" in card
    assert "mmdpo 0." in card and "step-000002" in card and "(2 optimizer steps)" in card
    assert "| loss |" in card and "| eval/rewards/accuracies |" in card
    assert "- train: `in-memory`" in card
    assert 'AutoModelForCausalLM.from_pretrained("path/to/this/folder")' in card
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert next(loaded.parameters()).dtype == torch.bfloat16  # the default export dtype


def test_adapter_only_export(tiny_run, tiny_llama_dir, tmp_path):
    out = export_run(tiny_run.run_dir, tmp_path / "adapter", merge=False)
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "manifest.json", "model.safetensors"}
    assert "PeftModel.from_pretrained(base" in (out / "README.md").read_text()
    input_ids = some_input_ids(tiny_llama_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = PeftModel.from_pretrained(base, str(out)).eval()(input_ids=input_ids).logits
    expected, _ = full_precision_logits_with_adapter(
        tiny_llama_dir, latest_checkpoint(tiny_run.run_dir), input_ids
    )
    assert torch.equal(logits, expected)


def test_clear_errors(tiny_run, tmp_path, capsys):
    with pytest.raises(ExportError, match="no such run folder"):
        export_run(tmp_path / "nope", tmp_path / "out")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    (empty_run / "config.yaml").write_text((tiny_run.run_dir / "config.yaml").read_text())
    with pytest.raises(ExportError, match="no complete checkpoint"):
        export_run(empty_run, tmp_path / "out")
    with pytest.raises(ExportError, match="not a complete checkpoint"):
        export_run(tiny_run.run_dir, tmp_path / "out", checkpoint="step-000099")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    with pytest.raises(ExportError, match="already exists"):
        export_run(tiny_run.run_dir, taken)
    assert not (tmp_path / "out").exists()

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([str(tmp_path / "nope"), "--out", str(tmp_path / "o")])) == 2
    assert "mmdpo export: error:" in capsys.readouterr().err
    args = parser.parse_args(
        [
            str(tiny_run.run_dir),
            "--out",
            str(tmp_path / "o"),
            "--no-merge",
            "--checkpoint",
            "step-000002",
        ]
    )
    assert args.merge is False and run(args) == 0
    assert (tmp_path / "o" / "adapter_model.safetensors").is_file()
