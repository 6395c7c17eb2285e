"""Held-out preference metrics from implicit reward margins, worked by hand."""

from __future__ import annotations

import json
import math

import pytest

from eval.preference import Preference, preference_metrics, to_sample

ETA = 0.7
# A score margin whose quality weight is σ(ln 3) = 3/4.
THREE_QUARTERS = math.log(3) / ETA


def test_metrics_worked_by_hand():
    """Pairs (margin, S_w - S_l, modality):
        1: ( 1.0, 0,    text)    win,  w = σ(0)     = 1/2
        2: (-0.5, 0,    text)    loss, w = 1/2
        3: ( 2.0, ln3/η, vision) win,  w = σ(ln 3) = 3/4
        4: ( 0.0, no scores, vision)  not a win (margin must be > 0); no weight

    accuracy 2/4; mean margin 2.5/4 = 0.625; quality-weighted (1/2 + 3/4) / (1/2 + 1/2 + 3/4)
    = 5/7. text: accuracy 1/2, mean 0.25, weighted (1/2)/(1) = 1/2. vision: accuracy 1/2,
    mean 1.0, weighted (3/4)/(3/4) = 1.
    """
    metrics = preference_metrics(
        [1.0, -0.5, 2.0, 0.0],
        modalities=["text", "text", "vision", "vision"],
        score_chosen=[1.0, 2.0, 1.0 + THREE_QUARTERS, None],
        score_rejected=[1.0, 2.0, 1.0, None],
        eta=ETA,
    )
    expected = {
        "accuracy": 0.5,
        "mean_margin": 0.625,
        "quality_weighted_accuracy": 5 / 7,
        "n": 4.0,
        "text/accuracy": 0.5,
        "text/mean_margin": 0.25,
        "text/quality_weighted_accuracy": 0.5,
        "text/n": 2.0,
        "vision/accuracy": 0.5,
        "vision/mean_margin": 1.0,
        "vision/quality_weighted_accuracy": 1.0,
        "vision/n": 2.0,
    }
    assert metrics == pytest.approx(expected)


def test_without_scores_the_weighted_accuracy_is_undefined():
    metrics = preference_metrics([1.0, 2.0])
    assert metrics["accuracy"] == 1.0
    assert math.isnan(metrics["quality_weighted_accuracy"])
    assert not any("/" in key for key in metrics)


def test_a_pair_the_scores_call_worse_weighs_less():
    """Same margins, a won pair with S_w < S_l: its weight σ(-0.7·4) is small, so losing the
    other (well-separated) pair costs more than accuracy alone says."""
    metrics = preference_metrics([1.0, -1.0], score_chosen=[0.0, 4.0], score_rejected=[4.0, 0.0])
    assert metrics["accuracy"] == 0.5
    assert metrics["quality_weighted_accuracy"] < 0.1


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        preference_metrics([1.0], modalities=["text", "text"])


def test_benchmark_reads_pairs_and_scores_margins(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "a", "prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "score_chosen": 8,
         "score_rejected": 2, "modality": "text"},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "modality": "math"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bench = Preference()
    data = bench.load(path)
    assert [item["id"] for item in data.items] == ["a", "1"]
    sample = to_sample(data.items[0])
    assert sample.prompt == [{"role": "user", "content": "Hi"}] and sample.score_margin == 6
    records = [bench.score(data.items[0], 0.3), bench.score(data.items[1], -0.1)]
    metrics = bench.aggregate(records)
    assert metrics["accuracy"] == 0.5 and metrics["math/accuracy"] == 0.0
    assert metrics["quality_weighted_accuracy"] == 1.0  # only pair "a" has scores, and it won
