"""IFEval (Zhou et al. 2023, arXiv 2311.07911): verifiable-instruction checks, scored offline."""

from eval.ifeval.data import IFEvalPrompt, load_ifeval
from eval.ifeval.registry import CHECKERS, UnknownInstructionError, get_checker
from eval.ifeval.scoring import (
    IFEVAL_VERSION,
    IFEvalResult,
    check_response,
    loose_variants,
    score,
)
from eval.ifeval.text_utils import sentence_splitter_name

__all__ = [
    "CHECKERS",
    "IFEVAL_VERSION",
    "IFEvalPrompt",
    "IFEvalResult",
    "UnknownInstructionError",
    "check_response",
    "get_checker",
    "load_ifeval",
    "loose_variants",
    "score",
    "sentence_splitter_name",
]
