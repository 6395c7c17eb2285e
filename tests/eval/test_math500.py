"""MATH-500 and math_jsonl: math-verify reads the response and checks it, gold first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eval.math500 import Math500, MathJsonl

EVALDATA = Path(os.environ.get("MMDPO_EVAL_DATA", "/work/shared/evaldata"))
MATH500_TEST = EVALDATA / "math500" / "test.jsonl"


@pytest.mark.parametrize(
    ("response", "gold", "correct", "extracted"),
    [
        ("So $x = \\frac12$, i.e. \\boxed{0.5}.", "\\frac{1}{2}", True, "\\frac{1}{2}"),
        (
            "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            True,
            "( 3, \\frac{\\pi}{2} )",  # the text math-verify kept, normalised
        ),
        ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", True, "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{1,000}", "1000", True, "1,000"),
        # Two boxes are one set of answers to math-verify: right for neither.
        ("First \\boxed{4}, no wait: \\boxed{3}.", "4", False, "4,3"),
        ("First \\boxed{4}, no wait: \\boxed{3}.", "3", False, "4,3"),
        # An unclosed box still holds the answer (our last number would be 3).
        ("So \\boxed{\\frac{14}{3}", "\\frac{14}{3}", True, "{\\frac{14}{3}"),
        ("So \\boxed{\\frac{14}{3}", "3", False, "{\\frac{14}{3}"),
        # No box: the last number is the answer.
        ("The answer is 42.", "42", True, "42"),
        ("", "3", False, None),
    ],
)
def test_score_is_math_verifys_reading_of_the_response(response, gold, correct, extracted):
    item = {"id": "test/algebra/1.json", "problem": "p", "answer": gold, "level": 3}
    record = Math500().score(item, response)
    assert record["score"] == float(correct)
    assert record["extracted"] == extracted
    assert record["id"] == "test/algebra/1.json" and record["level"] == 3


def test_aggregate_overall_and_per_level():
    """Levels 1: [1, 0] -> 0.5; 2: [1] -> 1.0; overall 2/3."""
    records = [{"score": 1.0, "level": 1}, {"score": 0.0, "level": 1}, {"score": 1.0, "level": 2}]
    metrics = Math500().aggregate(records)
    assert metrics == pytest.approx(
        {"accuracy": 2 / 3, "accuracy_level_1": 0.5, "accuracy_level_2": 1.0}
    )


def test_math_jsonl_reads_any_problem_answer_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"problem": "1+1?", "answer": "2"}, {"id": "q7", "problem": "2*3?", "answer": 6}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = MathJsonl().load(path)
    assert [item["id"] for item in data.items] == ["0", "q7"]
    assert data.items[1]["answer"] == "6" and not data.generated
    assert MathJsonl().score(data.items[1], "\\boxed{6}")["score"] == 1.0


def test_math_jsonl_requires_data_and_fields(tmp_path):
    with pytest.raises(ValueError, match="needs --data"):
        MathJsonl().load()
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"row 1: missing field\(s\) \['problem'\]"):
        MathJsonl().load(path)


def test_generated_fallback_is_marked(monkeypatch):
    monkeypatch.delenv("MMDPO_EVAL_DATA", raising=False)
    data = Math500().load(limit=4)
    assert data.generated and len(data.items) == 4
    assert data.items[0]["id"] == "generated/0"
    record = Math500().score(data.items[0], f"\\boxed{{{data.items[0]['answer']}}}")
    assert record["score"] == 1.0


@pytest.mark.skipif(not MATH500_TEST.is_file(), reason=f"real MATH-500 absent: {MATH500_TEST}")
def test_real_math500_loads_with_unique_ids():
    data = Math500().load(MATH500_TEST)
    assert len(data.items) == 500 and not data.generated
    assert data.sha256 == "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"
    assert data.items[0]["id"] == "test/precalculus/807.json"
    assert len({item["id"] for item in data.items}) == 500
    bench = Math500()
    records = [bench.score(item, f"\\boxed{{{item['answer']}}}") for item in data.items[:10]]
    assert bench.aggregate(records)["accuracy"] == 1.0
