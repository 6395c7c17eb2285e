"""The math pair builder: the paper's chosen/rejected rule, deduplication, never a self-pair."""

import math
import random

import pytest

from datagen.math_pairs import MathProblem, build_math_pairs

GOLD = r"\frac{1}{2}"
RIGHT_A = r"Half of 1 is \boxed{\frac{1}{2}}."
RIGHT_B = r"1/2 = 0.5, so \boxed{0.5}."
RIGHT_C = r"Dividing, we get \boxed{\dfrac{1}{2}}"
WRONG_A = r"So the answer is \boxed{2}."
WRONG_B = r"The result is \boxed{\frac{1}{3}}."
PROMPT = "What is 1 divided by 2?"


def problem(responses, scores=None, **kwargs):
    return MathProblem(
        id=kwargs.pop("id", "p0"),
        prompt=kwargs.pop("prompt", PROMPT),
        gold=GOLD,
        responses=responses,
        scores=scores,
        **kwargs,
    )


def build_one(responses, scores=None, **kwargs):
    result = build_math_pairs([problem(responses, scores)], workers=1, **kwargs)
    return result.samples, result.report


def test_best_correct_chosen_lower_correct_rejected():
    """PRM scores: correct 9.0, 7.5, 8.0 and incorrect 3.0.

    chosen = best correct = RIGHT_A (9.0 > 6); a correct response scoring below 9.0 exists, so
    rejected = the lowest of them, RIGHT_B (7.5), preferred over the incorrect WRONG_A (3.0).
    """
    samples, report = build_one([RIGHT_A, RIGHT_B, WRONG_A, RIGHT_C], [9.0, 7.5, 3.0, 8.0])
    assert len(samples) == 1
    sample = samples[0]
    assert (sample.chosen, sample.rejected) == (RIGHT_A, RIGHT_B)
    assert (sample.score_chosen, sample.score_rejected) == (9.0, 7.5)
    assert sample.meta["correct_chosen"] is True and sample.meta["correct_rejected"] is True
    assert (sample.meta["index_chosen"], sample.meta["index_rejected"]) == (0, 1)
    assert report.rejected_correct == 1 and report.rejected_incorrect == 0


def test_incorrect_rejected_when_no_lower_correct():
    """Correct 8.0 and 8.0 (ties, not lower), incorrect 5.0 and 1.0.

    chosen = RIGHT_A (index 0 wins the 8.0 tie); no correct response scores below 8.0, so
    rejected = the lowest-scoring incorrect one, WRONG_B (1.0), even though it is listed last.
    """
    samples, report = build_one([RIGHT_A, WRONG_A, RIGHT_B, WRONG_B], [8.0, 5.0, 8.0, 1.0])
    sample = samples[0]
    assert (sample.chosen, sample.rejected) == (RIGHT_A, WRONG_B)
    assert sample.meta["correct_rejected"] is False
    assert (sample.score_chosen, sample.score_rejected) == (8.0, 1.0)
    assert report.rejected_incorrect == 1


def test_no_correct_response_above_six_gives_no_pair():
    """Best correct scores 6.0, not above 6: no pair, counted as no_chosen."""
    samples, report = build_one([RIGHT_A, RIGHT_B, WRONG_A], [6.0, 4.0, 2.0])
    assert samples == []
    assert (report.no_chosen, report.no_pair, report.pairs) == (1, 1, 0)


def test_threshold_is_configurable_and_strict():
    samples, _ = build_one([RIGHT_A, WRONG_A], [6.0, 2.0], min_chosen_score=5.9)
    assert len(samples) == 1
    samples, _ = build_one([RIGHT_A, WRONG_A], [5.9, 2.0], min_chosen_score=5.9)
    assert samples == []


def test_no_correct_response_counted():
    samples, report = build_one([WRONG_A, WRONG_B, "I give up."], [9.0, 8.0, 7.0])
    assert samples == []
    assert report.no_correct == 1 and report.no_pair == 1


def test_all_identical_responses_never_self_pair():
    """K = 8 copies of one correct response (whitespace differs): 7 duplicates, no pair."""
    responses = [RIGHT_A, RIGHT_A + "\n", "  " + RIGHT_A] + [RIGHT_A] * 5
    samples, report = build_one(responses, [9.0] * 8)
    assert samples == []
    assert report.duplicates_dropped == 7
    assert report.no_rejected == 1


def test_duplicates_dropped_before_pairing():
    """RIGHT_A, then a copy with a double space (9.0, 7.0): the copy is dropped, never rejected.

    Left: RIGHT_A 9.0 and WRONG_A 2.0, giving (RIGHT_A, WRONG_A), not (RIGHT_A, RIGHT_A).
    """
    samples, report = build_one(
        [RIGHT_A, "Half of 1 is  \\boxed{\\frac{1}{2}}.", WRONG_A], [9.0, 7.0, 2.0]
    )
    assert report.duplicates_dropped == 1
    assert (samples[0].chosen, samples[0].rejected) == (RIGHT_A, WRONG_A)
    assert samples[0].meta["num_unique_responses"] == 2


