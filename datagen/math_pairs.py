"""Build math preference pairs from K sampled responses per problem, the way Uni-DPO does.

The paper's rule (K = 8): each response's final answer is checked against the gold answer,
each response gets a score (a process reward model's minimum step score x 10), and

- chosen = the best-scoring correct response, if its score is above ``min_chosen_score`` (6);
- rejected = the lowest-scoring correct response scoring strictly below the chosen one if
  there is one, otherwise the lowest-scoring incorrect response.

Unlike the authors' builder, a response is never paired with itself: response texts are
deduplicated (after whitespace normalisation, the first copy kept) before pairing, so chosen
and rejected always differ. One pair per problem, as in the paper. The deduplication, the
pairing and the report are the shared core's (``datagen.pairing``, rule ``PaperMathRule``).

Scores, in order of precedence: ``MathProblem.scores`` (e.g. PRM scores, used as given), else
``scorer(prompt_text, response, correct)``, else the rule score 10.0 if correct else 0.0 with
no length tie-break. Responses whose score is NaN are dropped (a NaN would poison w_qual).
Ties are broken by the order of the responses (the lower index wins), so the output is
deterministic. With the rule score every correct response scores 10, so the pair is always
(first correct, first incorrect).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from datagen.pairing import (
    Candidate,
    PairReport,
    PaperMathRule,
    ResponseGroup,
    build_pairs,
)
from mmdpo.answers import grade_math_response
from mmdpo.types import Message, PreferenceSample

Scorer = Callable[[str, str, bool], float]
Grade = tuple[bool, str | None]  # (correct, the final answer read), as grade_math_response


@dataclass
class MathProblem:
    """One problem with its sampled responses.

    Attributes:
        id: problem id; the pair's sample id.
        prompt: the problem as a user turn (a string) or chat messages.
        gold: the gold final answer ("\\frac{1}{2}", "72", or a "... #### 72" solution).
        responses: the K sampled responses.
        scores: one score per response (e.g. PRM min step score x 10), or None.
        meta: carried into each sample's meta.
    """

    id: str
    prompt: str | list[Message]
    gold: str
    responses: list[str]
    scores: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairBuildResult:
    """The pairs, and the report (``datagen.pairing.PairReport``; ``report.problems`` is its
    ``prompts``)."""

    samples: list[PreferenceSample]
    report: PairReport


def grade_responses(
    jobs: Sequence[tuple[str, str]], *, timeout_s: float | None = 5.0, workers: int | None = None
) -> list[Grade]:
    """``grade_math_response(response, gold)`` for each (response, gold), in order.

    ``workers`` threads check concurrently (math-verify runs in worker processes that
    ``mmdpo.answers`` manages; default min(4, #CPUs)); a check slower than ``timeout_s``
    counts as incorrect.
    """
    max_workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(lambda job: grade_math_response(*job, timeout_s=timeout_s), jobs))


def build_math_pairs(
    problems: Iterable[MathProblem],
    *,
    min_chosen_score: float = 6.0,
    scorer: Scorer | None = None,
    source: str = "math_pairs",
    workers: int | None = None,
    timeout_s: float | None = 5.0,
    grades: Sequence[Sequence[Grade]] | None = None,
) -> PairBuildResult:
    """One preference pair per problem where the paper's rule allows one (see module docstring).

    ``workers`` and ``timeout_s`` as in :func:`grade_responses`, which checks each distinct
    response once. ``grades``: every response's grade, problem by problem, when the caller
    has them already (``mmdpo pairs`` grades all responses once, copies included, to count
    the correct ones); then nothing is checked again.
    """
    problems = list(problems)
    for number, problem in enumerate(problems):
        if problem.scores is not None and len(problem.scores) != len(problem.responses):
            raise ValueError(
                f"problem {problem.id!r}: {len(problem.scores)} scores for "
                f"{len(problem.responses)} responses"
            )
        if grades is not None and len(grades[number]) != len(problem.responses):
            raise ValueError(
                f"problem {problem.id!r}: {len(grades[number])} grades for "
                f"{len(problem.responses)} responses"
            )
    groups = [
        ResponseGroup(
            id=str(problem.id),
            prompt=problem.prompt,
            responses=problem.responses,
            modality="math",
            meta={**problem.meta, "problem_id": problem.id, "gold": problem.gold},
        )
        for problem in problems
    ]

    def rate(_: Sequence[ResponseGroup], candidates: list[list[Candidate]]) -> None:
        if grades is None:
            jobs = [
                (candidate.text, problem.gold)
                for problem, distinct in zip(problems, candidates, strict=True)
                for candidate in distinct
            ]
            checked = iter(grade_responses(jobs, timeout_s=timeout_s, workers=workers))
        for number, (problem, distinct) in enumerate(zip(problems, candidates, strict=True)):
            for candidate in distinct:
                grade = next(checked) if grades is None else grades[number][candidate.index]
                candidate.correct, candidate.answer = bool(grade[0]), grade[1]
                candidate.score = _score(problem, candidate, scorer)

    samples, report = build_pairs(groups, rate, PaperMathRule(min_chosen_score), source=source)
    return PairBuildResult(samples=samples, report=report)


def _score(problem: MathProblem, candidate: Candidate, scorer: Scorer | None) -> float:
    """The given score, else the scorer's, else the rule score (10 correct, 0 not)."""
    if problem.scores is not None:
        return float(problem.scores[candidate.index])
    if scorer is not None:
        return float(scorer(_prompt_text(problem.prompt), candidate.text, candidate.correct))
    return 10.0 if candidate.correct else 0.0


def _prompt_text(prompt: str | list[Message]) -> str:
    if isinstance(prompt, str):
        return prompt
    user_turns = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    content = user_turns[-1] if user_turns else ""
    return content if isinstance(content, str) else str(content)
