"""Build math preference pairs from K sampled responses per problem, the way Uni-DPO does.

The paper's rule (K = 8): each response's final answer is checked against the gold answer,
each response gets a score (a process reward model's minimum step score x 10), and

- chosen = the best-scoring correct response, if its score is above ``min_chosen_score`` (6);
- rejected = the lowest-scoring correct response scoring strictly below the chosen one if
  there is one, otherwise the lowest-scoring incorrect response.

Unlike the authors' builder, a response is never paired with itself: response texts are
deduplicated (after whitespace normalisation, the first copy kept) before pairing, so chosen
and rejected always differ. One pair per problem, as in the paper.

Scores, in order of precedence: ``MathProblem.scores`` (e.g. PRM scores, used as given), else
``scorer(prompt_text, response, correct)``, else the rule score 10.0 if correct else 0.0 with
no length tie-break. Responses whose score is NaN are dropped (a NaN would poison w_qual).
Ties are broken by the order of the responses (the lower index wins), so the output is
deterministic. With the rule score every correct response scores 10, so the pair is always
(first correct, first incorrect).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mmdpo.answers import grade_math_response
from mmdpo.types import Message, PreferenceSample

Scorer = Callable[[str, str, bool], float]


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
class PairBuildReport:
    """What happened to the problems. Every problem without a pair is counted in one reason."""

    problems: int = 0
    responses: int = 0
    pairs: int = 0
    duplicates_dropped: int = 0
    empty_dropped: int = 0
    nan_score_dropped: int = 0
    no_correct: int = 0  # no correct response at all
    no_chosen: int = 0  # correct responses, but none scoring above min_chosen_score
    no_rejected: int = 0  # a chosen one, but no lower-scoring correct and no incorrect response
    rejected_correct: int = 0  # pairs whose rejected response is correct (lower score)
    rejected_incorrect: int = 0

    @property
    def no_pair(self) -> int:
        return self.problems - self.pairs


@dataclass
class PairBuildResult:
    samples: list[PreferenceSample]
    report: PairBuildReport


@dataclass
class _Candidate:
    index: int
    text: str
    correct: bool
    answer: str | None
    score: float


def _normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def _prompt_text(prompt: str | list[Message]) -> str:
    if isinstance(prompt, str):
        return prompt
    user_turns = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    content = user_turns[-1] if user_turns else ""
    return content if isinstance(content, str) else str(content)


def _unique_responses(problem: MathProblem, report: PairBuildReport) -> list[tuple[int, str]]:
    """(index, text) of the first copy of each distinct non-empty response."""
    seen: set[str] = set()
    unique = []
    for index, text in enumerate(problem.responses):
        key = _normalize_whitespace(text)
        if not key:
            report.empty_dropped += 1
        elif key in seen:
            report.duplicates_dropped += 1
        else:
            seen.add(key)
            unique.append((index, text))
    return unique


def _select_pair(
    candidates: list[_Candidate], min_chosen_score: float
) -> tuple[_Candidate | None, _Candidate | None, str]:
    """(chosen, rejected, reason) for one problem's distinct candidates; reason is "" on success."""
    correct = [c for c in candidates if c.correct]
    if not correct:
        return None, None, "no_correct"
    chosen = min(correct, key=lambda c: (-c.score, c.index))
    if not chosen.score > min_chosen_score:
        return None, None, "no_chosen"
    lower_correct = [c for c in correct if c.score < chosen.score]
    pool = lower_correct or [c for c in candidates if not c.correct]
    if not pool:
        return chosen, None, "no_rejected"
    rejected = min(pool, key=lambda c: (c.score, c.index))
    return chosen, rejected, ""


def build_math_pairs(
    problems: Iterable[MathProblem],
    *,
    min_chosen_score: float = 6.0,
    scorer: Scorer | None = None,
    source: str = "math_pairs",
    workers: int | None = None,
    timeout_s: float | None = 5.0,
) -> PairBuildResult:
    """One preference pair per problem where the paper's rule allows one (see module docstring).

    ``workers`` threads check answers concurrently (math-verify runs in worker processes that
    ``mmdpo.answers`` manages; default min(4, #CPUs)). ``timeout_s`` bounds each check; a
    check that times out counts as incorrect.
    """
    problems = list(problems)
    report = PairBuildReport(problems=len(problems))
    unique_per_problem = []
    for problem in problems:
        if problem.scores is not None and len(problem.scores) != len(problem.responses):
            raise ValueError(
                f"problem {problem.id!r}: {len(problem.scores)} scores for "
                f"{len(problem.responses)} responses"
            )
        report.responses += len(problem.responses)
        unique_per_problem.append(_unique_responses(problem, report))

    jobs = [
        (text, problem.gold)
        for problem, unique in zip(problems, unique_per_problem, strict=True)
        for _, text in unique
    ]
    max_workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        grades = iter(
            list(pool.map(lambda job: grade_math_response(*job, timeout_s=timeout_s), jobs))
        )

    samples = []
    for problem, unique in zip(problems, unique_per_problem, strict=True):
        candidates = []
        for index, text in unique:
            correct, answer = next(grades)
            score = _score(problem, index, text, correct, scorer)
            if math.isnan(score):
                report.nan_score_dropped += 1
                continue
            candidates.append(_Candidate(index, text, correct, answer, score))
        chosen, rejected, reason = _select_pair(candidates, min_chosen_score)
        if reason:
            setattr(report, reason, getattr(report, reason) + 1)
            continue
        report.pairs += 1
        if rejected.correct:
            report.rejected_correct += 1
        else:
            report.rejected_incorrect += 1
        samples.append(_make_sample(problem, chosen, rejected, len(unique), source))
    return PairBuildResult(samples=samples, report=report)


def _score(
    problem: MathProblem, index: int, text: str, correct: bool, scorer: Scorer | None
) -> float:
    if problem.scores is not None:
        return float(problem.scores[index])
    if scorer is not None:
        return float(scorer(_prompt_text(problem.prompt), text, correct))
    return 10.0 if correct else 0.0


def _make_sample(
    problem: MathProblem,
    chosen: _Candidate,
    rejected: _Candidate,
    num_unique: int,
    source: str,
) -> PreferenceSample:
    meta = dict(problem.meta)
    meta.update(
        problem_id=problem.id,
        gold=problem.gold,
        correct_chosen=chosen.correct,
        correct_rejected=rejected.correct,
        answer_chosen=chosen.answer,
        answer_rejected=rejected.answer,
        index_chosen=chosen.index,
        index_rejected=rejected.index,
        num_responses=len(problem.responses),
        num_unique_responses=num_unique,
    )
    prompt = problem.prompt if isinstance(problem.prompt, str) else list(problem.prompt)
    return PreferenceSample(
        id=str(problem.id),
        prompt=prompt,
        chosen=chosen.text,
        rejected=rejected.text,
        score_chosen=chosen.score,
        score_rejected=rejected.score,
        modality="math",
        source=source,
        meta=meta,
    )