def test_empty_responses_dropped():
    samples, report = build_one([" ", RIGHT_A, "", WRONG_A], [9.0, 8.0, 9.0, 1.0])
    assert report.empty_dropped == 2
    assert (samples[0].chosen, samples[0].rejected) == (RIGHT_A, WRONG_A)


def test_chosen_and_rejected_always_differ_on_random_problems():
    """Property: over many random score draws, a pair never holds one text twice."""
    rng = random.Random(0)
    texts = [RIGHT_A, RIGHT_B, RIGHT_C, WRONG_A, WRONG_B]
    problems = []
    for index in range(40):
        responses = [rng.choice(texts) for _ in range(8)]
        scores = [round(rng.uniform(0, 10), 1) for _ in range(8)]
        problems.append(problem(responses, scores, id=f"p{index}"))
    result = build_math_pairs(problems, workers=2)
    assert result.samples
    for sample in result.samples:
        assert sample.chosen.split() != sample.rejected.split()
        assert sample.score_chosen > 6.0
        assert sample.meta["correct_chosen"] is True
        if sample.meta["correct_rejected"]:
            assert sample.score_rejected < sample.score_chosen
    report = result.report
    assert report.pairs + report.no_correct + report.no_chosen + report.no_rejected == 40


def test_rule_score_without_scores():
    """No scores: 10 if correct else 0; all correct tie at 10, so first correct vs first wrong."""
    samples, _ = build_one([WRONG_A, RIGHT_B, RIGHT_A, WRONG_B])
    sample = samples[0]
    assert (sample.chosen, sample.rejected) == (RIGHT_B, WRONG_A)
    assert (sample.score_chosen, sample.score_rejected) == (10.0, 0.0)


def test_scorer_callable_receives_prompt_response_and_correctness():
    """Scorer: 7 + len(response) / 100 if correct else 1.

    RIGHT_B (26 chars) -> 7.26, RIGHT_A (33 chars) -> 7.33, WRONG_A -> 1.0; chosen RIGHT_A,
    rejected the lower-scoring correct RIGHT_B.
    """
    calls = []

    def scorer(prompt, response, correct):
        calls.append((prompt, response, correct))
        return 7 + len(response) / 100 if correct else 1.0

    samples, _ = build_one([RIGHT_B, RIGHT_A, WRONG_A], scorer=scorer)
    assert sorted(calls) == sorted(
        [(PROMPT, RIGHT_B, True), (PROMPT, RIGHT_A, True), (PROMPT, WRONG_A, False)]
    )
    assert (samples[0].chosen, samples[0].rejected) == (RIGHT_A, RIGHT_B)
    assert samples[0].score_chosen == pytest.approx(7.33)
    assert samples[0].score_rejected == pytest.approx(7.26)


def test_nan_scores_dropped():
    samples, report = build_one([RIGHT_A, RIGHT_B, WRONG_A], [9.0, math.nan, 2.0])
    assert report.nan_score_dropped == 1
    assert (samples[0].chosen, samples[0].rejected) == (RIGHT_A, WRONG_A)


def test_scores_length_must_match():
    with pytest.raises(ValueError, match="2 scores for 3 responses"):
        build_one([RIGHT_A, RIGHT_B, WRONG_A], [9.0, 8.0])


def test_sample_fields_and_chat_prompt():
    messages = [
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": "What is 1 divided by 2?"},
    ]
    result = build_math_pairs(
        [problem([RIGHT_A, WRONG_A], [9.0, 1.0], id="q7", prompt=messages, meta={"level": 3})],
        source="numina",
        workers=1,
    )
    sample = result.samples[0]
    assert sample.id == "q7"
    assert sample.prompt == messages
    assert (sample.modality, sample.source) == ("math", "numina")
    assert sample.meta["level"] == 3 and sample.meta["gold"] == GOLD
    assert sample.meta["answer_chosen"] == r"\frac{1}{2}" and sample.meta["answer_rejected"] == "2"
    assert sample.meta["num_responses"] == 2


def test_deterministic_across_worker_counts_and_order_kept():
    problems = [
        problem([WRONG_A, RIGHT_A, RIGHT_B], [1.0, 9.0, 7.0], id="a"),
        problem([RIGHT_C, WRONG_B], [8.0, 2.0], id="b"),
        problem([WRONG_A], [1.0], id="c"),
        problem([RIGHT_B, WRONG_A, RIGHT_C], [7.0, 3.0, 9.5], id="d"),
    ]
    one = build_math_pairs(problems, workers=1)
    many = build_math_pairs(problems, workers=3)
    assert [s.id for s in one.samples] == ["a", "b", "d"]
    assert [(s.chosen, s.rejected) for s in one.samples] == [
        (s.chosen, s.rejected) for s in many.samples
    ]
    assert one.report == many.report
    assert (one.report.problems, one.report.responses, one.report.pairs) == (4, 9, 3)
