"""Ctrl-C during `mmdpo train`, sent as a real SIGINT to a child process: the step finishes, a
checkpoint that verifies is saved, the command to resume is printed, and resuming works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmdpo.checkpoint import verify_checkpoint
from mmdpo.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def start_training(model_dir, tmp_path) -> tuple[subprocess.Popen, list[str], Path]:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "No."}
        for i in range(8)
    ]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = tmp_path / "run"
    args = [
        "train",
        f"model.name_or_path={model_dir}",
        f"data.train={pairs}",
        f"train.output_dir={run}",
        "model.dtype=float32",
        "train.max_steps=100000",  # never reached: the run ends by Ctrl-C
        "train.batch_size=2",
        "train.progress=false",
        "train.plots=false",
        "loss.name=dpo",
        "lora.r=4",
    ]
    child = subprocess.Popen(
        [sys.executable, "-m", "mmdpo", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child, args, run


def wait_for_steps(child: subprocess.Popen, run: Path, steps: int) -> None:
    """Until metrics.jsonl holds ``steps`` records (the loop is then past its set-up)."""
    deadline = time.monotonic() + 240
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"training ended early: {child.communicate()}")
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.05)
    child.kill()
    raise AssertionError("training did not reach its first steps in time")


@pytest.mark.slow  # a child process that imports torch and trains (~15-30 s on 2 busy cores)
def test_ctrl_c_finishes_the_step_saves_and_says_how_to_resume(tiny_llama_dir, tmp_path, capsys):
    child, args, run = start_training(tiny_llama_dir, tmp_path)
    wait_for_steps(child, run, 2)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "interrupt: finishing this step, then saving a checkpoint" in err
    assert "Traceback" not in err
    saved = sorted((run / "checkpoints").iterdir())
    assert len(saved) == 1 and verify_checkpoint(saved[0]) is None
    step = int(saved[0].name.split("-")[1])
    assert f"mmdpo train: interrupted after step {step} of 100000; saved {saved[0]}" in err
    assert err.rstrip().endswith(" --resume")
    assert "resume with: mmdpo train model.name_or_path=" in err
    # Records after the saved step (if any) are dropped on resume; the run goes on from it.
    longer = f"train.max_steps={step + 1}"
    resumed = [longer if a.startswith("train.max_steps=") else a for a in args] + ["--resume"]
    assert main(resumed) == 0
    assert f"resuming from {saved[0]} (step {step} of {step + 1})" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, step + 2))


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_no_half_checkpoint(tiny_llama_dir, tmp_path):
    child, _, run = start_training(tiny_llama_dir, tmp_path)
    wait_for_steps(child, run, 1)
    child.send_signal(signal.SIGINT)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err
    folders = list((run / "checkpoints").iterdir()) if (run / "checkpoints").exists() else []
    # Whatever the second signal cut short, nothing half-written is left that looks complete.
    assert all(f.name.startswith("step-") and "." not in f.name for f in folders), folders
    assert all(verify_checkpoint(f) is None for f in folders)
