"""`mmdpo ablate`: variants x seeds in worker processes, resumable, a table with intervals."""

import json

import pytest

from mmdpo.cli import main
from tasks.ablate import (
    VARIANTS,
    AblationError,
    format_table,
    parse_seeds,
    parse_variants,
    summarize_sweep,
)
from tasks.ablate_tasks import Metric


def test_parse_seeds_and_variants():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("2-4") == [2, 3, 4]
    assert parse_seeds("1,5") == [1, 5]
    with pytest.raises(AblationError, match="--seeds"):
        parse_seeds("x")
    assert parse_variants("dpo, uni_dpo,dpo") == ["dpo", "uni_dpo"]
    with pytest.raises(AblationError, match="valid: uni_dpo"):
        parse_variants("uni_dpo,nope")


def test_summary_pairs_each_variant_with_dpo_by_seed():
    """uni_dpo 0.7/0.8/0.9 vs dpo 0.6/0.7/0.8 on seeds 0-2: every paired difference is 0.1,
    so the interval is [0.1, 0.1] and excludes zero; the means' own intervals overlap."""
    results = {
        "uni_dpo": {0: {"acc": 0.7}, 1: {"acc": 0.8}, 2: {"acc": 0.9}},
        "dpo": {0: {"acc": 0.6}, 1: {"acc": 0.7}, 2: {"acc": 0.8}},
    }
    metrics = [Metric("acc", "accuracy")]
    summary = summarize_sweep(results, metrics, before={"acc": 0.5})
    uni = summary["variants"]["uni_dpo"]["acc"]
    assert uni["summary"]["mean"] == pytest.approx(0.8)
    assert uni["summary"]["std"] == pytest.approx(0.1)
    assert uni["vs_dpo"]["mean"] == pytest.approx(0.1)
    assert uni["vs_dpo"]["low"] == pytest.approx(0.1) and uni["vs_dpo"]["high"] == pytest.approx(
        0.1
    )
    assert "vs_dpo" not in summary["variants"]["dpo"]["acc"]
    table = format_table(summary, metrics)
    assert "| before training | - | 0.500 |" in table
    assert "| Uni-DPO | 3 | 0.800 ± 0.100 [0.552, 1.048] | +0.100 [+0.100, +0.100] * |" in table


@pytest.fixture
def sweep_config(tiny_llama_dir, tmp_path):
    rows = [
        {
            "prompt": f"What is {i} plus {i}?",
            "chosen": f"It is {2 * i}.",
            "rejected": f"It is {2 * i + 1}.",
            "score_chosen": 6.0 + i % 3,
            "score_rejected": 2.0 + i % 2,
        }
        for i in range(12)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "unidpo.yaml"
    config.write_text(
        f"model:\n  name_or_path: {tiny_llama_dir}\n  dtype: float32\n"
        f"data:\n  train: {data}\n  format: trl\n  eval_fraction: 0.25\n"
        "loss:\n  name: uni_dpo\n  kwargs: {beta: 2.0, tau_good: 5.0}\n"
        "lora:\n  r: 4\n  alpha: 8\n  dropout: 0.0\n"
        "train:\n  max_steps: 2\n  batch_size: 2\n  learning_rate: 1.0e-3\n  progress: false\n"
        "  plots: false\n  warmup_ratio: 0\n"
    )
    return config


def test_sweep_trains_every_variant_and_seed_then_resumes(sweep_config, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [
        "ablate", "--task", "config", "--config", str(sweep_config), "--out", str(out),
        "--variants", "uni_dpo,no_quality,dpo", "--seeds", "2", "--jobs", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "6 runs to do (0 finished earlier)" in printed
    summary = json.loads((out / "ablation.json").read_text())
    assert set(summary["variants"]) == {"uni_dpo", "no_quality", "dpo"}
    for variant in ("uni_dpo", "no_quality", "dpo"):
        for seed in (0, 1):
            result = json.loads(
                (out / "runs" / variant / f"seed-{seed}" / "result.json").read_text()
            )
            assert result["seed"] == seed and "eval/rewards/accuracies" in result["metrics"]
            config = (out / "runs" / variant / f"seed-{seed}" / "train" / "config.yaml").read_text()
            assert f"seed: {seed}" in config
            assert ("name: dpo" in config) == (variant == "dpo")
            assert ("use_quality_weight: false" in config) == (variant == "no_quality")
    # Different seeds train differently (order and LoRA init), the same seed the same way.
    runs = out / "runs" / "uni_dpo"
    a, b = (json.loads((runs / f"seed-{s}" / "result.json").read_text()) for s in (0, 1))
    assert a["metrics"] != b["metrics"]
    assert "| Uni-DPO | 2 |" in (out / "ablation.md").read_text()

    # Resume: nothing is retrained; a new seed only adds its runs; other settings are refused.
    assert main(argv) == 0
    assert "0 runs to do (6 finished earlier)" in capsys.readouterr().out
    changed = [*argv, "train.learning_rate=1e-4"]
    assert main(changed) == 2
    assert "never mixed" in capsys.readouterr().err


def test_a_non_unidpo_config_is_refused_before_training(sweep_config, tmp_path, capsys):
    argv = [
        "ablate", "--task", "config", "--config", str(sweep_config),
        "--out", str(tmp_path / "s"), "--variants", "no_nll", "loss.name=dpo", "loss.kwargs={}",
    ]  # fmt: skip
    assert main(argv) == 2
    assert "must train uni_dpo" in capsys.readouterr().err
    assert not (tmp_path / "s" / "runs").exists()


def test_every_variant_is_a_valid_config(sweep_config):
    from mmdpo.config import load_config

    for name, variant in VARIANTS.items():
        config = load_config(sweep_config, list(variant.overrides))
        assert config.loss.name in ("uni_dpo", "dpo", "simpo"), name


def test_demo_sweep_shares_the_sft_model_and_pairs(tmp_path, capsys):
    """Two variants x one seed on a tiny demo world: the SFT model is built once, the table has
    the demo's metrics and the before row, and the sweep's report page is written."""
    out = tmp_path / "demo-sweep"
    tiny = [
        "demo.sft_scenes=12", "demo.grounding_steps=2", "demo.sft_steps=4",
        "demo.sft_batch_size=4", "demo.pair_scenes=6", "demo.pope_scenes=3",
        "demo.chair_scenes=3", "demo.hidden_size=64",
        "train.max_steps=2", "train.batch_size=2",
    ]  # fmt: skip
    argv = ["ablate", "--task", "demo", "--out", str(out), "--variants", "uni_dpo,simpo",
            "--seeds", "1", "--jobs", "2", *tiny]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("shared: SFT model") == 1
    table = (out / "ablation.md").read_text()
    assert "POPE accuracy" in table and "| before training |" in table and "| SimPO | 1 |" in table
    simpo = (out / "runs" / "simpo" / "seed-0" / "train" / "config.yaml").read_text()
    assert "name: simpo" in simpo and "mode: none" in simpo
    assert (out / "report.html").is_file()
    assert (
        "demo.sft_steps=4"
        in json.loads((out / "sweep.json").read_text())["task_options"]["demo_overrides"]
    )
