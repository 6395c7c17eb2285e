"""The benchmark's scaling workloads, arms and case groups (no model is built here)."""

import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import arms  # noqa: E402
import cases  # noqa: E402
import scaling  # noqa: E402


def _tokens(text: str) -> int:
    return len(text.split())  # the benchmark's tokenizer: one word, one token


def test_prompt_sweep_has_exact_lengths(tmp_path):
    workload = scaling.WORKLOADS["prompt1024"]
    pairs = scaling.workload_pairs(workload, "full", 3, tmp_path)
    assert [_tokens(p.prompt) for p in pairs] == [1024] * 3
    assert {_tokens(p.chosen) for p in pairs} == {128} and {_tokens(p.rejected) for p in pairs} == {
        128
    }
    assert all(p.chosen.endswith("</s>") and not p.images for p in pairs)
    assert workload.max_length("full") >= 1024 + 128
    assert workload.x_at("quick") == 128  # lengths shrink by 8 at the quick preset


@pytest.mark.parametrize("count", scaling.IMAGE_COUNTS)
def test_vlm_workloads_put_n_images_of_the_size_in_each_prompt(tmp_path, count):
    from PIL import Image

    workload = scaling.WORKLOADS[f"vlm{count}"]
    assert workload.image_tokens() == 16 * 16 + 2  # 448 px: 32 x 32 patches, merged 2 x 2
    pairs = scaling.workload_pairs(workload, "quick", 2, tmp_path)
    for pair in pairs:
        assert len(pair.images) == count
        with Image.open(pair.images[0]) as image:
            assert image.size == (56, 56)  # 448 / 8
        assert 32 // 8 <= _tokens(pair.chosen) <= 128 // 8


def test_skewed_lengths_follow_the_stated_distribution_and_fit(tmp_path):
    """Medians near the stated ones, a long right tail, nothing over the limits."""
    rng = random.Random(0)
    draws = [scaling._skewed_lengths(rng, 1) for _ in range(4000)]
    prompts = sorted(d[0] for d in draws)
    responses = sorted(r for d in draws for r in d[1:])
    assert 95 < prompts[len(prompts) // 2] < 130  # stated median 112
    assert 190 < responses[len(responses) // 2] < 250  # stated median 221
    assert prompts[int(0.9 * len(prompts))] > 3 * prompts[len(prompts) // 2]  # the tail
    limits = scaling.SKEWED_LIMITS
    assert max(prompts) <= limits["prompt"] and max(responses) <= limits["response"]
    assert all(p + max(c, r) + 2 <= limits["total"] for p, c, r in draws)
    pairs = scaling.workload_pairs(scaling.WORKLOADS["skewed"], "quick", 8, tmp_path)
    assert len({_tokens(p.prompt) for p in pairs}) > 4  # lengths differ inside a batch


def test_case_groups_and_names():
    assert cases.select(None, quick=False) == cases.ORIGINAL
    assert len(cases.ORIGINAL) == 12 and cases.select("all", quick=False) == cases.ORIGINAL
    assert cases.select("vlm-images", quick=False) == [
        "vlm1-adapter_off", "vlm1-precomputed", "vlm2-adapter_off", "vlm2-precomputed",
        "vlm4-adapter_off", "vlm4-precomputed",
    ]  # fmt: skip
    assert not cases.CASES["vlm4-precomputed"].trl_runs  # TRL refuses it for images
    assert all(cases.CASES[n].quantization == "4bit" for n in cases.GROUPS["gpu"])
    with pytest.raises(SystemExit, match="unknown case"):
        cases.select("text-adapter_off,nope", quick=False)


def test_arms_are_config_switches_and_missing_ones_are_unavailable(monkeypatch):
    known: set[str] = set()
    monkeypatch.setattr(arms, "config_has", lambda key: key in known)
    # A build without the setting: two-row runs as it is, the others cannot run.
    assert arms.arm_overrides("mmdpo") == []
    assert arms.arm_overrides("mmdpo-shared") is None
    assert arms.missing_settings("mmdpo-shared-packed") == [arms.LAYOUT]
    assert arms.missing_settings("mmdpo") == []
    # A build with it: every arm selects its layout explicitly.
    known.add(arms.LAYOUT)
    assert arms.arm_overrides("mmdpo") == [f"{arms.LAYOUT}=two_row"]
    assert arms.arm_overrides("mmdpo-shared") == [f"{arms.LAYOUT}=shared_prompt"]
    assert arms.arm_overrides("mmdpo-shared-packed") == [f"{arms.LAYOUT}=packed"]
    with pytest.raises(SystemExit, match="unknown arm"):
        arms.parse_arms("mmdpo,fast")
    # This build has the setting.
    monkeypatch.undo()
    assert arms.config_has(arms.LAYOUT)


def test_config_has_reads_the_engine_config():
    assert arms.config_has("train.max_grad_norm")
    assert arms.config_has("reference.mode")
    assert not arms.config_has("train.no_such_setting")
    assert not arms.config_has("train.max_grad_norm.deeper")


def test_tokens_per_second_count_the_two_row_layout_for_every_arm():
    """An arm that computes the prompt once is credited with the same tokens."""
    import bench_trl

    info = {"layout": [{"rows": [10, 12]}, {"rows": [20, 8]}, {"rows": [5, 5]}, {"rows": [1, 1]}]}
    assert bench_trl.case_tokens(info, batch=2, steps=2) == [50, 12]
    result = {
        "step_ends": [0.0, 2.0],
        "step_cpu": [0.0, 1.0],
        "step_tokens": [40, 7],  # the engine's own count (e.g. a shared prompt counted once)
        "pairs_per_step": 2,
        "peak_memory_bytes": 2**20,
        "total_s": 3.0,
    }
    stats = bench_trl.steady_state(result, [1e9, 1e9], [50, 12])
    assert stats["tokens_per_s"] == 6.0 and stats["engine_tokens_per_s"] == 3.5
    assert stats["pairs_per_s"] == 1.0 and stats["cpu_pairs_per_s"] == 2.0
