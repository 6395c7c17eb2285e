"""Instruction id -> checker: every instruction type in Google's IFEval prompt file."""

from __future__ import annotations

from collections.abc import Callable

from eval.ifeval import format_instructions as fmt
from eval.ifeval import instructions as ins

Checker = Callable[..., bool]

CHECKERS: dict[str, Checker] = {
    "change_case:capital_word_frequency": ins.check_capital_word_frequency,
    "change_case:english_capital": ins.check_english_capital,
    "change_case:english_lowercase": ins.check_english_lowercase,
    "combination:repeat_prompt": fmt.check_repeat_prompt,
    "combination:two_responses": fmt.check_two_responses,
    "detectable_content:number_placeholders": ins.check_number_placeholders,
    "detectable_content:postscript": ins.check_postscript,
    "detectable_format:constrained_response": fmt.check_constrained_response,
    "detectable_format:json_format": fmt.check_json_format,
    "detectable_format:multiple_sections": fmt.check_multiple_sections,
    "detectable_format:number_bullet_lists": fmt.check_number_bullet_lists,
    "detectable_format:number_highlighted_sections": fmt.check_number_highlighted_sections,
    "detectable_format:title": fmt.check_title,
    "keywords:existence": ins.check_keywords_existence,
    "keywords:forbidden_words": ins.check_forbidden_words,
    "keywords:frequency": ins.check_keyword_frequency,
    "keywords:letter_frequency": ins.check_letter_frequency,
    "language:response_language": ins.check_response_language,
    "length_constraints:nth_paragraph_first_word": ins.check_nth_paragraph_first_word,
    "length_constraints:number_paragraphs": ins.check_number_paragraphs,
    "length_constraints:number_sentences": ins.check_number_sentences,
    "length_constraints:number_words": ins.check_number_words,
    "punctuation:no_comma": ins.check_no_comma,
    "startend:end_checker": ins.check_end_phrase,
    "startend:quotation": ins.check_quotation,
}


class UnknownInstructionError(ValueError):
    """An instruction id with no checker."""


def get_checker(instruction_id: str, key: object = None) -> Checker:
    """The checker for ``instruction_id``; ``key`` names the sample in the error message."""
    try:
        return CHECKERS[instruction_id]
    except KeyError:
        raise UnknownInstructionError(
            f"sample {key}: unknown IFEval instruction id {instruction_id!r}; "
            f"known ids: {', '.join(sorted(CHECKERS))}"
        ) from None
