"""The one pair-building core: K responses per prompt in, at most one preference pair out.

Both pair builders, the paper's math pairs (``datagen.math_pairs``) and best-vs-worst for rule
and reward-model scores (``mmdpo pairs --task text|vision``), are :func:`build_pairs` with a
different :class:`PairRule`:

1. deduplicate (:func:`distinct_responses`): empty responses and repeats (after whitespace
   normalisation) are dropped, the first copy kept, so a pair never holds one response twice;
2. rate: the caller's function scores every distinct response of every prompt in one call
   (so a reward model can batch), and for math says whether it is correct;
3. drop responses scored NaN (a NaN would poison Uni-DPO's quality weight);
4. the rule picks (chosen, rejected) or names the reason there is no pair. Every prompt without
   a pair is counted under exactly one reason, so ``pairs + no_pair == prompts``.

Ties go to the earlier response, so the output is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from mmdpo.types import Message, PreferenceSample


@dataclass
class ResponseGroup:
    """One prompt and its sampled responses.

    Attributes:
        id: the pair's sample id.
        prompt: a user turn (a string) or chat messages.
        responses: the K responses, in sampling order.
        modality: the pair's modality.
        images: the prompt's images (kept on the pair).
        meta: the first entries of the pair's meta; the core adds how each side was picked.
    """

    id: str
    prompt: str | list[Message]
    responses: list[str]
    modality: str
    images: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """A distinct response of a group, as rated.

    Attributes:
        index: its position among the group's responses (its first copy's).
        text: the response as sampled.
        score: its score; NaN until rated (a NaN score drops it).
        correct: whether its final answer is right (math), or None when nothing checked it.
        answer: the final answer the check read, if any.
    """

    index: int
    text: str
    score: float = math.nan
    correct: bool | None = None
    answer: str | None = None


# Fills in each candidate's score (and correctness) for all groups at once, in place.
Rate = Callable[[Sequence[ResponseGroup], list[list[Candidate]]], None]


@dataclass
class PairReport:
    """What happened to the prompts and their responses.

    ``rule_counts`` holds the rule's own counts (its reasons for no pair, then its tallies of
    the pairs), readable as attributes too: ``report.no_correct``, ``report.all_tied``.
    """

    prompts: int = 0
    responses: int = 0
    pairs: int = 0
    duplicates_dropped: int = 0
    empty_dropped: int = 0
    nan_score_dropped: int = 0
    rule_counts: dict[str, int] = field(default_factory=dict)

    @property
    def no_pair(self) -> int:
        return self.prompts - self.pairs

    @property
    def problems(self) -> int:
        """The math builder's name for ``prompts``."""
        return self.prompts

    def __getattr__(self, name: str) -> int:
        counts = self.__dict__.get("rule_counts") or {}
        if name in counts:
            return counts[name]
        raise AttributeError(f"{type(self).__name__} has no count {name!r}")

    def counts(self) -> dict[str, int]:
        """Every count, flat, in the order of the command's report: totals, responses left
        out, the rule's counts, then ``no_pair``."""
        return {
            "prompts": self.prompts,
            "responses": self.responses,
            "pairs": self.pairs,
            "duplicates_dropped": self.duplicates_dropped,
            "empty_dropped": self.empty_dropped,
            "nan_score_dropped": self.nan_score_dropped,
            **self.rule_counts,
            "no_pair": self.no_pair,
        }


class PairRule(Protocol):
    """How one prompt's scored candidates become a pair.

    ``counters``: the names of the rule's counts, in report order. ``select`` returns
    (chosen, rejected), or the name of the count that says why there is no pair. ``tally``
    names a count to add one to for a pair made, or None.
    """

    counters: tuple[str, ...]

    def select(self, candidates: list[Candidate]) -> tuple[Candidate, Candidate] | str: ...

    def tally(self, chosen: Candidate, rejected: Candidate) -> str | None: ...


