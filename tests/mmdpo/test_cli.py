"""The `mmdpo` command: train end to end from files, data commands, clear user errors."""

import json

import pytest

from mmdpo.cli import main
from tests.fixtures import write_pairs


@pytest.fixture
def pairs_file(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl")


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


def _scored_file(path, scores):
    rows = [
        {"prompt": f"{path.stem} {i}?", "chosen": f"yes {i}", "rejected": f"no {i}",
         "score_chosen": chosen, "score_rejected": rejected}
        for i, (chosen, rejected) in enumerate(scores)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_files_train_in_two_groups_printed_before_training(tiny_llama_dir, tmp_path, capsys):
    """A judge's 0-10 and a reward model's 0-100 file, no `source`: two groups, shown first."""
    judge = _scored_file(tmp_path / "judge.jsonl", [(8, 3), (9, 5), (7, 2), (6, 4)])
    reward = _scored_file(tmp_path / "reward_model.jsonl", [(80, 30), (95, 50), (70, 20)])
    held_out = _scored_file(tmp_path / "heldout.jsonl", [(9, 1), (8, 2)])
    code = main(
        [
            "train",
            f"model.name_or_path={tiny_llama_dir}",
            f"data.train=[{judge}, {reward}]",
            f"data.eval=[{{path: {held_out}, source: judge}}]",
            "data.calibration=zscore",
            "loss.kwargs.tau_good=auto",
            f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=1",
            "train.batch_size=2",
            "train.progress=false",
            "model.dtype=float32",
            "lora.r=4",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    head = out.index("score groups (calibration zscore): pairs, mean and std of the raw scores, "
                     "auto tau_good = median chosen score on the zscore scale "
                     "(used only with tau_good: auto)")  # fmt: skip
    assert out[head + 1].startswith("  text/judge: 4 pairs, mean 5.5, std 2.291, auto tau_good ")
    assert out[head + 2].startswith("  text/reward_model: 3 pairs, mean 57.5, std 26.73, ")
    assert head < next(i for i, line in enumerate(out) if line.startswith("run folder:"))
    saved = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert [(g["source"], g["pairs"]) for g in saved["groups"]] == [
        ("judge", 4),
        ("reward_model", 3),
    ]


def test_held_out_file_without_source_among_several_groups_is_refused(tmp_path, capsys):
    judge = _scored_file(tmp_path / "judge.jsonl", [(8, 3), (9, 5)])
    reward = _scored_file(tmp_path / "reward_model.jsonl", [(80, 30), (95, 50)])
    held_out = _scored_file(tmp_path / "heldout.jsonl", [(9, 1)])
    args = [
        "train",
        "model.name_or_path=/nonexistent/model",  # refused before any model is looked at
        f"data.train=[{judge}, {reward}]",
        f"data.eval={held_out}",
        "data.calibration=zscore",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "heldout.jsonl: held-out text samples get the source 'heldout'" in err
    assert "several text sources (judge, reward_model)" in err


def test_data_inspect_shows_the_groups_of_several_files(tmp_path, capsys):
    judge = _scored_file(tmp_path / "judge.jsonl", [(8, 3), (9, 5), (7, 2), (6, 4)])
    reward = _scored_file(tmp_path / "reward_model.jsonl", [(80, 30), (95, 50), (70, 20)])
    assert main(["data", "inspect", str(judge), str(reward), "--format", "trl"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  text/judge: 4 pairs, mean 5.5, std 2.291, auto tau_good 7.5" in out
    assert "  text/reward_model: 3 pairs, mean 57.5, std 26.73, auto tau_good 80" in out


def test_no_preference_and_overflowing_scores_are_refused_with_file_and_line(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 40)).save(tmp_path / "a.png")
    (tmp_path / "a_copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    rows = [
        {"prompt": "Q?", "chosen": "yes", "rejected": "no", "score_chosen": 1e308},
        {"prompt": "Circle?", "chosen": "Yes.", "rejected": "Yes.", "images": ["a.png"],
         "rejected_images": ["a_copy.png"]},
    ]  # fmt: skip
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = [
        f"{path}:1: score_chosen: score too large in magnitude (1e+308)",
        f"{path}:2: rejected: identical to chosen, and rejected_images are the same images",
    ]
    assert main(["data", "validate", str(path), "--format", "trl"]) == 1
    out = capsys.readouterr().out
    assert all(line in out for line in expected), out
    args = ["train", "model.name_or_path=/does/not/exist", f"data.train={path}"]
    assert main([*args, f"train.output_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert all(line in err for line in expected), err


def test_bad_loss_kwargs_stop_before_the_run_folder_is_touched(pairs_file, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "model.name_or_path=/no/such/model",  # nothing may load: this would fail differently
        f"data.train={pairs_file}",
        f"train.output_dir={run}",
    ]
    assert main([*args, "loss.kwargs.beta=high"]) == 2
    assert capsys.readouterr().err == (
        "mmdpo train: error: loss.kwargs.beta: expected a positive number, got 'high'\n"
    )
    assert main([*args, "loss.name=dpo", "loss.kwargs.label_smoothing=0.7"]) == 2
    assert "loss.kwargs.label_smoothing: expected a number in [0, 0.5), got 0.7" in (
        capsys.readouterr().err
    )
    assert not run.exists()


def test_a_missing_tracker_is_refused_before_any_model_loads(pairs_file, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "model.name_or_path=/no/such/model",
            f"data.train={pairs_file}",
            f"train.output_dir={run}",
            "train.trackers=[jsonl, wandb]",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err == (
        "mmdpo train: error: train.trackers: wandb is not installed (pip install wandb; set "
        "WANDB_MODE=offline to log without a network), or remove it from train.trackers\n"
    )
    assert not (run / "config.yaml").exists()


def test_a_model_path_that_does_not_exist_is_one_line(pairs_file, tmp_path, capsys):
    code = main(
        [
            "train",
            "model.name_or_path=./no/such/model",
            f"data.train={pairs_file}",
            f"train.output_dir={tmp_path / 'run'}",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err == (
        "mmdpo train: error: model.name_or_path ./no/such/model: no such folder\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["eval", "gsm8k", "--model", "runs/not-there"],
            "--model runs/not-there: no such folder, and not in the local hub cache "
            "(offline: HF_HUB_OFFLINE is set)",
        ),
        (["eval", "gsm8k", "--model", "/not/there"], "--model /not/there: no such folder"),
        (
            ["eval", "gsm8k", "--predictions", "nope.jsonl"],
            "--predictions nope.jsonl: no such file",
        ),
    ],
)
def test_eval_mistakes_are_one_line_before_any_model_loads(args, message, tmp_path, capsys):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"mmdpo eval: error: {message}\n"


def test_eval_out_under_a_file_is_refused(pairs_file, tmp_path, capsys):
    out = pairs_file / "results"
    assert main(["eval", "gsm8k", "--predictions", str(pairs_file), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"mmdpo eval: error: --out {out}: {pairs_file} is a file, so no folder can be made "
        "under it\n"
    )


def test_columns_without_equals_is_one_line(pairs_file, capsys):
    args = ["data", "validate", str(pairs_file), "--format", "columns", "--columns", "prompt"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "mmdpo data: error: --columns 'prompt': expected FIELD=COLUMN, e.g. --columns "
        "prompt=question chosen=good rejected=bad\n"
    )


def test_package_level_train_does_not_import_the_cli(pairs_file, tmp_path):
    """``mmdpo.train(config)`` loads config.data through the application layer (tasks.run),
    never through the CLI; the engine call itself is stubbed to keep this fast."""
    import subprocess
    import sys

    run = tmp_path / "run"
    script = f"""
import sys, mmdpo, tasks.run
from mmdpo.config import load_config
seen = {{}}
def engine(config, train, held_out, resume):
    seen.update(n=len(train))
    return "the engine's result"
tasks.run.train_engine = engine
config = load_config(None, ["model.name_or_path=m", "data.train={pairs_file}",
                            "data.format=trl", "train.output_dir={run}"])
assert mmdpo.train(config) == "the engine's result"
assert seen == {{"n": 8}}, seen
assert "mmdpo.cli" not in sys.modules, "the CLI was imported"
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
