"""The run folder: never silently damaged. A folder that holds a run is refused without
--resume; a damaged checkpoint (changed at the same size, truncated, a file missing) is never
used by resume, eval or export, and the message names it and the one used instead."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mmdpo.checkpoint import checkpoint_dir
from mmdpo.cli import main
from mmdpo.run_folder import RunFolder, RunFolderError, check_output_dir
from tests.fixtures import write_pairs


def train_args(model_dir, pairs, run, *extra):
    return [
        "train",
        f"model.name_or_path={model_dir}",
        f"data.train={pairs}",
        f"train.output_dir={run}",
        "model.dtype=float32",
        "train.batch_size=2",
        "train.progress=false",
        "train.plots=false",
        "lora.r=4",
        "lora.alpha=8",
        *extra,
    ]


@pytest.fixture(scope="module")
def two_checkpoint_run(tiny_llama_dir, tmp_path_factory):
    """A finished run with checkpoints at steps 1 and 2 (and its data file)."""
    root = tmp_path_factory.mktemp("two_checkpoints")
    pairs = write_pairs(root / "pairs.jsonl")
    run = root / "run"
    code = main(train_args(tiny_llama_dir, pairs, run, "train.max_steps=2", "train.save_every=1"))
    assert code == 0
    return run, pairs


@pytest.fixture
def run_copy(two_checkpoint_run, tmp_path):
    run, pairs = two_checkpoint_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, pairs


def damage(checkpoint, how):
    """Damage the adapter weights of a checkpoint after its save."""
    weights = checkpoint / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "same size":
        data[-3] ^= 0xFF  # inside the tensor data: the file still parses
        weights.write_bytes(bytes(data))
    elif how == "truncated":
        weights.write_bytes(bytes(data[:-16]))
    else:
        weights.unlink()


def test_training_into_a_folder_that_holds_a_run_is_refused(
    tiny_llama_dir, run_copy, capsys, monkeypatch
):
    run, pairs = run_copy
    before = (run / "metrics.jsonl").read_text()
    # Refused before any model loads: loading one would fail on this path.
    code = main(train_args("/no/such/model", pairs, run, "train.max_steps=3"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        f"mmdpo train: error: train.output_dir {run}: already holds a run (metrics.jsonl, "
        "checkpoints/); continue it with --resume, or choose another train.output_dir (or "
        "remove the folder) to start anew"
    )
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("how", ["same size", "truncated", "missing"])
def test_resume_skips_a_damaged_checkpoint_and_says_which_it_uses(
    tiny_llama_dir, run_copy, capsys, how
):
    run, pairs = run_copy
    damaged, good = checkpoint_dir(run, 2), checkpoint_dir(run, 1)
    damage(damaged, how)
    code = main(train_args(tiny_llama_dir, pairs, run, "train.max_steps=3", "--resume"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"checkpoint {damaged} is damaged (adapter_model.safetensors: " in captured.err
    assert f"using {good} instead" in captured.err
    assert f"resuming from {good} (step 1 of 3)" in captured.out
    steps = [r["step"] for r in RunFolder(run).metrics() if "loss" in r]
    assert steps == [1, 2, 3]  # the records after step 1 were replaced, not mixed


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("how", ["same size", "truncated", "missing"])
def test_export_skips_a_damaged_checkpoint(run_copy, tmp_path, capsys, how, merge):
    run, _ = run_copy
    damaged, good = checkpoint_dir(run, 2), checkpoint_dir(run, 1)
    damage(damaged, how)
    out = tmp_path / "export"
    args = ["export", str(run), "--out", str(out), "--dtype", "float32"]
    assert main([*args, "--merge" if merge else "--no-merge"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {damaged} is damaged" in err and f"using {good} instead" in err
    assert "step-000001" in (out / "README.md").read_text()
    if not merge:
        exported = load_file(out / "adapter_model.safetensors")
        saved = load_file(good / "adapter_model.safetensors")
        assert exported.keys() == saved.keys()
        assert all(torch.equal(exported[k], saved[k]) for k in saved)


def test_export_of_a_named_damaged_checkpoint_is_refused(run_copy, tmp_path, capsys):
    run, _ = run_copy
    damage(checkpoint_dir(run, 2), "same size")
    code = main(["export", str(run), "--out", str(tmp_path / "o"), "--checkpoint", "step-000002"])
    err = capsys.readouterr().err
    assert code == 2
    assert "step-000002: not a complete checkpoint that verifies (adapter_model" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("how", ["same size", "truncated", "missing"])
def test_eval_loads_the_newest_checkpoint_that_verifies(run_copy, capsys, how):
    from mmdpo.inference import InferenceError, InferenceModel, read_run

    run, _ = run_copy
    damaged, good = checkpoint_dir(run, 2), checkpoint_dir(run, 1)
    damage(damaged, how)
    loaded = InferenceModel.load(str(run), dtype="float32")  # crashed in safetensors before
    assert loaded.adapter == str(good)
    assert f"checkpoint {damaged} is damaged" in capsys.readouterr().err
    with pytest.raises(InferenceError, match="not a complete checkpoint that verifies"):
        read_run(damaged)
    damage(good, "same size")
    with pytest.raises(InferenceError, match="no complete checkpoint that verifies"):
        read_run(run)


def test_output_dir_that_is_a_file_or_under_a_file_is_refused(tiny_llama_dir, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for run, message in (
        (blocker, f"train.output_dir {blocker}: is a file, not a folder"),
        (
            blocker / "run",
            f"train.output_dir {blocker / 'run'}: {blocker} is a file, so no folder can be "
            "made under it",
        ),
    ):
        assert main(train_args(tiny_llama_dir, pairs, run)) == 2
        assert capsys.readouterr().err.strip() == f"mmdpo train: error: {message}"
    assert main(["export", str(tmp_path), "--out", str(blocker / "x")]) == 2
    with pytest.raises(RunFolderError, match="is a file"):
        check_output_dir(blocker, "--out")
    check_output_dir(tmp_path / "new" / "deeper", "--out")  # creatable: fine


def test_invalid_rows_have_one_writer_that_keeps_every_stage_and_split(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.record_invalid([{"line": 3}], stage="load", split="train") == 1
    assert folder.record_invalid([{"line": 7}], stage="load", split="eval") == 1
    assert folder.record_invalid([{"id": "p1"}], stage="tokenize", split="train") == 1
    rows = [json.loads(x) for x in folder.invalid_rows_file.read_text().splitlines()]
    assert [(r["stage"], r["split"]) for r in rows] == [
        ("load", "train"),
        ("load", "eval"),
        ("tokenize", "train"),
    ]
    # A second attempt replaces its own stage's rows, and an empty one clears them.
    folder.record_invalid([{"line": 4}], stage="load", split="train")
    folder.record_invalid([], stage="load", split="eval")
    folder.record_invalid([], stage="tokenize", split="train")
    rows = [json.loads(x) for x in folder.invalid_rows_file.read_text().splitlines()]
    assert rows == [{"line": 4, "stage": "load", "split": "train"}]
    folder.record_invalid([], stage="load", split="train")
    assert not folder.invalid_rows_file.exists()


def test_skipped_train_and_eval_rows_are_both_kept(tiny_llama_dir, tmp_path):
    train_file = write_pairs(tmp_path / "train.jsonl")
    eval_file = write_pairs(tmp_path / "eval.jsonl", n=4)
    for path in (train_file, eval_file):
        with open(path, "a") as handle:
            handle.write('{"prompt": "x", "chosen": "", "rejected": "no"}\n')
    run = tmp_path / "run"
    args = train_args(tiny_llama_dir, train_file, run, "train.max_steps=1")
    assert main([*args, f"data.eval={eval_file}", "data.skip_invalid=true"]) == 0
    rows = [json.loads(x) for x in (run / "invalid_rows.jsonl").read_text().splitlines()]
    assert [(r["split"], r["file"], r["line"]) for r in rows] == [
        ("train", str(train_file), 9),
        ("eval", str(eval_file), 5),
    ]
