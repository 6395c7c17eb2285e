"""Two processes (gloo on CPU) against one: same global batch, same loss curve, same adapter.

The two-process runs go through the shipped ``mmdpo/configs/accelerate/ddp.yaml`` and
``accelerate launch``; with no GPU visible accelerate starts the processes with torchrun and the
engine's Accelerator joins them over gloo. Each launch takes ~30-45 s on two CPU cores.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmdpo
from mmdpo.cli import main

REPO = Path(mmdpo.__file__).resolve().parent.parent
DDP_CONFIG = REPO / "mmdpo" / "configs" / "accelerate" / "ddp.yaml"
LAUNCH_TIMEOUT_S = 240
LOSS_TOLERANCE = 1e-5
# Adam divides by sqrt(v): where a gradient is still tiny (lora_A in the first steps, while
# lora_B is near zero) float-order noise is scaled up to ~1e-5 of the learning rate.
WEIGHT_TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(
    words: list[str],
    config: Path = DDP_CONFIG,
    module: str = "mmdpo.cli",
    launch_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file ddp.yaml --num_processes 2 -m mmdpo.cli train ...``.

    ``config``, ``module`` and ``launch_args`` (flags before ``-m``) change those parts.
    """
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # CPU and gloo even where GPUs exist
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
        *launch_args,
        "-m",
        module,
        "train",
        *words,
    ]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    assert done.returncode == 0, f"launch failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def write_pairs(path: Path, n: int) -> Path:
    rows = [
        {
            "prompt": f"What is {i} plus {i + 1}?",
            "chosen": f"It is {2 * i + 1}.",
            "rejected": f"It is {2 * i + 2} or so.",
            "score_chosen": 6.0 + i % 3,
            "score_rejected": 2.0 + i % 2,
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def common_words(model_dir: Path, data: Path, steps: int) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"data.train={data}",
        "data.format=trl",
        "model.dtype=float32",
        f"train.max_steps={steps}",
        "train.learning_rate=5e-3",
        "train.warmup_ratio=0",
        "train.seed=7",
        "train.save_every=2",
        "train.keep_last=5",
        "lora.r=4",
        "lora.alpha=8",
        "lora.dropout=0.0",
    ]


def train_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r]


def adapter(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:06d}" / "adapter_model.safetensors"))


def assert_same_curve(one: Path, two: Path) -> None:
    a, b = train_records(one), train_records(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb["pairs"] == ra["pairs"], "the metrics must cover the global batch"
        assert abs(ra["loss"] - rb["loss"]) < LOSS_TOLERANCE, (ra["step"], ra["loss"], rb["loss"])
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)


def assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.allclose(a[key], b[key], atol=WEIGHT_TOLERANCE, rtol=0), key


def files_under(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def text_runs(tiny_llama_dir, tmp_path_factory):
    """One process with batch 4 vs two processes with batch 1 x grad_accum 2: 4 pairs a step.

    The second run exercises the micro-batch slicing of BatchOrder, ``no_sync`` during
    accumulation and the metrics gather at once.
    """
    root = tmp_path_factory.mktemp("distributed")
    data = write_pairs(root / "pairs.jsonl", 16)
    words = common_words(tiny_llama_dir, data, steps=4)
    one, two = root / "one", root / "two"
    assert (
        main(
            [
                "train",
                *words,
                "train.batch_size=4",
                "train.progress=false",
                f"train.output_dir={one}",
            ]
        )
        == 0
    )
    launched = launch_two_processes(
        [
            *words,
            "train.batch_size=1",
            "train.grad_accum=2",
            "train.progress=true",
            f"train.output_dir={two}",
        ]
    )
    return {"root": root, "words": words, "one": one, "two": two, "launched": launched}


def test_two_processes_match_one_process(text_runs):
    one, two = text_runs["one"], text_runs["two"]
    assert_same_curve(one, two)
    assert [r["pairs"] for r in train_records(two)] == [4.0] * 4
    assert_same_adapter(adapter(one, 4), adapter(two, 4))
    assert_same_adapter(adapter(one, 2), adapter(two, 2))


def test_only_the_main_process_writes(text_runs):
    one, two = text_runs["one"], text_runs["two"]
    # The same files, plus the second process's RNG state in each checkpoint (by design).
    extra = {f"checkpoints/step-{s:06d}/rng_state_1.pt" for s in (2, 4)}
    assert files_under(two) == files_under(one) | extra
    steps = [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], "every step logged exactly once"
    manifest = json.loads((two / "checkpoints" / "step-000004" / "manifest.json").read_text())
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= set(manifest["files"])


def test_progress_bars_show_once(text_runs):
    renders = text_runs["launched"].stderr.replace("\r", "\n").splitlines()
    starts = [line for line in renders if "0%|" in line and "| 0/" in line]
    labels = [line.split(":")[0] for line in starts]
    assert {"tokenizing train", "train"} <= set(labels), starts
    assert len(labels) == len(set(labels)), f"a bar shows once per process: {labels}"


@pytest.mark.slow
def test_resume_under_two_processes_is_exact(text_runs):
    """Interrupted after the step-2 checkpoint, resumed with two processes: same last steps."""
    root, two = text_runs["root"], text_runs["two"]
    resumed = root / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(two / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    shutil.copy(two / "metrics.jsonl", resumed / "metrics.jsonl")
    launch_two_processes(
        [
            "--resume",
            *text_runs["words"],
            "train.batch_size=1",
            "train.grad_accum=2",
            "train.progress=false",
            f"train.output_dir={resumed}",
        ]
    )
    assert [r["step"] for r in train_records(resumed)] == [1, 2, 3, 4]
    for ra, rb in zip(train_records(two), train_records(resumed), strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-7)
    a, b = adapter(two, 4), adapter(resumed, 4)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-7, rtol=0), key


@pytest.mark.slow
def test_vision_pairs_under_two_processes(tiny_vlm_dir, tmp_path):
    """Qwen2-VL: images encoded once, on the module inside the DDP wrapper; projector synced."""
    from mmdpo.tiny import random_image

    rows = []
    for i in range(4):
        image = tmp_path / f"image{i}.png"
        random_image(i).save(image)
        rows.append(
            {
                "prompt": "What shapes are there?",
                "chosen": f"Some shapes {i}.",
                "rejected": "A cat.",
                "images": [str(image)],
                "score_chosen": 7.0,
                "score_rejected": 2.0,
            }
        )
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    words = [*common_words(tiny_vlm_dir("qwen2_vl"), data, steps=2), "train.progress=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *words, "train.batch_size=2", f"train.output_dir={one}"]) == 0
    launch_two_processes([*words, "train.batch_size=1", f"train.output_dir={two}"])
    assert_same_curve(one, two)
    a, b = adapter(one, 2), adapter(two, 2)
    assert any("visual.merger" in key for key in a), "the projector's LoRA should train"
    assert_same_adapter(a, b)
