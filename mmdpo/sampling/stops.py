"""When a sample is finished: an end-of-sequence token, a stop string, or the token cap.

A stop string ends a sample at the token that completes its first occurrence in the generated
text; the response text is cut before it. This is ``generate(stop_strings=...)`` followed by
``mmdpo.generation.cut_at_stop``, except that transformers also matches a stop string that begins
inside the prompt, which no response contains; here only generated text counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmdpo.generation import cut_at_stop


class FinishCheck:
    """Says whether a sample's tokens end it, looking only at the newest tokens."""

    def __init__(
        self, tokenizer: Any, eos_ids: Sequence[int], stop: Sequence[str], max_new_tokens: int
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)
        self.stop = tuple(s for s in stop if s)
        self.max_new_tokens = max_new_tokens
        # A stop string of c characters spans at most 4c byte-level tokens; two more keep a
        # tokenizer's special first-token decoding (a dropped leading space) out of the match.
        self.window = 4 * max((len(s) for s in self.stop), default=0) + 2

    def reason(self, tokens: list[int]) -> str | None:
        """``"eos"``, ``"stop"``, ``"length"`` or None (the sample goes on).

        Called after every new token, so a stop string is seen at the token completing it.
        """
        if tokens[-1] in self.eos_ids:
            return "eos"
        if self.stop:
            tail = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True)
            if any(s in tail for s in self.stop):
                return "stop"
        if len(tokens) >= self.max_new_tokens:
            return "length"
        return None

    def text(self, tokens: list[int]) -> str:
        """The response: decoded without special tokens, cut at the first stop string,
        stripped (as ``mmdpo.generation.generate`` returns it)."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return cut_at_stop(text, self.stop).strip()
