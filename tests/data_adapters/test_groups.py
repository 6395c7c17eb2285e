"""Calibration groups: a file's stem by default, a row's or the config's source when given,
held-out files joining the training group, and the groups as users see them."""

from __future__ import annotations

import pytest

from data_adapters import DataError, adopt_training_sources, format_inspection, load_samples
from data_adapters.loaders import describe_source
from data_adapters.validation import default_source
from mmdpo.calibration import fit_calibration, format_groups
from tests.data_adapters.conftest import write_jsonl


def scored_rows(scores, prefix="q"):
    return [
        {
            "prompt": f"{prefix} {i}?",
            "chosen": f"good {i}",
            "rejected": f"bad {i}",
            "score_chosen": chosen,
            "score_rejected": rejected,
        }
        for i, (chosen, rejected) in enumerate(scores)
    ]


JUDGE = [(8, 3), (9, 5), (7, 2), (6, 4)]  # a judge's 0-10 scale
REWARD = [(80, 30), (95, 50), (70, 20)]  # a reward model's 0-100 scale


def test_two_files_without_source_give_two_groups(tmp_path):
    """Pooled, zscore would put both scales in one mean and std; per file it does not."""
    judge = write_jsonl(tmp_path / "judge.jsonl", scored_rows(JUDGE))
    reward = write_jsonl(tmp_path / "reward_model.jsonl", scored_rows(REWARD, "t"))
    samples = load_samples(judge, "trl").samples + load_samples(reward, "trl").samples
    assert {s.source for s in samples} == {"judge", "reward_model"}
    calibration = fit_calibration(samples, "zscore")
    assert set(calibration.groups) == {("text", "judge"), ("text", "reward_model")}
    # judge pooled: 8 9 7 6 3 5 2 4 -> mean 5.5; reward: 80 95 70 30 50 20 -> mean 57.5
    assert calibration.groups[("text", "judge")].mean == pytest.approx(5.5)
    assert calibration.groups[("text", "reward_model")].mean == pytest.approx(57.5)
    assert calibration.groups[("text", "judge")].pairs == 4
    lines = format_groups(calibration).splitlines()
    assert lines[1].startswith("  text/judge: 4 pairs, mean 5.5, std 2.291, auto tau_good ")
    assert lines[2].startswith("  text/reward_model: 3 pairs, mean 57.5, std 26.73, auto tau_good ")


def test_a_rows_source_field_wins_over_the_stem_and_the_config_over_both(tmp_path):
    rows = scored_rows(JUDGE[:2])
    rows[1]["source"] = "gpt4-judge"
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = load_samples(path, "trl")
    assert [s.source for s in result.samples] == ["mixed", "gpt4-judge"]
    assert result.default_source == "mixed"
    named = load_samples(path, "trl", source_name="judge")
    assert [s.source for s in named.samples] == ["judge", "judge"]
    assert named.default_source is None


def test_a_source_column_can_be_mapped_and_a_bad_one_is_a_row_problem(tmp_path):
    rows = [dict(row, origin="rm") for row in scored_rows(JUDGE[:1])]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_samples(path, "trl", columns={"source": "origin"}).samples[0].source == "rm"
    bad = write_jsonl(tmp_path / "bad.jsonl", [dict(rows[0], source={"name": "rm"})])
    with pytest.raises(DataError, match=r"bad.jsonl:1: source: expected a non-empty source name"):
        load_samples(bad, "trl")


def test_default_names_of_hub_datasets_and_lists():
    hub = describe_source("HuggingFaceH4/ultrafeedback_binarized:train_prefs")
    assert default_source(hub, "ultrafeedback") == "ultrafeedback_binarized"  # splits share it
    assert default_source(describe_source([{}]), "trl") == "trl"
    rows = scored_rows(JUDGE[:1])
    assert load_samples(rows, "trl").samples[0].source == "trl"


def test_inspect_shows_one_line_per_group(tmp_path):
    judge = write_jsonl(tmp_path / "judge.jsonl", scored_rows(JUDGE))
    reward = write_jsonl(tmp_path / "reward_model.jsonl", scored_rows(REWARD, "t"))
    samples = load_samples(judge, "trl").samples + load_samples(reward, "trl").samples
    from data_adapters import inspect_samples

    text = format_inspection(inspect_samples(samples))
    # raw tau_good: the median chosen score, 7.5 of (6 7 8 9) and 80 of (70 80 95)
    lines = text.splitlines()
    assert "  text/judge: 4 pairs, mean 5.5, std 2.291, auto tau_good 7.5" in lines
    assert "  text/reward_model: 3 pairs, mean 57.5, std 26.73, auto tau_good 80" in lines


def test_held_out_file_joins_the_one_training_group(tmp_path):
    train = load_samples(write_jsonl(tmp_path / "uf_train.jsonl", scored_rows(JUDGE)), "trl")
    held_out = load_samples(write_jsonl(tmp_path / "uf_test.jsonl", scored_rows(JUDGE[:2])), "trl")
    notes = adopt_training_sources(train.samples, held_out, "uf_test.jsonl")
    assert {s.source for s in held_out.samples} == {"uf_train"}
    assert notes == ["held-out uf_test.jsonl (uf_test) joins the calibration group text/uf_train"]


def test_held_out_file_with_several_training_groups_must_name_one(tmp_path):
    judge = write_jsonl(tmp_path / "judge.jsonl", scored_rows(JUDGE))
    reward = write_jsonl(tmp_path / "rm.jsonl", scored_rows(REWARD, "t"))
    train = load_samples(judge, "trl").samples + load_samples(reward, "trl").samples
    path = write_jsonl(tmp_path / "test.jsonl", scored_rows(JUDGE[:2]))
    held_out = load_samples(path, "trl")
    with pytest.raises(DataError, match=r"several text sources \(judge, rm\); set `source:`"):
        adopt_training_sources(train, held_out, "test.jsonl", required=True)
    # Without calibration or tau_good: auto the group does not matter; nothing moves.
    assert adopt_training_sources(train, held_out, "test.jsonl", required=False) == []
    assert {s.source for s in held_out.samples} == {"test"}
    # A source the data or the config gave is never moved.
    named = load_samples(path, "trl", source_name="judge-v2")
    assert adopt_training_sources(train, named, "test.jsonl") == []
