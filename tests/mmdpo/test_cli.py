"""The `mmdpo` command: train end to end from files, data commands, clear user errors."""

import json

import pytest

from mmdpo.cli import main


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {
            "prompt": f"What is {i} plus {i}?",
            "chosen": f"It is {2 * i}.",
            "rejected": f"It is {2 * i + 1}.",
            "score_chosen": 8.0,
            "score_rejected": 3.0,
        }
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_from_a_yaml_config_with_overrides(tiny_llama_dir, pairs_file, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model:\n  name_or_path: {tiny_llama_dir}\n  dtype: float32\n"
        f"data:\n  train: {pairs_file}\n  format: trl\n"
        f"train:\n  output_dir: {tmp_path / 'run'}\n  max_steps: 2\n  progress: false\n"
    )
    code = main(["train", "--config", str(config), "train.batch_size=2", "lora.r=4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "final checkpoint:" in out and "step-000002" in out
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "adapter_model.safetensors").exists()


def test_train_with_a_task_applies_its_defaults(tiny_llama_dir, pairs_file, tmp_path):
    code = main(
        [
            "train",
            "text",
            f"model.name_or_path={tiny_llama_dir}",
            f"data.train={pairs_file}",
            "data.format=trl",
            f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=1",
            "train.batch_size=2",
            "train.grad_accum=1",
            "model.dtype=float32",
            "train.progress=false",
            "model.quantization=none",
            "model.gradient_checkpointing=false",
        ]
    )
    assert code == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "task: text" in saved


def test_user_errors_exit_2_without_traceback(tiny_llama_dir, pairs_file, tmp_path, capsys):
    code = main(
        [
            "train",
            f"model.name_or_path={tiny_llama_dir}",
            f"data.train={pairs_file}",
            "loss.name=nope",
            f"train.output_dir={tmp_path / 'r'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown loss 'nope'" in err and "Traceback" not in err
    code = main(["train", "train.lr=1"])
    assert code == 2 and "train.lr: unknown key" in capsys.readouterr().err
    code = main(
        [
            "train",
            f"model.name_or_path={tiny_llama_dir}",
            "data.train=missing.jsonl",
            f"train.output_dir={tmp_path / 'r'}",
        ]
    )
    assert code == 2 and "missing.jsonl" in capsys.readouterr().err


def test_bad_rows_stop_training_before_any_model_loads(pairs_file, tmp_path, capsys):
    with open(pairs_file, "a") as handle:
        handle.write('{"prompt": "x", "chosen": "same", "rejected": "same"}\n{broken\n')
    code = main(
        [
            "train",
            "model.name_or_path=/does/not/exist",
            f"data.train={pairs_file}",
            f"train.output_dir={tmp_path / 'r'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{pairs_file}:9: rejected: identical to chosen" in err
    assert f"{pairs_file}:10: json: malformed JSON" in err


def test_skip_invalid_writes_invalid_rows(tiny_llama_dir, pairs_file, tmp_path):
    with open(pairs_file, "a") as handle:
        handle.write('{"prompt": "x", "chosen": "", "rejected": "no"}\n')
    run = tmp_path / "run"
    code = main(
        [
            "train",
            f"model.name_or_path={tiny_llama_dir}",
            f"data.train={pairs_file}",
            f"train.output_dir={run}",
            "data.skip_invalid=true",
            "train.max_steps=1",
            "train.progress=false",
            "model.dtype=float32",
        ]
    )
    assert code == 0
    invalid = [json.loads(x) for x in (run / "invalid_rows.jsonl").read_text().splitlines()]
    assert len(invalid) == 1 and invalid[0]["line"] == 9
    assert "chosen: empty response" in invalid[0]["problems"][0]


def test_data_validate_and_inspect(pairs_file, capsys):
    assert main(["data", "validate", str(pairs_file), "--format", "trl"]) == 0
    assert "8 valid" in capsys.readouterr().out
    with open(pairs_file, "a") as handle:
        handle.write('{"prompt": "x", "chosen": "a", "rejected": "b", "score_chosen": "high"}\n')
    assert main(["data", "validate", str(pairs_file), "--format", "trl"]) == 1
    assert f"{pairs_file}:9: score_chosen: score is not a number" in capsys.readouterr().out
    assert main(["data", "inspect", str(pairs_file), "--format", "trl"]) == 0
    assert "8 samples" in capsys.readouterr().out
    assert main(["data", "validate", str(pairs_file), "--format", "nope"]) == 2
    assert "valid formats" in capsys.readouterr().err


def test_data_inspect_token_lengths(pairs_file, tiny_llama_dir, capsys):
    assert (
        main(
            ["data", "inspect", str(pairs_file), "--format", "trl", "--model", str(tiny_llama_dir)]
        )
        == 0
    )
    assert "token lengths under" in capsys.readouterr().out


def test_losses_lists_every_loss(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in ("uni_dpo", "dpo", "ipo", "hinge", "simpo", "orpo"):
        assert name in out


def test_package_level_train_loads_the_configured_data(tiny_llama_dir, pairs_file, tmp_path):
    import mmdpo
    from mmdpo.config import load_config

    config = load_config(
        None,
        [
            f"model.name_or_path={tiny_llama_dir}",
            f"data.train={pairs_file}",
            "data.format=trl",
            f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=1",
            "train.progress=false",
            "train.plots=false",
            "model.dtype=float32",
        ],
    )
    result = mmdpo.train(config)
    assert result.steps == 1 and result.final_checkpoint.name == "step-000001"
