"""Seeded arithmetic word problems with known answers: the stand-in for GSM8K and MATH-500.

Used only when no real data is available, so the pipeline can run end to end offline. Results
on them are marked ``generated`` and are smoke tests, not benchmark numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_NAMES = ("Ada", "Ben", "Chen", "Dana", "Eli", "Farah", "Goran", "Hana", "Ivan", "Jia")
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "books")


@dataclass(frozen=True)
class WordProblem:
    """A problem, its worked solution (ending ``#### N`` like GSM8K) and the answer N."""

    question: str
    solution: str
    answer: int


def _gain_and_give(rng: random.Random) -> WordProblem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    start, bought = rng.randint(5, 60), rng.randint(2, 40)
    given = rng.randint(1, start + bought - 1)
    answer = start + bought - given
    question = (
        f"{name} has {start} {item}. {name} buys {bought} more and then gives {given} to a "
        f"friend. How many {item} does {name} have now?"
    )
    solution = f"{start} + {bought} - {given} = {answer}\n#### {answer}"
    return WordProblem(question, solution, answer)


def _boxes(rng: random.Random) -> WordProblem:
    item = rng.choice(_ITEMS)
    per_box, boxes = rng.randint(3, 48), rng.randint(2, 30)
    answer = per_box * boxes
    question = f"A box holds {per_box} {item}. How many {item} are in {boxes} full boxes?"
    return WordProblem(question, f"{per_box} * {boxes} = {answer}\n#### {answer}", answer)


def _wages(rng: random.Random) -> WordProblem:
    name = rng.choice(_NAMES)
    rate, hours = rng.randint(9, 60), rng.randint(5, 45)
    answer = rate * hours
    question = (
        f"{name} earns ${rate} per hour and works {hours} hours this week. How many dollars "
        f"does {name} earn this week?"
    )
    return WordProblem(question, f"{rate} * {hours} = {answer}\n#### {answer}", answer)


def _sharing(rng: random.Random) -> WordProblem:
    item = rng.choice(_ITEMS)
    friends, each = rng.randint(2, 12), rng.randint(2, 25)
    total = friends * each
    question = (
        f"{total} {item} are shared equally among {friends} friends. How many {item} does "
        f"each friend get?"
    )
    return WordProblem(question, f"{total} / {friends} = {each}\n#### {each}", each)


_TEMPLATES = (_gain_and_give, _boxes, _wages, _sharing)


def word_problems(n: int, seed: int = 0) -> list[WordProblem]:
    """``n`` problems, the same for the same seed on every machine."""
    rng = random.Random(seed)
    return [_TEMPLATES[index % len(_TEMPLATES)](rng) for index in range(n)]
