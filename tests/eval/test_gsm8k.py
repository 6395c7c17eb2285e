"""GSM8K extraction and exact match, checked against lm-evaluation-harness's rules by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eval.gsm8k import GSM8K, exact_match, normalize_for_match

EVALDATA = Path(os.environ.get("MMDPO_EVAL_DATA", "/work/shared/evaldata"))
GSM8K_TEST = EVALDATA / "gsm8k" / "test.jsonl"
GOLD = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 1234"
ITEM = {"id": "0", "question": "How many?", "answer": GOLD}


def test_reference_normalization_keeps_only_the_final_number():
    """regexes_to_ignore removes everything up to '#### ' in the reference: '1234' is left."""
    assert normalize_for_match(GOLD) == "1234"
    assert normalize_for_match("$1,234.") == "1234"
    assert normalize_for_match(None) is None


@pytest.mark.parametrize(
    ("response", "strict", "flexible"),
    [
        # strict '#### (-?[0-9.,]+)' takes '1,234.'; commas and one trailing period go.
        ("She earns 1,234 dollars.\n#### 1,234.", 1.0, 1.0),
        # '$' is outside strict's character class, so strict finds nothing; flexible's
        # '(-?[$0-9.,]{2,})' takes '$1,234.' and normalization removes '$', ',' and '.'.
        ("The total is\n#### $1,234.", 0.0, 1.0),
        # No '####' at all: strict fails, flexible takes the last number.
        ("So the answer is 1234.", 0.0, 1.0),
        # Strict takes the FIRST '####'; flexible the LAST number.
        ("#### 12\nWait, recompute: #### 1234", 0.0, 1.0),
        # Flexible takes the last number even when it is not the answer.
        ("#### 1234\nThat is 5 more than yesterday.", 1.0, 0.0),
        # Exact match is on strings: '1234.00' keeps its '.00' and does not match.
        ("#### 1234.00", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_strict_and_flexible_scores(response, strict, flexible):
    record = GSM8K().score(ITEM, response)
    assert (record["exact_match_strict"], record["exact_match_flexible"]) == (strict, flexible)
    assert record["score"] == strict
    assert record["gold"] == "1234"


def test_negative_answers_and_case():
    assert exact_match("-3", "blah #### -3")
    assert not exact_match("3", "blah #### -3")
    assert not exact_match(None, "#### 3")


def test_aggregate_is_the_mean_of_each_extraction():
    """Records (strict, flexible): (1,1) (0,1) (0,0) (1,1) -> strict 2/4, flexible 3/4."""
    bench = GSM8K()
    responses = ["#### 1234", "1234", "no idea", "#### 1,234"]
    records = [bench.score(ITEM, response) for response in responses]
    assert bench.aggregate(records) == {"exact_match_strict": 0.5, "exact_match_flexible": 0.75}


def test_generated_sample_is_seeded_marked_and_solvable(monkeypatch):
    monkeypatch.delenv("MMDPO_EVAL_DATA", raising=False)
    bench = GSM8K()
    first, second = bench.load(limit=12), bench.load(limit=12)
    assert first.generated and first.source.startswith("generated:gsm8k")
    assert "MMDPO_EVAL_DATA" in first.note
    assert [item["question"] for item in first.items] == [i["question"] for i in second.items]
    assert first.sha256 == second.sha256
    assert [item["id"] for item in first.items] == [str(i) for i in range(12)]
    # Each generated solution ends '#### N', so scoring it against itself is exact.
    records = [bench.score(item, item["answer"]) for item in first.items]
    assert bench.aggregate(records)["exact_match_strict"] == 1.0


def test_prompt_is_one_user_turn_with_the_instruction():
    prompt = GSM8K().build_prompt(ITEM)
    assert prompt.images == []
    assert [m["role"] for m in prompt.messages] == ["user"]
    assert prompt.text.startswith("How many?") and "####" in prompt.text


@pytest.mark.skipif(not GSM8K_TEST.is_file(), reason=f"real GSM8K test file absent: {GSM8K_TEST}")
def test_real_test_file_loads_with_line_index_ids():
    data = GSM8K().load(GSM8K_TEST.parent.parent)
    assert not data.generated and data.source == str(GSM8K_TEST)
    assert data.sha256 == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    assert len(data.items) == 1319
    first_line = json.loads(GSM8K_TEST.read_text().splitlines()[0])
    assert data.items[0] == {"id": "0", **first_line}
    assert normalize_for_match(data.items[0]["answer"]) == "18"
    assert len(GSM8K().load(GSM8K_TEST, limit=7).items) == 7
