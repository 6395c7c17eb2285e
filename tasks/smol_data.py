"""Generated prompts for the ``smol`` preset: arithmetic word problems and verifiable instructions.

Both generators are seeded and deterministic (``random.Random`` with a string seed, the same on
every machine), and each splits its content into ``train`` and ``heldout`` by a hash of what
makes two prompts the same task: the operation and its numbers for a word problem (so the
same sum never lands in both splits under different names), the topic for an instruction
prompt (so held-out prompts are about topics never trained on). The splits are therefore
disjoint whatever the seeds and sizes.

- :func:`word_problems`: one- and two-step add / subtract / multiply problems with small
  numbers; rows ``{id, prompt, problem, answer, level, kind}``: ``prompt`` is the problem with
  :data:`MATH_INSTRUCTION` (what ``mmdpo pairs`` samples from), ``problem`` + ``answer`` what a
  ``math_jsonl``-style benchmark reads, ``answer`` the gold the math scorer checks.
- :func:`instruction_prompts`: a short writing task with one or two verifiable instructions,
  in IFEval's row layout ``{key, prompt, instruction_id_list, kwargs}`` (plus an ``id``), which
  the ``ifeval`` scorer and benchmark check by rule.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 20  # share of hash buckets (and so of the content space) kept for held-out
MAX_MISSES = 20000  # draws in a row that found nothing new: the split is exhausted
# Asked after every problem, in training prompts and in the held-out evaluation alike. Short
# answers: SmolLM2-135M was no more accurate when asked to reason step by step and box the
# answer (math_jsonl's instruction), and wrote 1.6x as many tokens (docs/smol.md).
MATH_INSTRUCTION = "Answer briefly: write the calculation and the final number."

_NAMES = ("Ava", "Ben", "Carlos", "Dina", "Emil", "Fatima", "Gus", "Hiro", "Ines", "Jonas")
_ITEMS = ("apples", "pencils", "marbles", "stickers", "cookies", "shells", "cards", "balloons")


def split_of(signature: str) -> str:
    """``train`` or ``heldout`` for a content signature (a stable hash bucket)."""
    bucket = int(hashlib.sha256(signature.encode()).hexdigest(), 16) % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------- word problems


@dataclass(frozen=True)
class WordProblem:
    """One problem: its text, the answer, the number of steps (1 or 2) and its kind."""

    question: str
    answer: int
    level: int
    kind: str
    signature: str


def _add(rng: random.Random) -> WordProblem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(2, 12), rng.randint(2, 9)
    text = (
        f"{name} has {a} {item}. A friend gives {name} {b} more. "
        f"How many {item} does {name} have now?"
    )
    return WordProblem(text, a + b, 1, "add", f"add:{a},{b}")


def _subtract(rng: random.Random) -> WordProblem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a = rng.randint(5, 15)
    b = rng.randint(1, a - 1)
    text = (
        f"{name} had {a} {item} and gave away {b} of them. How many {item} does {name} have left?"
    )
    return WordProblem(text, a - b, 1, "subtract", f"subtract:{a},{b}")


def _multiply(rng: random.Random) -> WordProblem:
    item = rng.choice(_ITEMS)
    a, b = rng.randint(2, 6), rng.randint(2, 9)
    text = f"There are {a} bags with {b} {item} in each bag. How many {item} are there in all?"
    return WordProblem(text, a * b, 1, "multiply", f"multiply:{a},{b}")


def _add_subtract(rng: random.Random) -> WordProblem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(3, 12), rng.randint(2, 9)
    c = rng.randint(1, a + b - 1)
    text = (
        f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to a neighbour. "
        f"How many {item} does {name} have now?"
    )
    return WordProblem(text, a + b - c, 2, "add_subtract", f"add_subtract:{a},{b},{c}")


def _multiply_add(rng: random.Random) -> WordProblem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(2, 5), rng.randint(2, 6), rng.randint(1, 9)
    text = (
        f"{name} has {a} boxes with {b} {item} in each box, and {c} more {item} on a shelf. "
        f"How many {item} does {name} have in total?"
    )
    return WordProblem(text, a * b + c, 2, "multiply_add", f"multiply_add:{a},{b},{c}")


def _multiply_subtract(rng: random.Random) -> WordProblem:
    item = rng.choice(_ITEMS)
    a, b = rng.randint(2, 5), rng.randint(2, 6)
    c = rng.randint(1, a * b - 1)
    text = (
        f"A teacher buys {a} packs of {item} with {b} {item} in each pack. The class uses "
        f"{c} of them. How many {item} are left?"
    )
    return WordProblem(text, a * b - c, 2, "multiply_subtract", f"multiply_subtract:{a},{b},{c}")


def _add_add(rng: random.Random) -> WordProblem:
    first, second = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    text = (
        f"{first} has {a} {item}, {second} has {b} {item}, and their teacher has {c} {item}. "
        f"How many {item} do they have together?"
    )
    return WordProblem(text, a + b + c, 2, "add_add", f"add_add:{a},{b},{c}")


ONE_STEP: tuple[Callable[[random.Random], WordProblem], ...] = (_add, _subtract, _multiply)
TWO_STEP: tuple[Callable[[random.Random], WordProblem], ...] = (
    _add_subtract,
    _multiply_add,
    _multiply_subtract,
    _add_add,
)


def word_problems(
    n: int, *, split: str = "train", seed: int = 0, two_step_share: float = 0.5
) -> list[dict[str, Any]]:
    """``n`` distinct problems of ``split`` as rows (see the module docstring).

    Each problem is two-step with probability ``two_step_share``, its template drawn evenly
    within its level. Raises ValueError when the split cannot hold ``n`` distinct problems.
    """
    _check_split(split)
    if not 0.0 <= two_step_share <= 1.0:
        raise ValueError(f"two_step_share must be in [0, 1], got {two_step_share}")
    rng = random.Random(f"smol-math:{split}:{seed}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    misses = 0
    while len(rows) < n:
        if misses > MAX_MISSES:
            raise ValueError(f"could not draw {n} distinct {split} problems (got {len(rows)})")
        misses += 1
        templates = TWO_STEP if rng.random() < two_step_share else ONE_STEP
        problem = rng.choice(templates)(rng)
        if problem.signature in seen or split_of(problem.signature) != split:
            continue
        seen.add(problem.signature)
        misses = 0
        rows.append(
            {
                "id": f"math-{split}-{len(rows)}",
                "prompt": f"{problem.question}\n\n{MATH_INSTRUCTION}",
                "problem": problem.question,
                "answer": str(problem.answer),
                "level": problem.level,
                "kind": problem.kind,
            }
        )
    return rows


# ---------------------------------------------------------------------------- instructions

_TOPICS = (
    "the ocean", "a rainy day", "coffee", "trains", "a small garden", "the moon", "winter",
    "a lost cat", "bicycles", "a busy market", "the first day of school", "mountains",
    "a birthday party", "bread", "the library", "a thunderstorm", "friendship", "rivers",
    "a summer holiday", "music", "old photographs", "the city at night", "a picnic", "bees",
    "a kite", "the forest", "snow", "a train station", "apples", "learning to swim",
    "a lighthouse", "tea", "a robot", "the desert", "a football match", "autumn leaves",
    "a museum", "the stars", "a fishing trip", "chess", "a farm", "the wind",
)  # fmt: skip
_FORMS = (
    "Write a short poem about {topic}.",
    "Write a short story about {topic}.",
    "Write a short blog post about {topic}.",
    "Write a letter to a friend about {topic}.",
    "Describe {topic} to a child.",
    "Write a few sentences about {topic}.",
)
_KEYWORDS = ("blue", "quiet", "happy", "morning", "simple", "bright", "gentle", "light", "warm")
_FORBIDDEN = ("very", "really", "beautiful", "amazing", "great", "good")
_END_PHRASES = (
    "Is there anything else I can help with?",
    "Let me know if you have additional questions.",
    "Have a nice day.",
)


@dataclass(frozen=True)
class Instruction:
    """A verifiable instruction: its IFEval id, its text, a kwargs maker, and its group (at
    most one instruction per group in a prompt: lowercase and capitals, or two endings,
    cannot both hold)."""

    id: str
    text: str
    make_kwargs: Callable[[random.Random], dict[str, Any]]
    group: str


def _none(rng: random.Random) -> dict[str, Any]:
    return {}


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction(
        "change_case:english_lowercase",
        "Your entire response should be in English, and in all lowercase letters. "
        "No capital letters are allowed.",
        _none,
        "case",
    ),
    Instruction(
        "change_case:english_capital",
        "Your entire response should be in English, and in all capital letters.",
        _none,
        "case",
    ),
    Instruction(
        "keywords:existence",
        "Include the keywords {keywords} in the response.",
        lambda rng: {"keywords": rng.sample(_KEYWORDS, 2)},
        "keywords",
    ),
    Instruction(
        "keywords:forbidden_words",
        "Do not include the words {forbidden_words} in the response.",
        lambda rng: {"forbidden_words": rng.sample(_FORBIDDEN, 2)},
        "forbidden",
    ),
    Instruction(
        "length_constraints:number_words",
        "Answer with less than {num_words} words.",
        lambda rng: {"num_words": rng.choice((40, 60, 80)), "relation": "less than"},
        "length",
    ),
    Instruction(
        "length_constraints:number_sentences",
        "Your response should contain less than {num_sentences} sentences.",
        lambda rng: {"num_sentences": rng.choice((3, 4, 5)), "relation": "less than"},
        "length",
    ),
    Instruction(
        "punctuation:no_comma",
        "In your entire response, refrain from the use of any commas.",
        _none,
        "comma",
    ),
    Instruction(
        "startend:end_checker",
        "Finish your response with this exact phrase: {end_phrase} "
        "No other words should follow this phrase.",
        lambda rng: {"end_phrase": rng.choice(_END_PHRASES)},
        "ending",
    ),
    Instruction(
        "detectable_content:postscript",
        "At the end of your response, please explicitly add a postscript starting with P.S.",
        lambda rng: {"postscript_marker": "P.S."},
        "ending",
    ),
    Instruction(
        "startend:quotation",
        "Wrap your entire response with double quotation marks.",
        _none,
        "ending",
    ),
    Instruction(
        "detectable_format:title",
        "Your answer must contain a title, wrapped in double angular brackets, such as "
        "<<poem of joy>>.",
        _none,
        "title",
    ),
)


def _shown(value: Any) -> Any:
    return " and ".join(value) if isinstance(value, list) else value


def instruction_prompts(
    n: int, *, split: str = "train", seed: int = 0, max_instructions: int = 2
) -> list[dict[str, Any]]:
    """``n`` distinct prompts of ``split``, each a writing task plus 1..``max_instructions``
    instructions, as IFEval rows with an ``id`` (see the module docstring). Held-out keys
    start at 100000 so the two splits never share a key."""
    _check_split(split)
    if max_instructions < 1:
        raise ValueError(f"max_instructions must be at least 1, got {max_instructions}")
    topics = [topic for topic in _TOPICS if split_of(f"topic:{topic}") == split]
    rng = random.Random(f"smol-text:{split}:{seed}")
    first_key = 0 if split == "train" else 100000
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    misses = 0
    while len(rows) < n:
        if misses > MAX_MISSES:
            raise ValueError(f"could not draw {n} distinct {split} prompts (got {len(rows)})")
        misses += 1
        task = rng.choice(_FORMS).format(topic=rng.choice(topics))
        count = rng.randint(1, max_instructions)
        chosen: list[Instruction] = []
        for instruction in rng.sample(INSTRUCTIONS, len(INSTRUCTIONS)):
            if len(chosen) < count and all(instruction.group != c.group for c in chosen):
                chosen.append(instruction)
        kwargs = [instruction.make_kwargs(rng) for instruction in chosen]
        texts = [
            instruction.text.format(**{k: _shown(v) for k, v in arguments.items()})
            for instruction, arguments in zip(chosen, kwargs, strict=True)
        ]
        prompt = " ".join([task, *texts])
        if prompt in seen:
            continue
        seen.add(prompt)
        misses = 0
        rows.append(
            {
                "id": f"text-{split}-{len(rows)}",
                "key": first_key + len(rows),
                "prompt": prompt,
                "instruction_id_list": [instruction.id for instruction in chosen],
                "kwargs": kwargs,
            }
        )
    return rows
