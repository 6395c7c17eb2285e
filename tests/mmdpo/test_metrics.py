"""Step metrics: hand-worked batch summaries, ESS, Spearman, the jsonl sink, plots, progress."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mmdpo.config import ConfigError
from mmdpo.metrics import (
    MetricsAccumulator,
    average_ranks,
    effective_sample_size,
    nonfinite_reason,
    peak_memory_bytes,
    spearman,
    summarize_pairs,
)
from mmdpo.metrics_log import (
    MetricsWriter,
    ProgressBar,
    check_trackers,
    plot_metrics,
    read_metrics,
)
from tests.fixtures import tensorboard_scalars


def three_pairs() -> dict:
    return {
        "chosen_rewards": torch.tensor([1.0, 0.5, -0.2]),
        "rejected_rewards": torch.tensor([0.0, 1.0, -0.4]),
        "metrics": {
            "w_qual": torch.tensor([0.5, 0.25, 1.0]),
            "w_perf": torch.tensor([1.0, 0.5, 0.5]),
            "nll_gate": torch.tensor([1.0, 0.0, 0.0]),
        },
        "policy_chosen_logps": torch.tensor([-10.0, -20.0, -30.0]),
        "policy_rejected_logps": torch.tensor([-12.0, -18.0, -33.0]),
        "losses": torch.tensor([0.3, 0.9, 0.6]),
    }


def test_summarize_pairs_by_hand():
    """Three pairs, one modality.

    rewards chosen [1, 0.5, -0.2] -> mean 1.3/3; rejected [0, 1, -0.4] -> mean 0.6/3 = 0.2
    margins [1, -0.5, 0.2] -> mean 0.7/3; accuracies [1, 0, 1] -> 2/3
    logps chosen [-10, -20, -30] -> -20; rejected [-12, -18, -33] -> -21
    loss [0.3, 0.9, 0.6] -> 0.6
    w_qual [0.5, 0.25, 1] -> mean 1.75/3, min 0.25, max 1
    w_perf [1, 0.5, 0.5] -> mean 2/3, min 0.5, max 1
    c-NLL gate [1, 0, 0] -> active share 1/3
    w = w_qual * w_perf = [0.5, 0.125, 0.5]: Σw = 1.125, Σw² = 0.515625,
    ESS = 1.265625 / 0.515625 = 27/11, ratio 9/11
    """
    batch = three_pairs()
    summary = summarize_pairs(
        batch["chosen_rewards"],
        batch["rejected_rewards"],
        batch["metrics"],
        batch["policy_chosen_logps"],
        batch["policy_rejected_logps"],
        ["text", "text", "text"],
        losses=batch["losses"],
    )
    expected = {
        "loss": 0.6,
        "rewards/chosen": 1.3 / 3,
        "rewards/rejected": 0.2,
        "rewards/margins": 0.7 / 3,
        "rewards/accuracies": 2 / 3,
        "logps/chosen": -20.0,
        "logps/rejected": -21.0,
        "weights/w_qual_mean": 1.75 / 3,
        "weights/w_qual_min": 0.25,
        "weights/w_qual_max": 1.0,
        "weights/w_perf_mean": 2 / 3,
        "weights/w_perf_min": 0.5,
        "weights/w_perf_max": 1.0,
        "weights/nll_active": 1 / 3,
        "weights/ess": 27 / 11,
        "weights/ess_ratio": 9 / 11,
        "pairs": 3.0,
    }
    assert summary.keys() == expected.keys()  # one modality: no breakdown keys
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-6), key


def test_per_modality_breakdown():
    """Pairs 0 and 2 are text, pair 1 vision.

    text: margins [1, 0.2] -> 0.6, accuracy 1, w = [0.5, 0.5] -> ESS 2
    vision: margin -0.5, accuracy 0, ESS 1
    """
    batch = three_pairs()
    summary = summarize_pairs(
        batch["chosen_rewards"],
        batch["rejected_rewards"],
        batch["metrics"],
        modality=["text", "vision", "text"],
    )
    assert summary["rewards/margins/text"] == pytest.approx(0.6)
    assert summary["rewards/accuracies/text"] == 1.0
    assert summary["weights/ess/text"] == pytest.approx(2.0)
    assert summary["pairs/text"] == 2.0
    assert summary["rewards/margins/vision"] == pytest.approx(-0.5)
    assert summary["rewards/accuracies/vision"] == 0.0
    assert summary["weights/ess/vision"] == pytest.approx(1.0)
    assert summary["rewards/margins"] == pytest.approx(0.7 / 3)  # the whole batch still there
    assert "logps/chosen" not in summary  # not given, not invented


def test_plain_dpo_batch_has_no_weight_keys_and_other_metrics_are_averaged():
    summary = summarize_pairs(
        torch.tensor([1.0, 2.0]),
        torch.tensor([0.0, 3.0]),
        {"logits": torch.tensor([2.0, 4.0])},
    )
    assert not any(key.startswith("weights/") for key in summary)
    assert summary["extra/logits"] == 3.0
    assert summary["rewards/accuracies"] == 0.5


def test_ess_of_equal_and_one_hot_weights():
    assert effective_sample_size(torch.full((7,), 0.3)) == pytest.approx(7.0)
    assert effective_sample_size(torch.tensor([0.0, 0.0, 2.5, 0.0])) == pytest.approx(1.0)
    assert math.isnan(effective_sample_size(torch.zeros(3)))


def test_ess_of_only_w_qual():
    summary = summarize_pairs(
        torch.zeros(4), torch.zeros(4), {"w_qual": torch.tensor([0.0, 1.0, 0.0, 0.0])}
    )
    assert summary["weights/ess"] == pytest.approx(1.0)
    assert summary["weights/ess_ratio"] == pytest.approx(0.25)
    assert "weights/w_perf_mean" not in summary


def test_accumulator_summarizes_the_whole_step():
    """Micro-batches of 2 and 1 pairs give the summary of the 3 pairs, not an average."""
    batch = three_pairs()
    accumulator = MetricsAccumulator()
    for rows, modality in ((slice(0, 2), ["text", "vision"]), (slice(2, 3), ["text"])):
        accumulator.add(
            batch["chosen_rewards"][rows],
            batch["rejected_rewards"][rows],
            {key: value[rows] for key, value in batch["metrics"].items()},
            batch["policy_chosen_logps"][rows],
            batch["policy_rejected_logps"][rows],
            modality,
            losses=batch["losses"][rows],
        )
    assert accumulator.num_pairs == 3
    whole = summarize_pairs(
        batch["chosen_rewards"],
        batch["rejected_rewards"],
        batch["metrics"],
        batch["policy_chosen_logps"],
        batch["policy_rejected_logps"],
        ["text", "vision", "text"],
        losses=batch["losses"],
    )
    step = accumulator.compute()
    assert step.keys() == whole.keys()
    for key in whole:
        assert step[key] == pytest.approx(whole[key]), key
    assert step["weights/w_qual_min"] == 0.25  # the second micro-batch alone would give 1.0

    # Two processes with the same pairs: twice the pairs, the same means.
    gathered = accumulator.compute(gather_object=lambda parts: parts + parts)
    assert gathered["pairs"] == 6.0
    assert gathered["rewards/margins"] == pytest.approx(whole["rewards/margins"])

    accumulator.reset()
    assert accumulator.compute() == {}


def test_average_ranks_match_scipy_rankdata():
    from scipy.stats import rankdata

    values = [3.0, 1.0, 3.0, 2.0, 3.0, 1.0]
    np.testing.assert_array_equal(average_ranks(values), rankdata(values))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = x + rng.integers(-2, 3, size=40)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    z = rng.normal(size=40)
    assert spearman(z, x) == pytest.approx(spearmanr(z, x).statistic, abs=1e-12)


def test_spearman_drops_nan_and_handles_degenerate_input():
    x = [1.0, 2.0, float("nan"), 4.0, 5.0, 0.5]
    y = [2.0, 1.0, 3.0, float("inf"), 7.0, 0.0]
    kept_x, kept_y = [1.0, 2.0, 5.0, 0.5], [2.0, 1.0, 7.0, 0.0]
    assert spearman(x, y) == pytest.approx(spearmanr(kept_x, kept_y).statistic)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # constant side
    assert math.isnan(spearman([1.0], [2.0]))
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == -1.0


def test_score_reward_spearman_uses_margins():
    """As the trainer computes eval/spearman_score_reward: score margins [1, 2, 3, NaN]
    against reward margins [0.1, 0.3, 0.2, 9]: the unscored pair is left out; ranks
    [1, 2, 3] vs [1, 3, 2] give 1 - 6·2/(3·8) = 0.5."""
    score_margins = (torch.tensor([2.0, 3.0, 4.0, float("nan")]) - torch.tensor(1.0)).tolist()
    reward_margins = (
        torch.tensor([0.2, 0.5, 0.2, 9.0]) - torch.tensor([0.1, 0.2, 0.0, 0.0])
    ).tolist()
    assert spearman(score_margins, reward_margins) == pytest.approx(0.5)


def test_writer_appends_lines_and_truncates_on_resume(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(1, 6):
            writer.log({"loss": torch.tensor(1.0 / step), "lr": 1e-3}, step)
        writer.log({"loss": float("nan")}, 6)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[1]["loss"] == pytest.approx(0.5)
    assert records[-1]["loss"] is None  # strict JSON: no NaN literal
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard {name}"))

    # Interrupted mid-line after step 6, resumed from the checkpoint of step 3.
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 7, "lo')
    with MetricsWriter(tmp_path, resume_step=3) as writer:
        assert [r["step"] for r in read_metrics(writer.path)] == [1, 2, 3]
        writer.log({"loss": 0.25}, 4)
        writer.log_skipped(5, "loss is nan", loss=float("nan"))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["loss"] == 0.25
    assert records[4] == {"step": 5, "skipped": "loss is nan", "loss": None}

    # A fresh run into the same folder starts the file anew.
    MetricsWriter(tmp_path).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_tensorboard_tracker_writes_event_files_and_only_main_writes(tmp_path):
    with MetricsWriter(tmp_path, ("tensorboard",)) as writer:
        writer.log({"loss": 0.5, "grad_norm": float("inf"), "note": "text"}, 3)
        writer.log({"loss": 0.25}, 4)
    # metrics.jsonl is always written; tensorboard gets the finite numbers.
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [3, 4]
    assert tensorboard_scalars(tmp_path / "tensorboard") == {"loss": [(3, 0.5), (4, 0.25)]}

    other = tmp_path / "rank1"
    MetricsWriter(other, ("tensorboard",), is_main_process=False).log({"loss": 1.0}, 1)
    assert not other.exists()

    with pytest.raises(ValueError, match="valid: jsonl, tensorboard, wandb"):
        MetricsWriter(tmp_path, ("jsonl", "mlflow"))


def test_trackers_are_checked_before_a_run(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name)
    )
    assert check_trackers(["jsonl", "tensorboard", "tensorboard"]) == ["tensorboard"]
    assert check_trackers([]) == []
    with pytest.raises(ConfigError, match="train.trackers: wandb is not installed .pip install"):
        check_trackers(["jsonl", "wandb"])
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        check_trackers(["comet"])


def write_run(path, with_weights: bool) -> None:
    with MetricsWriter(path) as writer:
        for step in range(1, 11):
            values = {
                "loss": 0.7 - 0.03 * step,
                "rewards/chosen": 0.1 * step,
                "rewards/rejected": -0.05 * step,
                "rewards/margins": 0.15 * step,
                "rewards/accuracies": min(1.0, 0.5 + 0.05 * step),
                "lr": 1e-5 * (1 - step / 10),
                "grad_norm": 1.0 / step,
            }
            if with_weights:
                values.update(
                    {
                        "weights/w_qual_mean": 0.6,
                        "weights/w_qual_min": 0.2,
                        "weights/w_qual_max": 0.9,
                        "weights/w_perf_mean": 0.5 - 0.01 * step,
                        "weights/ess_ratio": 0.8,
                        "weights/nll_active": 0.1,
                    }
                )
            if step % 5 == 0:
                values["eval/spearman_score_reward"] = 0.1 * step
                values["eval/loss"] = 0.6
            writer.log(values, step)
        writer.log_skipped(11, "grad_norm is inf")


def test_plots_are_written_as_png(tmp_path):
    write_run(tmp_path, with_weights=True)
    written = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots")
    assert sorted(p.name for p in written) == [
        "eval.png",
        "loss.png",
        "optim.png",
        "rewards.png",
        "weights.png",
    ]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, path


def test_plots_skip_absent_groups(tmp_path):
    write_run(tmp_path, with_weights=False)
    written = plot_metrics(tmp_path / "metrics.jsonl", tmp_path)
    assert "weights.png" not in {p.name for p in written}
    assert not (tmp_path / "weights.png").exists()


def test_progress_bar_shows_key_numbers():
    stream = io.StringIO()
    with ProgressBar(10, initial=4, file=stream) as bar:
        bar.update({"loss": 0.6931, "rewards/margins": 0.25, "rewards/accuracies": 0.75})
    text = stream.getvalue()
    assert "5/10" in text
    assert "loss=0.6931" in text and "margin=0.25" in text and "acc=0.75" in text

    silent = io.StringIO()
    with ProgressBar(10, disable=True, file=silent) as bar:
        bar.update({"loss": 1.0})
        bar.write("hidden")
    assert silent.getvalue() == ""


def test_nonfinite_reason():
    assert nonfinite_reason(torch.tensor(0.5), torch.tensor(2.0)) is None
    assert nonfinite_reason(torch.tensor(float("nan"))) == "loss is nan"
    assert nonfinite_reason(0.5, torch.tensor(float("inf"))) == "grad_norm is inf"


def test_peak_memory():
    peak = peak_memory_bytes("cpu")
    assert isinstance(peak, int) and peak > 10 * 2**20  # a Python process with torch loaded
