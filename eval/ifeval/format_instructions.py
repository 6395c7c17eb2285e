"""IFEval checkers for markdown/JSON format and combination instructions.

Same contract as ``instructions.py``: response first, kwargs as keywords, a bool out; semantics
of Google's IFEval (Zhou et al. 2023, arXiv 2311.07911).
"""

from __future__ import annotations

import json
import re

CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
RESPONSE_SEPARATOR = "******"


def check_number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    """Exactly ``num_bullets`` markdown bullets: lines starting with '* ' or '-'."""
    star_bullets = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dash_bullets = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(star_bullets) + len(dash_bullets) == num_bullets


def check_constrained_response(response: str) -> bool:
    """Contains one of the fixed answers, e.g. 'My answer is yes.'."""
    return any(option in response.strip() for option in CONSTRAINED_RESPONSES)


def check_number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """At least ``num_highlights`` non-empty ``*single*`` or ``**double**`` highlights.

    Counting both patterns is the reference's: '**x**' is one highlight, and '*a*' is one.
    """
    singles = re.findall(r"\*[^\n\*]*\*", response)
    doubles = re.findall(r"\*\*[^\n\*]*\*\*", response)
    count = sum(1 for highlight in singles if highlight.strip("*").strip())
    count += sum(1 for highlight in doubles if highlight[2:-2].strip())
    return count >= num_highlights


def check_multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    """At least ``num_sections`` headers '<spliter> <number>' (case-sensitive)."""
    pattern = r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?"
    return len(re.split(pattern, response)) - 1 >= num_sections


def check_json_format(response: str) -> bool:
    """The response, without an optional ```json fence, parses as JSON."""
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def check_title(response: str) -> bool:
    """A non-empty title in double angular brackets, e.g. ``<<poem of joy>>``."""
    titles = re.findall(r"<<[^\n]+>>", response)
    return any(title.lstrip("<").rstrip(">").strip() for title in titles)


def check_two_responses(response: str) -> bool:
    """Two different responses separated by six asterisks."""
    pieces = response.split(RESPONSE_SEPARATOR)
    answers = []
    for index, piece in enumerate(pieces):
        if piece.strip():
            answers.append(piece)
        elif index not in (0, len(pieces) - 1):
            return False
    return len(answers) == 2 and answers[0].strip() != answers[1].strip()


def check_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    """Starts with the request repeated word for word (case-insensitive)."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())
