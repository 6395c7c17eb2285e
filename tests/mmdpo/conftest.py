"""Run folders for the report tests: one real tiny run, and a collection built from copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.fixtures import arithmetic_pairs, make_config


@pytest.fixture(scope="session")
def report_run(tmp_path_factory, tiny_llama_dir) -> Path:
    """A finished Uni-DPO run on the tiny Llama: held-out pairs evaluated every 2 steps,
    2 generated samples, the report written at the end. Do not modify it (copy it)."""
    from mmdpo.trainer import train

    run = tmp_path_factory.mktemp("report") / "run"
    config = make_config(
        tiny_llama_dir, run, "train.max_steps=4", "train.eval_every=2", "train.samples=2"
    )
    train(config, arithmetic_pairs(12), arithmetic_pairs(4, seed=1, prefix="e"))
    return run


def save_eval(folder: Path, label: str, data_file: Path, scores: list[float], run: str | None):
    """A POPE-like result as ``mmdpo eval --out folder/eval/<label>`` saves it."""
    from eval.results import EvalResult

    records = [
        {
            "id": f"q{i}",
            "prompt": f"Is there a square in image {i}?",
            "image": f"scene{i}.png",
            "response": "Yes." if score else "No.",
            "label": "yes",
            "score": score,
        }
        for i, score in enumerate(scores)
    ]
    EvalResult(
        benchmark="pope",
        version="1",
        kind="generate",
        metrics={"accuracy": sum(scores) / len(scores), "yes_ratio": sum(scores) / len(scores)},
        records=records,
        source=str(data_file),
        sha256="0" * 64,
        generated=True,
        n=len(records),
        model="sft",
        adapter=run,
    ).save(folder / "eval" / label)


@pytest.fixture(scope="session")
def report_collection(tmp_path_factory, report_run) -> Path:
    """A demo-like folder: train/uni_dpo (the real run), train/dpo (a copy whose config and
    curves say DPO), eval/{sft,uni_dpo,dpo}/pope.json, and the images the records name."""
    from PIL import Image

    root = tmp_path_factory.mktemp("collection")
    uni = root / "train" / "uni_dpo"
    dpo = root / "train" / "dpo"
    shutil.copytree(report_run, uni)
    shutil.copytree(report_run, dpo)
    config = yaml.safe_load((dpo / "config.yaml").read_text())
    config["loss"] = {"name": "dpo", "kwargs": {"beta": 0.1}, "length_normalized": None}
    (dpo / "config.yaml").write_text(yaml.safe_dump(config))
    records = [json.loads(line) for line in (dpo / "metrics.jsonl").read_text().splitlines()]
    with open(dpo / "metrics.jsonl", "w") as handle:
        for record in records:
            kept = {k: v for k, v in record.items() if "w_qual" not in k and "w_perf" not in k}
            if "loss" in kept:
                kept["loss"] = kept["loss"] * 0.5
            handle.write(json.dumps(kept) + "\n")
    # The DPO copy's generations carry an image each, as an image-text run's would.
    from mmdpo.report.samples import thumbnail_data_uri
    from mmdpo.tiny import random_image

    samples = [json.loads(line) for line in (dpo / "samples.jsonl").read_text().splitlines()]
    for index, sample in enumerate(samples):
        sample["images"] = [thumbnail_data_uri(random_image(index))]
    (dpo / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    data = root / "eval_data"
    (data / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 30), (40 * i, 120, 200)).save(data / "images" / f"scene{i}.png")
    (data / "pope.jsonl").write_text("")
    save_eval(root, "sft", data / "pope.jsonl", [1.0, 0.0, 0.0], None)
    save_eval(root, "uni_dpo", data / "pope.jsonl", [1.0, 1.0, 0.0], str(uni))
    save_eval(root, "dpo", data / "pope.jsonl", [1.0, 0.0, 1.0], str(dpo))
    return root
