"""The pair-building core: one deduplication, one NaN rule, one report, two pairing rules."""

import copy
import math

import pytest

from datagen.pairing import (
    BestVsWorst,
    Candidate,
    PairReport,
    PaperMathRule,
    ResponseGroup,
    build_pairs,
    distinct_responses,
)


def test_distinct_responses_keeps_the_first_copy_and_counts_the_rest():
    """ "a" at 0; " a\\n" repeats it (whitespace-normalised); "" and "  " are empty; "a b" and
    "a  b" are one text; "b" is new."""
    report = PairReport()
    distinct = distinct_responses(["a", " a\n", "", "a b", "  ", "a  b", "b"], report)
    assert [(c.index, c.text) for c in distinct] == [(0, "a"), (3, "a b"), (6, "b")]
    assert all(math.isnan(c.score) and c.correct is None for c in distinct)
    assert (report.duplicates_dropped, report.empty_dropped) == (2, 2)


def candidates(*rows):
    """Candidates from (score, correct) rows, indexed in order."""
    return [Candidate(i, f"r{i}", score, correct) for i, (score, correct) in enumerate(rows)]


def test_paper_math_rule_by_hand():
    rule = PaperMathRule(min_chosen_score=6.0)
    # best correct r1 (9); correct ones below 9: r2 (7), r3 (8) -> the lowest, r2.
    chosen, rejected = rule.select(candidates((1, False), (9, True), (7, True), (8, True)))
    assert (chosen.index, rejected.index) == (1, 2)
    assert rule.tally(chosen, rejected) == "rejected_correct"
    # r0 and r2 tie at 8 (r0 wins); none lower, so the lowest incorrect, r3 (0) over r1 (5).
    chosen, rejected = rule.select(candidates((8, True), (5, False), (8, True), (0, False)))
    assert (chosen.index, rejected.index) == (0, 3)
    assert rule.tally(chosen, rejected) == "rejected_incorrect"
    assert rule.select(candidates((9, False), (8, False))) == "no_correct"
    assert rule.select(candidates((6, True), (1, False))) == "no_chosen"  # 6 is not above 6
    assert rule.select(candidates((9, True), (9, True))) == "no_rejected"
    assert rule.select([]) == "no_correct"


def test_best_vs_worst_rule_by_hand():
    rule = BestVsWorst()
    # best: 5 at r1 and r3 -> r1; worst: 1 at r0 and r2 -> r0.
    chosen, rejected = rule.select(candidates((1, None), (5, None), (1, None), (5, None)))
    assert (chosen.index, rejected.index) == (1, 0)
    assert rule.tally(chosen, rejected) is None
    assert rule.select(candidates((3, None), (3, None))) == "all_tied"
    assert rule.select(candidates((3, None))) == "too_few_distinct"


def group(gid, responses, **kwargs):
    return ResponseGroup(gid, "Q?", responses, "text", **kwargs)


def test_build_pairs_rates_once_drops_nan_and_counts_every_prompt_once():
    """Scores by text: a=1, b=NaN, c=3, d=2. g1: a, b (NaN, dropped), c, a copy of c, "" ->
    (c, a). g2: b and d: d alone is left, too few. g3: d, d: one distinct, too few.
    g4: a, a: too few. The rating function runs once, on the distinct responses of all."""
    value = {"a": 1.0, "b": math.nan, "c": 3.0, "d": 2.0}
    calls = []

    def rate(groups, distinct):
        calls.append([[c.text for c in row] for row in distinct])
        for row in distinct:
            for candidate in row:
                candidate.score = value[candidate.text.strip()]

    groups = [
        group("g1", ["a", "b", "c", " c", ""], images=["x.png"], meta={"k": 1}),
        group("g2", ["b", "d"]),
        group("g3", ["d", "d"]),
        group("g4", ["a", "a"]),
    ]
    samples, report = build_pairs(groups, rate, BestVsWorst(), source="s")
    assert calls == [[["a", "b", "c"], ["b", "d"], ["d"], ["a"]]]
    (sample,) = samples
    assert (sample.id, sample.chosen, sample.rejected) == ("g1", "c", "a")
    assert (sample.score_chosen, sample.score_rejected) == (3.0, 1.0)
    assert (sample.images, sample.modality, sample.source) == (["x.png"], "text", "s")
    assert sample.meta == {
        "k": 1,
        "index_chosen": 2,
        "index_rejected": 0,
        "num_responses": 5,
        "num_unique_responses": 3,  # the NaN-scored "b" is a distinct response
    }
    assert report.counts() == {
        "prompts": 4,
        "responses": 11,
        "pairs": 1,
        "duplicates_dropped": 3,
        "empty_dropped": 1,
        "nan_score_dropped": 2,
        "too_few_distinct": 3,
        "all_tied": 0,
        "no_pair": 3,
    }
    assert report.pairs + sum(report.rule_counts.values()) == report.prompts


def test_math_pairs_carry_how_each_side_was_graded():
    def rate(groups, distinct):
        for row in distinct:
            for candidate in row:
                candidate.correct = candidate.text.startswith("right")
                candidate.answer = candidate.text.split()[-1]
                candidate.score = 9.0 if candidate.correct else 1.0

    groups = [group("m", ["wrong 3", "right 2"], meta={"gold": "2"})]
    (sample,), report = build_pairs(groups, rate, PaperMathRule(), source="m")
    assert list(sample.meta) == [
        "gold", "correct_chosen", "correct_rejected", "answer_chosen", "answer_rejected",
        "index_chosen", "index_rejected", "num_responses", "num_unique_responses",
    ]  # fmt: skip
    assert (sample.meta["answer_chosen"], sample.meta["answer_rejected"]) == ("2", "3")
    assert (report.rejected_incorrect, report.rejected_correct) == (1, 0)


def test_report_counts_read_as_attributes():
    report = PairReport(prompts=3, pairs=1, rule_counts={"no_correct": 2})
    assert (report.no_correct, report.no_pair, report.problems) == (2, 2, 3)
    with pytest.raises(AttributeError, match="no count 'all_tied'"):
        _ = report.all_tied
    assert copy.deepcopy(report) == report
