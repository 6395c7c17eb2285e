"""The scorers by name (``--scorer``): how each is built from command-line options, and the
options every scorer reads (shared by ``mmdpo score`` and ``mmdpo pairs``).

    spec = get_scorer("ifeval")   # ValueError listing the valid names if unknown
    scorer = spec.build(args)     # an object with score(responses) -> list[float]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datagen.scorers import ColumnScorer, IFEvalScorer, MathScorer, ObjectsScorer, RewardModelScorer


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer by name: how to build it from command-line options, and what it reads.

    Attributes:
        build: options -> a scorer (an object with ``score(responses) -> list[float]``).
        needs_fields: it reads the source row's columns (gold answer, instructions, objects).
        summary: one line for help texts.
    """

    name: str
    build: Callable[[argparse.Namespace], Any]
    needs_fields: bool
    summary: str


def _reward_model(args: argparse.Namespace) -> RewardModelScorer:
    name = getattr(args, "reward_model", None)
    if not name:
        flag = getattr(args, "reward_model_flag", "--model")
        raise ValueError(f"the reward_model scorer needs {flag} (a sequence-classification model)")
    return RewardModelScorer.from_pretrained(
        name,
        dtype=getattr(args, "reward_dtype", None),
        trust_remote_code=getattr(args, "trust_remote_code", False),
        batch_size=getattr(args, "batch_size", 8),
        max_length=getattr(args, "max_length", 2048),
        progress=not getattr(args, "no_progress", False),
    )


def verify_timeout(args: argparse.Namespace) -> float | None:
    """``--verify-timeout`` for ``mmdpo.answers``: 0 or less is None (in-process, no limit)."""
    timeout = getattr(args, "verify_timeout", 5.0)
    return None if timeout is not None and timeout <= 0 else timeout


SCORERS: dict[str, ScorerSpec] = {
    "reward_model": ScorerSpec(
        "reward_model", _reward_model, False, "a sequence-classification reward model's logit"
    ),
    "math": ScorerSpec(
        "math",
        lambda args: MathScorer(getattr(args, "gold_field", None), verify_timeout(args)),
        True,
        "10 if the final answer equals the gold answer (math-verify), else 0",
    ),
    "ifeval": ScorerSpec(
        "ifeval",
        lambda args: IFEvalScorer(
            getattr(args, "instructions_field", "instruction_id_list"),
            getattr(args, "kwargs_field", "kwargs"),
            getattr(args, "loose", False),
        ),
        True,
        "10 x the share of IFEval instructions followed",
    ),
    "objects": ScorerSpec(
        "objects",
        lambda args: ObjectsScorer(
            getattr(args, "objects_field", "objects"), getattr(args, "vocabulary", "coco")
        ),
        True,
        "10 x (1 - hallucinated object mentions / mentions) against known objects",
    ),
    "column": ScorerSpec(
        "column",
        lambda args: ColumnScorer(
            getattr(args, "chosen_field", None), getattr(args, "rejected_field", None)
        ),
        True,
        "copy existing ratings from two columns",
    ),
}


def get_scorer(name: str) -> ScorerSpec:
    """The scorer called ``name``; an unknown name raises a ValueError listing the valid ones."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; valid scorers: {', '.join(SCORERS)}") from None


def add_scorer_options(parser: argparse.ArgumentParser) -> None:
    """Options every scorer reads (shared by ``mmdpo score`` and ``mmdpo pairs``)."""
    parser.add_argument("--scorer", help=f"one of: {', '.join(SCORERS)}")
    parser.add_argument(
        "--max-length", type=int, default=2048, help="reward model: token cap (default 2048)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="reward model: run code it ships"
    )
    parser.add_argument(
        "--gold-field", help="math: the gold answer's column (default: answer, gold or gt)"
    )
    parser.add_argument(
        "--verify-timeout",
        type=float,
        default=5.0,
        help="math: seconds per answer check; 0 checks in-process without a limit (default 5)",
    )
    parser.add_argument(
        "--instructions-field",
        default="instruction_id_list",
        help="ifeval: the instruction ids' column (default instruction_id_list)",
    )
    parser.add_argument(
        "--kwargs-field", default="kwargs", help="ifeval: the checker arguments' column"
    )
    parser.add_argument("--loose", action="store_true", help="ifeval: loose instead of strict")
    parser.add_argument(
        "--objects-field", default="objects", help="objects: the known objects' column"
    )
    parser.add_argument(
        "--vocabulary", default="coco", help="objects: coco (default) or shapes (the demo world)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (never the input)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
