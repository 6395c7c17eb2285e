"""The benchmark runner on tiny models: generation and margin benchmarks, runs, errors.

Generation itself (left padding, stop strings, VLMs) is tested in tests/mmdpo/test_inference.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from eval.registry import get_benchmark
from eval.runner import EvalError, run_benchmarks
from mmdpo.inference import InferenceModel
from tests.fixtures import arithmetic_pairs, make_config


@pytest.fixture(scope="module")
def tiny_run(tiny_llama_dir, tmp_path_factory):
    """An mmdpo run folder: the tiny Llama trained for one step (lr high enough to move)."""
    from mmdpo.trainer import train

    run = tmp_path_factory.mktemp("runs") / "run"
    config = make_config(tiny_llama_dir, run, "train.max_steps=1", "train.learning_rate=5e-2")
    train(config, arithmetic_pairs(4))
    return run


def test_run_benchmarks_gsm8k_and_ifeval_end_to_end(tiny_llama_dir, tmp_path):
    results = run_benchmarks(
        "gsm8k,ifeval",
        model=str(tiny_llama_dir),
        limit=3,
        out_dir=tmp_path,
        max_new_tokens=6,
        progress=False,
    )
    assert [result.benchmark for result in results] == ["gsm8k", "ifeval"]
    gsm8k, ifeval = results
    assert gsm8k.n == 3 and gsm8k.generated and gsm8k.model == str(tiny_llama_dir)
    assert gsm8k.adapter is None
    assert gsm8k.generation["max_new_tokens"] == 6 and gsm8k.generation["do_sample"] is False
    assert gsm8k.extra["throughput"]["samples_per_s"] > 0
    assert 0.0 <= gsm8k.metrics["exact_match_strict"] <= 1.0
    assert set(ifeval.metrics) == {
        "prompt_level_strict_acc",
        "inst_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_loose_acc",
    }
    assert ifeval.records[0]["follow_strict"] and "response" in ifeval.records[0]
    saved = json.loads((tmp_path / "gsm8k.json").read_text())
    assert saved["generation"]["max_new_tokens"] == 6
    lines = (tmp_path / "ifeval.samples.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_run_benchmarks_reads_a_data_file(tiny_llama_dir, tmp_path):
    data = tmp_path / "test.jsonl"
    rows = [
        {"question": f"What is {i} plus 1?", "answer": f"{i}+1\n#### {i + 1}"} for i in range(5)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (result,) = run_benchmarks(
        ["gsm8k"], model=str(tiny_llama_dir), data=data, limit=2, max_new_tokens=2, progress=False
    )
    assert not result.generated and result.source == str(data) and result.n == 2


def test_run_benchmarks_pope_and_chair_on_a_tiny_vlm(tiny_vlm_dir):
    results = run_benchmarks(
        ["pope", "chair"],
        model=str(tiny_vlm_dir("qwen2_vl")),
        limit=2,
        max_new_tokens=4,
        progress=False,
    )
    pope, chair = results
    assert pope.n == 2 and {"accuracy", "f1", "yes_ratio"} <= set(pope.metrics)
    assert all(record["extracted"] in ("yes", "no") for record in pope.records)
    assert chair.n == 2 and "chair_s" in chair.metrics
    assert chair.records[0]["ground_truth"], "the shapes-world scene has annotated objects"


def _response_logp(model, ids, n_prompt, average=True):
    """Mean log-prob of ids[n_prompt:] given what precedes each token: a plain forward."""
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    targets = torch.tensor(ids[1:])
    logps = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0]
    response = logps[n_prompt - 1 :]
    return response.mean() if average else response.sum()


def test_preference_margins_on_a_run_folder(tiny_run, tmp_path):
    (result,) = run_benchmarks(["preference"], model=str(tiny_run), limit=3, progress=False)
    assert result.adapter.endswith("step-000001")
    assert result.generation["beta"] == 2.0 and result.generation["logps"] == "mean"
    assert result.n == 3 and "accuracy" in result.metrics
    margins = [record["margin"] for record in result.records]
    assert any(abs(margin) > 0 for margin in margins), "the adapter changed nothing"

    # The first pair's margin from plain forwards, with the adapter on and off.
    from eval.preference import to_sample
    from mmdpo.data.transform import PairTransform, TransformSettings

    loaded = InferenceModel.load(str(tiny_run))
    pair = PairTransform(loaded.processing, TransformSettings(1024))(
        to_sample(get_benchmark("preference").load(None, 1).items[0])
    )
    n_prompt = len(pair.prompt_ids)
    chosen, rejected = pair.prompt_ids + pair.chosen_ids, pair.prompt_ids + pair.rejected_ids
    with torch.no_grad():
        policy = [_response_logp(loaded.model, ids, n_prompt) for ids in (chosen, rejected)]
        with loaded.model.disable_adapter():
            reference = [_response_logp(loaded.model, ids, n_prompt) for ids in (chosen, rejected)]
    expected = 2.0 * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
    assert margins[0] == pytest.approx(float(expected), abs=1e-5)


def test_adapter_on_top_of_a_model_equals_the_run_folder(tiny_run, tiny_llama_dir):
    as_run = run_benchmarks(["preference"], model=str(tiny_run), limit=2, progress=False)[0]
    on_top = run_benchmarks(
        ["preference"], model=str(tiny_llama_dir), adapter=str(tiny_run), limit=2, progress=False
    )[0]
    assert on_top.adapter == as_run.adapter
    assert [r["margin"] for r in on_top.records] == pytest.approx(
        [r["margin"] for r in as_run.records]
    )


def test_user_errors_are_eval_errors(tiny_llama_dir, tmp_path):
    with pytest.raises(EvalError, match="adapter on and off"):
        run_benchmarks(["preference"], model=str(tiny_llama_dir), progress=False)
    with pytest.raises(EvalError, match="valid names: .*gsm8k"):
        run_benchmarks(["gsm8k", "nope"], model=str(tiny_llama_dir), progress=False)
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints").mkdir(parents=True)
    (empty_run / "config.yaml").write_text(f"model:\n  name_or_path: {tiny_llama_dir}\n")
    with pytest.raises(EvalError, match="no complete checkpoint"):
        run_benchmarks(["gsm8k"], model=str(empty_run), limit=1, progress=False)
    with pytest.raises(EvalError, match="neither an mmdpo run"):
        run_benchmarks(["gsm8k"], model=str(tiny_llama_dir), adapter=str(tmp_path), limit=1)


def test_math_and_export_benchmarks_end_to_end(tiny_llama_dir, tmp_path, monkeypatch):
    """math500, math_jsonl and the four judge exports run on a tiny model and write files."""
    monkeypatch.setenv("MMDPO_EVAL_DATA", str(tmp_path / "no-data-here"))
    results = run_benchmarks(
        ["math500", "alpaca_eval", "arena_hard", "mt_bench"],
        model=str(tiny_llama_dir),
        limit=2,
        out_dir=tmp_path / "out",
        max_new_tokens=3,
        progress=False,
    )
    assert [r.benchmark for r in results] == ["math500", "alpaca_eval", "arena_hard", "mt_bench"]
    assert all(r.n == 2 for r in results)
    assert 0.0 <= results[0].metrics["accuracy"] <= 1.0
    mt_bench = results[3]
    assert all(len(record["response"]) == 2 for record in mt_bench.records), "two turns"
    written = {path.name for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert {"math500.json", "alpaca_eval.json", "arena_hard.json", "mt_bench.json"} <= written
    assert len(written) > 8, f"judge export files missing: {sorted(written)}"

    data = tmp_path / "problems.jsonl"
    data.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    (result,) = run_benchmarks(
        ["math_jsonl"], model=str(tiny_llama_dir), data=data, max_new_tokens=3, progress=False
    )
    assert result.n == 1 and not result.generated


def test_mmhal_export_on_a_tiny_vlm(tiny_vlm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MMDPO_EVAL_DATA", str(tmp_path / "no-data-here"))
    (result,) = run_benchmarks(
        ["mmhal_bench"],
        model=str(tiny_vlm_dir("qwen2_vl")),
        limit=1,
        out_dir=tmp_path,
        max_new_tokens=3,
        progress=False,
    )
    assert result.n == 1 and result.records[0]["response"] is not None


def test_preference_uses_the_run_score_calibration(tiny_llama_dir, tmp_path):
    """A run trained on z-scored scores is evaluated on the same scale (its calibration.json)."""
    from mmdpo.trainer import train

    run = tmp_path / "run"
    pairs = arithmetic_pairs(6)
    for sample in pairs:
        sample.source = "preference"  # the group name the eval items carry
    config = make_config(tiny_llama_dir, run, "train.max_steps=1", "data.calibration=zscore")
    train(config, pairs)
    data = tmp_path / "held_out.jsonl"
    rows = [
        {
            "id": s.id,
            "prompt": s.prompt,
            "chosen": s.chosen,
            "rejected": s.rejected,
            "score_chosen": s.score_chosen,
            "score_rejected": s.score_rejected,
            "source": "preference",
        }
        for s in pairs
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (result,) = run_benchmarks(["preference"], model=str(run), data=data, progress=False)
    assert result.generation["calibration"].startswith("zscore")
    scores = [r["score_chosen"] for r in result.records] + [
        r["score_rejected"] for r in result.records
    ]
    assert abs(sum(scores) / len(scores)) < 1e-6, "z-scored over the same pairs: mean 0"
    assert "raw" not in result.generation["calibration"]

    # No source: the run's one text group; another source: raw scores, and the result says so.
    for source, calibrated in ((None, True), ("elsewhere", False)):
        for row in rows:
            row.pop("source", None)
            if source:
                row["source"] = source
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (other,) = run_benchmarks(["preference"], model=str(run), data=data, progress=False)
        got = [r["score_chosen"] for r in other.records]
        want = (
            [r["score_chosen"] for r in result.records]
            if calibrated
            else [s.score_chosen for s in pairs]
        )
        assert got == pytest.approx(want), source
        kept_raw = f"{len(rows)} of {len(rows)} pairs kept raw scores"
        assert (kept_raw in other.generation["calibration"]) is not calibrated, source
