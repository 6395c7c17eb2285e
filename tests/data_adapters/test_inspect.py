"""Inspection: counts, score statistics per group, examples."""

from __future__ import annotations

import pytest

from data_adapters import format_inspection, inspect_samples, render_sample
from data_adapters.inspect import example_indices, percentiles
from mmdpo.types import PreferenceSample


def sample(i: int, modality="text", source="uf", scores=(None, None), images=()):
    return PreferenceSample(
        id=f"s{i}",
        prompt=f"question {i}",
        chosen=f"good answer {i}",
        rejected=f"bad {i}",
        images=list(images),
        score_chosen=scores[0],
        score_rejected=scores[1],
        modality=modality,
        source=source,
    )


def test_counts_and_score_groups():
    samples = [
        sample(0, scores=(8.0, 2.0)),
        sample(1, scores=(6.0, 4.0)),
        sample(2, scores=(3.0, 5.0)),  # inverted
        sample(3, modality="math", source="prm", scores=(9.0, 1.0)),
        sample(4, modality="vision", source="vlf", images=["/a.png"]),
    ]
    report = inspect_samples(samples)
    assert report.total == 5
    assert report.per_modality == {"text": 3, "math": 1, "vision": 1}
    assert report.with_images == 1 and report.images == 1
    groups = {(g.modality, g.source): g for g in report.score_groups}
    text = groups[("text", "uf")]
    assert (text.pairs, text.scored, text.inverted) == (3, 3, 1)
    # chosen 8, 6, 3: mean 17/3, median 6; margins 6, 2, -2: mean 2
    assert text.chosen.mean == pytest.approx(17 / 3)
    assert text.chosen.median == 6.0 and text.chosen.min == 3.0 and text.chosen.max == 8.0
    assert text.margin.mean == pytest.approx(2.0)
    vision = groups[("vision", "vlf")]
    assert vision.scored == 0 and vision.chosen is None
    assert len(report.examples) == 3
    # "question 0".."question 4" are 10 characters each, roles and image parts not counted
    assert report.char_lengths["prompt"][50] == 10.0


def test_examples_are_evenly_spaced_and_rendered():
    assert example_indices(10, 3) == [0, 4, 9]  # round(4.5) == 4
    assert example_indices(2, 3) == [0, 1]
    text = render_sample(sample(7, scores=(2.0, 1.0), images=["/x.png"]))
    assert text.splitlines() == [
        "--- s7 (text, uf, scores 2 / 1)",
        "[user] question 7",
        "images: /x.png",
        "[chosen] good answer 7",
        "[rejected] bad 7",
    ]


def test_image_parts_render_as_placeholders():
    s = sample(1)
    s.prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    assert "[user] <image>Hi" in render_sample(s)


def test_percentiles_interpolate_like_numpy():
    # ranks 0..4 of [1, 2, 3, 4, 100]: p50 -> 3, p90 -> rank 3.6 -> 4 + 0.6 * 96
    assert percentiles([100, 1, 3, 2, 4], (50, 90, 100)) == {
        50: 3.0,
        90: pytest.approx(61.6),
        100: 100.0,
    }
    assert percentiles([]) == {}


def test_format_inspection_text_has_every_section():
    samples = [sample(i, scores=(5.0, 1.0)) for i in range(4)]
    report = inspect_samples(samples)
    report.token_lengths = {"chosen": {50: 12.0}}
    text = format_inspection(report)
    assert text.splitlines()[0] == "4 samples"
    assert "per modality: text: 4" in text
    assert "  text/uf: 4 of 4 pairs scored" in text
    assert "length in characters (percentiles):" in text
    assert "length in tokens (percentiles):\n  chosen   p50=12" in text
    assert text.count("--- s") == 3