@dataclass(frozen=True)
class PaperMathRule:
    """Uni-DPO's math rule: chosen = the best-scoring correct response, if it scores above
    ``min_chosen_score``; rejected = the lowest-scoring correct response scoring strictly below
    it if there is one, otherwise the lowest-scoring incorrect response."""

    min_chosen_score: float = 6.0
    counters: ClassVar[tuple[str, ...]] = (
        "no_correct",  # no correct response at all
        "no_chosen",  # correct responses, but none scoring above min_chosen_score
        "no_rejected",  # a chosen one, but no lower-scoring correct and no incorrect response
        "rejected_correct",  # pairs whose rejected response is correct (lower score)
        "rejected_incorrect",
    )

    def select(self, candidates: list[Candidate]) -> tuple[Candidate, Candidate] | str:
        correct = [c for c in candidates if c.correct]
        if not correct:
            return "no_correct"
        chosen = min(correct, key=lambda c: (-c.score, c.index))
        if not chosen.score > self.min_chosen_score:
            return "no_chosen"
        lower_correct = [c for c in correct if c.score < chosen.score]
        pool = lower_correct or [c for c in candidates if not c.correct]
        if not pool:
            return "no_rejected"
        return chosen, min(pool, key=lambda c: (c.score, c.index))

    def tally(self, chosen: Candidate, rejected: Candidate) -> str:
        return "rejected_correct" if rejected.correct else "rejected_incorrect"


class BestVsWorst:
    """The best response (highest score) against the worst (lowest); no pair on a tie."""

    counters: ClassVar[tuple[str, ...]] = (
        "too_few_distinct",  # fewer than two distinct, non-empty, scored responses
        "all_tied",  # the best and the worst response score the same
    )

    def select(self, candidates: list[Candidate]) -> tuple[Candidate, Candidate] | str:
        if len(candidates) < 2:
            return "too_few_distinct"
        chosen = min(candidates, key=lambda c: (-c.score, c.index))
        rejected = min(candidates, key=lambda c: (c.score, c.index))
        if not chosen.score > rejected.score:
            return "all_tied"
        return chosen, rejected

    def tally(self, chosen: Candidate, rejected: Candidate) -> None:
        return None


def distinct_responses(responses: Sequence[str], report: PairReport) -> list[Candidate]:
    """The first copy of each distinct non-empty response (whitespace-normalised), unrated;
    the empty and repeated ones counted in ``report``."""
    seen: set[str] = set()
    distinct = []
    for index, text in enumerate(responses):
        key = " ".join(text.split())
        if not key:
            report.empty_dropped += 1
        elif key in seen:
            report.duplicates_dropped += 1
        else:
            seen.add(key)
            distinct.append(Candidate(index, text))
    return distinct


def build_pairs(
    groups: Sequence[ResponseGroup], rate: Rate, rule: PairRule, *, source: str
) -> tuple[list[PreferenceSample], PairReport]:
    """At most one pair per group, in group order, and the report (see the module docstring)."""
    report = PairReport(prompts=len(groups), rule_counts=dict.fromkeys(rule.counters, 0))
    candidates = []
    for group in groups:
        report.responses += len(group.responses)
        candidates.append(distinct_responses(group.responses, report))
    rate(groups, candidates)
    samples = []
    for group, distinct in zip(groups, candidates, strict=True):
        scored = [c for c in distinct if not math.isnan(c.score)]
        report.nan_score_dropped += len(distinct) - len(scored)
        picked = rule.select(scored)
        if isinstance(picked, str):
            report.rule_counts[picked] += 1
            continue
        chosen, rejected = picked
        report.pairs += 1
        tally = rule.tally(chosen, rejected)
        if tally is not None:
            report.rule_counts[tally] += 1
        samples.append(make_pair(group, chosen, rejected, len(distinct), source))
    return samples, report


def make_pair(
    group: ResponseGroup, chosen: Candidate, rejected: Candidate, num_distinct: int, source: str
) -> PreferenceSample:
    """The pair, with where each side came from in its meta (and how it was graded, for math)."""
    meta = dict(group.meta)
    if chosen.correct is not None:
        meta.update(
            correct_chosen=chosen.correct,
            correct_rejected=rejected.correct,
            answer_chosen=chosen.answer,
            answer_rejected=rejected.answer,
        )
    meta.update(
        index_chosen=chosen.index,
        index_rejected=rejected.index,
        num_responses=len(group.responses),
        num_unique_responses=num_distinct,
    )
    return PreferenceSample(
        id=str(group.id),
        prompt=group.prompt if isinstance(group.prompt, str) else list(group.prompt),
        chosen=chosen.text,
        rejected=rejected.text,
        images=list(group.images),
        score_chosen=float(chosen.score),
        score_rejected=float(rejected.score),
        modality=group.modality,
        source=source,
        meta=meta,
    )
