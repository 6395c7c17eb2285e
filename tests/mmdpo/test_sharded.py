"""FSDP and DeepSpeed ZeRO on two CPU processes: the checkpoints hold the full adapter, the run
matches one process, and a resume from a checkpoint is exact.

accelerate enables FSDP and DeepSpeed only where it finds a GPU-like device, so the launches go
through ``tests/mmdpo/sharded_on_cpu.py``, which lets accelerate choose them on CPU (gloo); the
shipped config files are used as they are (``fsdp.yaml`` also with ``--fsdp_version 2``). Each
launch takes ~30 s on two cores, so every test here is slow. DeepSpeed is not a dependency of
the project: its cases skip where it is not installed.
"""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from transformers import AutoModelForCausalLM

from mmdpo.cli import main
from tests.mmdpo.test_distributed import (
    REPO,
    adapter,
    assert_same_adapter,
    assert_same_curve,
    common_words,
    launch_two_processes,
    train_records,
    write_pairs,
)

CONFIGS = REPO / "mmdpo" / "configs" / "accelerate"
ON_CPU = "tests.mmdpo.sharded_on_cpu"
# The one-process run takes 4 pairs a step. DeepSpeed steps inside every backward, so its runs
# cannot accumulate (see deepspeed_zero2.yaml): 2 pairs x 2 processes; FSDP accumulates.
ACCUMULATE = ("train.batch_size=1", "train.grad_accum=2")
NO_ACCUMULATION = ("train.batch_size=2", "train.grad_accum=1")
CASES = {
    "fsdp1": ("fsdp.yaml", (), ACCUMULATE),
    "fsdp2": ("fsdp.yaml", ("--fsdp_version", "2"), ACCUMULATE),
    "deepspeed_zero2": ("deepspeed_zero2.yaml", (), NO_ACCUMULATION),
    "deepspeed_zero3": ("deepspeed_zero3.yaml", (), NO_ACCUMULATION),
}


@pytest.fixture(scope="module")
def one_process(tiny_llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    words = common_words(tiny_llama_dir, write_pairs(root / "pairs.jsonl", 16), steps=4)
    run = root / "one"
    argv = ["train", *words, "train.batch_size=4", "train.progress=false"]
    assert main([*argv, f"train.output_dir={run}"]) == 0
    return {"words": words, "run": run}


def launch(kind: str, words: list[str], output_dir, *extra: str) -> None:
    config, launch_args, batching = CASES[kind]
    launch_two_processes(
        [*extra, *words, *batching, "train.progress=false", f"train.output_dir={output_dir}"],
        config=CONFIGS / config,
        module=ON_CPU,
        launch_args=launch_args,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CASES))
def test_sharded_run_saves_full_adapter_and_resumes_exactly(
    kind, one_process, tiny_llama_dir, tmp_path
):
    if kind.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    words, one = one_process["words"], one_process["run"]
    run = tmp_path / "run"
    launch(kind, words, run)

    last = run / "checkpoints" / "step-000004"
    layout = json.loads((last / "sharding.json").read_text())
    assert layout == {
        "kind": kind,
        "world_size": 2,
        "optimizer": ["optimizer_rank_0.pt", "optimizer_rank_1.pt"],
    }, "the run must have been sharded as configured"
    assert not (last / "optimizer.pt").exists()
    # Same loss curve and, at both checkpoints, the same full adapter as one process (a
    # shard, or the main process's local weights, would differ in shape or value).
    assert_same_curve(one, run)
    for step in (2, 4):
        assert_same_adapter(adapter(one, step), adapter(run, step))
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), last)
    saved = adapter(run, 4)
    reloaded = get_peft_model_state_dict(loaded)
    assert reloaded.keys() == saved.keys()
    assert all(torch.equal(reloaded[key], saved[key]) for key in saved)

    # Interrupted after step 2, resumed by the same kind of launch: the same last two steps.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    shutil.copy(run / "metrics.jsonl", resumed / "metrics.jsonl")
    launch(kind, words, resumed, "--resume")
    assert [r["step"] for r in train_records(resumed)] == [1, 2, 3, 4]
    for before, after in zip(train_records(run), train_records(resumed), strict=True):
        assert before["loss"] == after["loss"], before["step"]
    a, b = adapter(run, 4), adapter(resumed, 4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
