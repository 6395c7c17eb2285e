"""--predictions: join on the benchmark's own id, report every problem with file:line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eval.predictions import score_predictions
from eval.results import format_table

EVALDATA = Path(os.environ.get("MMDPO_EVAL_DATA", "/work/shared/evaldata"))
GSM8K_TEST = EVALDATA / "gsm8k" / "test.jsonl"


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def gsm8k_data(tmp_path):
    """A three-problem GSM8K-format file; ids are the line indices 0, 1, 2."""
    rows = [
        {"question": "1+1?", "answer": "1+1=2\n#### 2"},
        {"question": "2*500?", "answer": "2*500=1000\n#### 1,000"},
        {"question": "5-9?", "answer": "5-9=-4\n#### -4"},
    ]
    return _write_jsonl(tmp_path / "test.jsonl", rows)


@pytest.mark.skipif(not GSM8K_TEST.is_file(), reason=f"real GSM8K test file absent: {GSM8K_TEST}")
def test_round_trip_on_the_real_gsm8k_test_file(tmp_path):
    """Gold solutions as predictions score 1.0; three wrong ones out of 1319 cost 3/1319."""
    lines = GSM8K_TEST.read_text().splitlines()
    gold = [
        {"id": index, "response": json.loads(line)["answer"]} for index, line in enumerate(lines)
    ]
    exact = score_predictions("gsm8k", _write_jsonl(tmp_path / "gold.jsonl", gold), GSM8K_TEST)
    assert exact.n == 1319 and not exact.generated
    assert exact.metrics == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}
    assert exact.sha256 == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"

    wrong = [dict(row) for row in gold]
    wrong[0]["response"] = "#### 17"  # gold 18
    wrong[5]["response"] = "I think it is #### 0"
    wrong[1318]["response"] = "no answer"
    result = score_predictions("gsm8k", _write_jsonl(tmp_path / "wrong.jsonl", wrong), GSM8K_TEST)
    assert result.metrics["exact_match_strict"] == pytest.approx(1316 / 1319)
    assert [r["id"] for r in result.records if r["score"] == 0.0] == ["0", "5", "1318"]
    summary = json.loads(result.save(tmp_path / "out").read_text())
    assert summary["n"] == 1319 and summary["source"] == str(GSM8K_TEST)
    assert summary["extra"]["predictions"] == str(tmp_path / "wrong.jsonl")
    assert len((tmp_path / "out" / "gsm8k.samples.jsonl").read_text().splitlines()) == 1319


def test_scores_and_keeps_data_order(tmp_path, gsm8k_data):
    predictions = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "2", "response": "#### -4"},
            {"id": 0, "response": "#### 2"},
            {"id": 1, "response": "1000"},
        ],
    )
    result = score_predictions("gsm8k", predictions, gsm8k_data, model="elsewhere")
    assert [record["id"] for record in result.records] == ["0", "1", "2"]
    assert result.metrics == {"exact_match_strict": 2 / 3, "exact_match_flexible": 1.0}
    assert result.model == "elsewhere" and result.artifacts == {}


def test_unknown_ids_are_reported_with_file_and_line(tmp_path, gsm8k_data):
    path = _write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": 0, "response": "#### 2"}, {"id": 1, "response": "x"}, {"id": 2, "response": "x"},
         {"id": 7, "response": "x"}],
    )  # fmt: skip
    with pytest.raises(ValueError, match=rf"1 prediction id\(s\) not in gsm8k .*{path}:4: 7"):
        score_predictions("gsm8k", path, gsm8k_data)


def test_duplicates_and_malformed_rows(tmp_path, gsm8k_data):
    path = _write_jsonl(
        tmp_path / "dup.jsonl", [{"id": 0, "response": "a"}, {"id": "0", "response": "b"}]
    )
    with pytest.raises(ValueError, match=rf"{path}:2: id 0 already given at line 1"):
        score_predictions("gsm8k", path, gsm8k_data)
    path = _write_jsonl(tmp_path / "noresp.jsonl", [{"id": 0, "text": "a"}])
    with pytest.raises(ValueError, match=rf"{path}:1: no 'response' field"):
        score_predictions("gsm8k", path, gsm8k_data)
    path = _write_jsonl(tmp_path / "noid.jsonl", [{"response": "a"}])
    with pytest.raises(ValueError, match=rf"{path}:1: no id"):
        score_predictions("gsm8k", path, gsm8k_data)
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": 0, "response": "a"}\n\n{"id": 1, "response": \n')
    with pytest.raises(ValueError, match=rf"{path}:3: invalid JSON"):
        score_predictions("gsm8k", path, gsm8k_data)
    path = _write_jsonl(tmp_path / "num.jsonl", [{"id": 0, "response": 2}])
    with pytest.raises(ValueError, match=rf"{path}:1: response must be a string"):
        score_predictions("gsm8k", path, gsm8k_data)


def test_missing_predictions_fail_unless_allowed(tmp_path, gsm8k_data):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": 1, "response": "#### 1000"}])
    with pytest.raises(ValueError, match=r"no prediction for 2 of 3 samples .*\['0', '2'\]"):
        score_predictions("gsm8k", path, gsm8k_data)
    result = score_predictions("gsm8k", path, gsm8k_data, allow_missing=True)
    assert result.n == 1 and result.metrics["exact_match_strict"] == 1.0
    assert result.extra["missing"] == 2 and result.extra["missing_ids"] == ["0", "2"]
    # With --limit 2, the sample at index 2 is out of scope: only "0" is missing.
    limited = score_predictions("gsm8k", path, gsm8k_data, limit=2, allow_missing=True)
    assert limited.extra["missing_ids"] == ["0"]


def test_upstream_id_names_and_other_benchmarks(tmp_path):
    pope = _write_jsonl(
        tmp_path / "pope.jsonl",
        [{"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"},
         {"question_id": 2, "image": "a.jpg", "text": "Is there a cat?", "label": "no"}],
    )  # fmt: skip
    answers = _write_jsonl(
        tmp_path / "a.jsonl",
        [{"question_id": 1, "response": "Yes."}, {"question_id": 2, "response": "Yes, a cat."}],
    )
    result = score_predictions("pope", answers, pope)
    assert result.metrics["accuracy"] == 0.5 and result.metrics["yes_ratio"] == 1.0
    # preference: the "response" is the margin.
    pairs = _write_jsonl(
        tmp_path / "pairs.jsonl", [{"id": "x", "prompt": "p", "chosen": "a", "rejected": "b"}]
    )
    margins = _write_jsonl(tmp_path / "m.jsonl", [{"id": "x", "margin": 0.5}])
    assert score_predictions("preference", margins, pairs).metrics["accuracy"] == 1.0
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "margin": "high"}])
    with pytest.raises(ValueError, match="margin must be a number"):
        score_predictions("preference", bad, pairs)


def test_mt_bench_list_responses_export(tmp_path):
    questions = _write_jsonl(tmp_path / "q.jsonl", [{"question_id": 81, "turns": ["A?", "B?"]}])
    answers = _write_jsonl(tmp_path / "a.jsonl", [{"question_id": 81, "response": ["a", "b"]}])
    result = score_predictions("mt_bench", answers, questions, model="m")
    result.save(tmp_path / "out")
    answer = json.loads((tmp_path / "out" / "mt_bench" / "model_answer" / "m.jsonl").read_text())
    assert answer["choices"][0]["turns"] == ["a", "b"]


def test_generated_data_is_flagged_in_errors_and_tables(tmp_path, monkeypatch):
    monkeypatch.delenv("MMDPO_EVAL_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": 5000, "response": "#### 1"}])
    with pytest.raises(ValueError, match="GENERATED stand-in"):
        score_predictions("gsm8k", path)
    rows = [{"id": i, "response": "#### 0"} for i in range(50)]
    result = score_predictions("gsm8k", _write_jsonl(tmp_path / "g.jsonl", rows))
    assert result.generated
    table = format_table([result])
    assert "GENERATED sample" in table and "exact_match_strict" in table
