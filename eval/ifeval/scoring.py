"""Check responses against IFEval instructions and reduce to the four IFEval accuracies.

Strict and loose evaluation as in Zhou et al. 2023 (arXiv 2311.07911), section 2.2: strict
checks the response as is; loose passes an instruction if any of eight variants passes (the
response with its first line, last line or both removed, each with and without '*').
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from eval.ifeval.data import IFEvalPrompt
from eval.ifeval.registry import Checker, get_checker
from eval.ifeval.text_utils import WORD_TOKENIZER, sentence_splitter_name

IFEVAL_VERSION = "1.0"


@dataclass(frozen=True)
class IFEvalResult:
    """Per-instruction outcomes for one prompt; lists are aligned with ``instruction_id_list``."""

    key: int
    instruction_id_list: list[str]
    follow_strict: list[bool]
    follow_loose: list[bool]

    @property
    def prompt_strict(self) -> bool:
        return all(self.follow_strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.follow_loose)


def loose_variants(response: str) -> list[str]:
    """The eight responses loose evaluation tries, the original first."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    trimmed = [without_first, without_last, without_both]
    return [response, response.replace("*", ""), *trimmed, *(t.replace("*", "") for t in trimmed)]


def _follows(checker: Checker, response: str, kwargs: dict) -> bool:
    # An empty response follows nothing, whatever the checker would say.
    return bool(response.strip()) and checker(response, **kwargs)


def check_response(prompt: IFEvalPrompt, response: str) -> IFEvalResult:
    """Run every instruction of ``prompt`` on ``response``, strictly and loosely."""
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(prompt.instruction_id_list, prompt.kwargs, strict=True):
        checker = get_checker(instruction_id, key=prompt.key)
        try:
            inspect.signature(checker).bind(response, **kwargs)
        except TypeError as error:
            raise ValueError(
                f"sample {prompt.key}: instruction {instruction_id!r} got kwargs {kwargs}: {error}"
            ) from None
        strict.append(_follows(checker, response, kwargs))
        loose.append(any(_follows(checker, variant, kwargs) for variant in variants))
    return IFEvalResult(prompt.key, list(prompt.instruction_id_list), strict, loose)


def score(results: Sequence[IFEvalResult]) -> dict:
    """Prompt- and instruction-level accuracy, strict and loose, plus per-instruction accuracy.

    Prompt level: share of prompts whose instructions all pass. Instruction level: share of all
    instructions, pooled over prompts, that pass.
    """
    if not results:
        raise ValueError("score() needs at least one IFEvalResult")
    per_id: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for result in results:
        for instruction_id, strict, loose in zip(
            result.instruction_id_list, result.follow_strict, result.follow_loose, strict=True
        ):
            per_id[instruction_id].append((strict, loose))
    outcomes = [outcome for pairs in per_id.values() for outcome in pairs]
    if not outcomes:
        raise ValueError("score() needs at least one instruction among the results")
    return {
        "prompt_level_strict_acc": sum(r.prompt_strict for r in results) / len(results),
        "inst_level_strict_acc": sum(strict for strict, _ in outcomes) / len(outcomes),
        "prompt_level_loose_acc": sum(r.prompt_loose for r in results) / len(results),
        "inst_level_loose_acc": sum(loose for _, loose in outcomes) / len(outcomes),
        "n": len(results),
        "n_instructions": len(outcomes),
        "sentence_splitter": sentence_splitter_name(),
        "word_tokenizer": WORD_TOKENIZER,
        "ifeval_version": IFEVAL_VERSION,
        "per_instruction": {
            instruction_id: {
                "n": len(pairs),
                "strict_acc": sum(strict for strict, _ in pairs) / len(pairs),
                "loose_acc": sum(loose for _, loose in pairs) / len(pairs),
            }
            for instruction_id, pairs in sorted(per_id.items())
        },
    }
