"""The report page and the run-folder files it reads (data_summary.json, samples.jsonl).

These tests need no browser: they check what the trainer writes, that the page embeds exactly
the numbers of the run's files, and that it refers to nothing outside itself.
``test_report_browser.py`` renders it in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil

import numpy as np
import pytest
import yaml

from mmdpo.checkpoint import list_checkpoints
from mmdpo.metrics_log import read_metrics
from mmdpo.report import build_report, embed_json, render_html, write_report
from mmdpo.report.collect import MAX_POINTS, collect
from mmdpo.report.samples import pick_samples, write_samples
from mmdpo.tiny import VLM_FAMILIES
from mmdpo.types import PreferenceSample
from tests.fixtures import arithmetic_pairs, make_config

DATA_SCRIPT = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def embedded(html: str) -> dict:
    """The data the page draws, parsed back out of its <script> element."""
    match = DATA_SCRIPT.search(html)
    assert match, "no report-data element"
    return json.loads(match.group(1))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- what the trainer writes ----------------------------------------------------------------


def test_run_writes_data_summary_samples_and_report(report_run):
    summary = json.loads((report_run / "data_summary.json").read_text())
    train_split, eval_split = summary["splits"]["train"], summary["splits"]["eval"]
    assert (train_split["pairs"], eval_split["pairs"]) == (12, 4)
    (group,) = train_split["groups"]
    assert (group["modality"], group["source"], group["pairs"], group["with_scores"]) == (
        "text",
        "arith",
        12,
        12,
    )
    samples = arithmetic_pairs(12)
    raw = group["raw_scores"]
    assert raw["chosen"]["mean"] == pytest.approx(np.mean([s.score_chosen for s in samples]))
    assert raw["margin"]["min"] == pytest.approx(min(s.score_margin for s in samples))
    assert sum(raw["histogram"]["chosen"]) == sum(raw["histogram"]["rejected"]) == 12
    assert raw["flipped"] == 0  # arithmetic_pairs always scores chosen above rejected
    assert train_split["tokens"]["prompt"]["n"] == 12

    records = read_jsonl(report_run / "samples.jsonl")
    held_out = {s.id: s for s in arithmetic_pairs(4, seed=1, prefix="e")}
    assert len(records) == 2
    for record in records:
        sample = held_out[record["id"]]
        assert record["split"] == "eval" and record["chosen"] == sample.chosen
        assert record["score_chosen"] == pytest.approx(sample.score_chosen)
        assert isinstance(record["policy"], str) and isinstance(record["base"], str)
        assert record["generation"]["step"] == 4 and record["generation"]["greedy"]
    assert (report_run / "report.html").is_file()


def test_data_summary_shows_calibrated_scores_beside_raw(tiny_llama_dir, tmp_path):
    from mmdpo.trainer import train

    config = make_config(
        tiny_llama_dir, tmp_path / "run", "train.max_steps=1", "data.calibration=zscore"
    )
    train(config, arithmetic_pairs(8))
    (group,) = json.loads((tmp_path / "run" / "data_summary.json").read_text())["splits"]["train"][
        "groups"
    ]
    raw, calibrated = group["raw_scores"], group["calibrated_scores"]
    pooled = [s for p in arithmetic_pairs(8) for s in (p.score_chosen, p.score_rejected)]
    expected = (np.mean([p.score_chosen for p in arithmetic_pairs(8)]) - np.mean(pooled)) / np.std(
        pooled
    )
    assert calibrated["chosen"]["mean"] == pytest.approx(expected)
    assert raw["chosen"]["mean"] > 4 and calibrated["chosen"]["mean"] < 2


def test_pick_samples_takes_every_group_in_turn():
    samples = [
        PreferenceSample(id=f"{source}{i}", prompt="q", chosen="a", rejected="b", source=source)
        for source in ("x", "y")
        for i in range(3)
    ]
    used = {s.id for s in samples} - {"x0"}
    assert [s.id for s in pick_samples(samples, used, 3)] == ["x1", "y0", "x2"]
    assert pick_samples(samples, used, 0) == []


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_samples_of_image_text_models_carry_their_images(tiny_vlm_dir, tmp_path, family):
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.reference import adapter_disabled
    from mmdpo.tiny import random_image

    directory = tiny_vlm_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(directory)
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    transform = PairTransform(
        AutoProcessor.from_pretrained(directory), TransformSettings(), is_vlm=True
    )
    sample = PreferenceSample(
        id="v0",
        prompt="What shapes are there?",
        chosen="A square.",
        rejected="A cat.",
        images=[random_image(0)],
        score_chosen=7.0,
        score_rejected=float("nan"),
        modality="vision",
    )
    path = write_samples(
        tmp_path / "samples.jsonl",
        model,
        transform,
        [sample],
        split="train",
        step=1,
        with_base=True,
        base_context=adapter_disabled,
        max_new_tokens=4,
    )
    (record,) = read_jsonl(path)
    assert record["prompt"] == "user: What shapes are there?"
    assert record["score_rejected"] is None  # NaN is not JSON
    assert isinstance(record["policy"], str) and isinstance(record["base"], str)
    (uri,) = record["images"]
    kind, payload = re.fullmatch(r"data:image/(png|jpeg);base64,(.+)", uri).groups()
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format.lower() == kind and max(image.size) <= 256 and min(image.size) > 0


def test_a_failing_report_does_not_fail_a_finished_run(
    tiny_llama_dir, tmp_path, monkeypatch, capsys
):
    import mmdpo.trainer as trainer

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer, "write_report", broken)
    monkeypatch.delenv("MMDPO_DEBUG", raising=False)
    result = trainer.train(
        make_config(tiny_llama_dir, tmp_path / "run", "train.max_steps=1"), arithmetic_pairs(4)
    )
    assert result.final_checkpoint is not None
    assert "report.html: not written (RuntimeError: disk on fire)" in capsys.readouterr().out
    monkeypatch.setenv("MMDPO_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        trainer.train(
            make_config(tiny_llama_dir, tmp_path / "run2", "train.max_steps=1"), arithmetic_pairs(4)
        )


# --- what the page holds --------------------------------------------------------------------


def test_page_embeds_exactly_the_run_files(report_run, tmp_path):
    page = write_report([report_run], tmp_path / "page.html")
    data = embedded(page.read_text())
    (run,) = data["runs"]
    assert run["config"] == yaml.safe_load((report_run / "config.yaml").read_text())
    assert run["data_summary"] == json.loads((report_run / "data_summary.json").read_text())
    assert run["samples"] == read_jsonl(report_run / "samples.jsonl")
    records = read_metrics(report_run / "metrics.jsonl")
    for key, curve in run["metrics"]["curves"].items():
        logged = [(r["step"], r[key]) for r in records if key in r]
        assert list(zip(curve["x"], curve["y"], strict=True)) == logged, key
    last_train = [r for r in records if "loss" in r][-1]
    last_eval = [r for r in records if "eval/loss" in r][-1]
    assert run["last"]["rewards/accuracies"] == last_train["rewards/accuracies"]
    assert run["last_eval"]["eval/rewards/margins"] == last_eval["eval/rewards/margins"]
    assert [c["path"] for c in run["checkpoints"]] == [str(p) for p in list_checkpoints(report_run)]
    assert run["checkpoints"][-1]["step"] == 4 and run["missing"] == []


def test_page_refers_to_nothing_outside_itself(report_collection, tmp_path):
    html = write_report([report_collection], tmp_path / "page.html").read_text()
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(link|iframe|object|embed)\b", html, re.I)
    assert not re.search(r"<script[^>]*\bsrc=", html, re.I)
    assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|import\()", html)
    assert len(re.findall(r"<script\b", html)) == 2 and html.count("</script>") == 2
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    assert srcs == []  # images come from the embedded data as data: URIs, set by the script
    assert re.search(r'"data:image/png;base64,', json.dumps(embedded(html)))


def test_embedded_json_cannot_end_its_script_element():
    hostile = {"prompt": "</script><script>alert(1)</script><!-- \u2028", "x": [1.5, None]}
    text = embed_json(hostile)
    assert "</" not in text and "<!--" not in text and "\u2028" not in text
    assert json.loads(text) == hostile
    page = render_html({"title": "</title><b>", "runs": [hostile], "roots": []})
    assert "<title>&lt;/title&gt;&lt;b&gt; · mmdpo report</title>" in page
    assert embedded(page)["runs"] == [hostile]


def test_older_run_folders_say_what_they_lack(report_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(report_run, old)
    for name in ("data_summary.json", "samples.jsonl", "report.html"):
        (old / name).unlink()
    shutil.rmtree(old / "checkpoints")
    data = embedded(write_report([old]).read_text())
    missing = {item["file"]: item["why"] for item in data["runs"][0]["missing"]}
    assert set(missing) == {"data_summary.json", "samples.jsonl", "checkpoints"}
    assert "train.samples=0" in missing["samples.jsonl"]


def test_a_metrics_only_folder_with_skipped_steps_and_nan(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"loss": {"name": "dpo"}}))
    lines = [
        {"step": 1, "loss": 0.7, "grad_norm": None},
        {"step": 2, "skipped": "loss is nan", "loss": None},
        {"step": 3, "loss": 0.6, "grad_norm": 1.5},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"torn')
    (data,) = collect([run])["runs"]
    assert data["metrics"]["curves"]["loss"] == {"x": [1, 3], "y": [0.7, 0.6]}
    assert data["metrics"]["curves"]["grad_norm"] == {"x": [1, 3], "y": [None, 1.5]}
    assert data["metrics"]["skipped"] == [{"step": 2, "reason": "loss is nan"}]
    assert {m["file"] for m in data["missing"]} == {
        "data_summary.json",
        "samples.jsonl",
        "checkpoints",
    }
    embedded(write_report([run]).read_text())  # strict JSON: no NaN reaches the page


def test_long_runs_are_drawn_as_bucket_means_and_tabled_exactly(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    steps = 2 * MAX_POINTS + 7
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in range(1, steps + 1))
    )
    (data,) = collect([run])["runs"]
    curve = data["metrics"]["curves"]["loss"]
    assert len(curve["x"]) <= MAX_POINTS and curve["bucketed"] == 3
    assert curve["y"][0] == pytest.approx(2.0) and curve["x"][0] == 3  # mean of steps 1..3
    assert curve["x"][-1] == steps and data["last"]["loss"] == float(steps)


def test_a_collection_overlays_its_runs_with_their_benchmarks(report_collection):
    data = build_report([report_collection], title="ablation")
    assert [run["name"] for run in data["runs"]] == ["dpo", "uni_dpo"]
    assert "loss.name" in data["config_differences"]
    assert "train.output_dir" not in data["config_differences"]
    (block,) = data["collection_evals"]
    assert block["labels"] == ["sft", "dpo", "uni_dpo"]  # baseline first, then run order
    pope = block["benchmarks"]["pope"]
    assert pope["results"]["uni_dpo"]["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert [e["id"] for e in pope["examples"]] == ["q1", "q2", "q0"]  # changed scores first
    assert pope["examples"][0]["image"].startswith("data:image/")
    assert pope["examples"][0]["answers"]["uni_dpo"] == {"response": "Yes.", "score": 1.0}


def test_an_ablation_folder_names_runs_by_variant_and_seed(report_run, tmp_path):
    from mmdpo.report.collect import run_names

    for variant in ("dpo", "uni_dpo"):
        for seed in (0, 1):
            shutil.copytree(report_run, tmp_path / "runs" / variant / f"seed-{seed}" / "train")
    (tmp_path / "shared").mkdir()
    names = [run["name"] for run in collect([tmp_path])["runs"]]
    assert names == ["dpo/seed-0", "dpo/seed-1", "uni_dpo/seed-0", "uni_dpo/seed-1"]
    assert run_names([tmp_path / "a" / "run"]) == ["run"]
    assert run_names([tmp_path / "x" / "run", tmp_path / "y" / "run"]) == ["x", "y"]


def test_names_and_extra_tables_from_python(report_collection):
    table = {"title": "Ablation", "columns": ["variant", "acc"], "rows": [["dpo", 0.5]]}
    data = build_report([report_collection], names=["a", "b"], extra_tables=[table])
    assert [run["name"] for run in data["runs"]] == ["a", "b"]
    assert data["extra_tables"] == [table]
    with pytest.raises(ValueError, match="title, columns and rows"):
        build_report([report_collection], extra_tables=[{"title": "x"}])
    with pytest.raises(ValueError, match="names: 1 given for 2 runs"):
        build_report([report_collection], names=["a"])


def test_report_command(report_run, tmp_path, capsys):
    from mmdpo.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(report_run), "--out", str(out), "--title", "tiny"]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    assert embedded(out.read_text())["title"] == "tiny"
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2  # exists, holds no run
    assert "not an mmdpo run folder" in capsys.readouterr().err
    assert main(["report", str(report_run), str(report_run)]) == 2
    assert "--out" in capsys.readouterr().err


def test_histogram_bins_hold_every_finite_value():
    from mmdpo.report.data_summary import describe, histogram

    values = [1.0, 2.0, 2.0, float("nan"), 5.0, None]
    result = histogram({"a": values, "b": [3.0]})
    assert sum(result["a"]) == 4 and sum(result["b"]) == 1
    assert result["edges"][0] == 1.0 and result["edges"][-1] == 5.0
    assert describe(values)["n"] == 4 and math.isclose(describe(values)["mean"], 2.5)
    assert describe([])["mean"] is None and histogram({"a": []})["edges"] == []
