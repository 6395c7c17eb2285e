"""Anthropic HH-RLHF transcripts: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` in ``chosen`` and
``rejected``. The turns they share are the prompt (several turns become several messages);
the final ``Assistant:`` turn of each is the response.
"""

from __future__ import annotations

import re
from typing import Any

from data_adapters.fields import FieldError, RowContext, get, text_of
from mmdpo.types import Message, PreferenceSample

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str, field: str) -> list[Message]:
    """Split one transcript into messages; it must end with an ``Assistant:`` turn."""
    pieces = _TURN.split(text)
    if pieces[0].strip():
        raise FieldError(field, "text before the first 'Human:' turn")
    messages = [
        {"role": _ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True)
    ]
    if not messages:
        raise FieldError(field, "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns found")
    if messages[-1]["role"] != "assistant":
        raise FieldError(field, "the transcript does not end with an 'Assistant:' turn")
    if len(messages) < 2:
        raise FieldError(field, "no 'Human:' turn before the reply")
    return messages


def convert_hh_rlhf(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One HH-RLHF row -> a text sample, prompt = the turns both transcripts share."""
    chosen = parse_transcript(text_of(get(row, "chosen"), "chosen"), "chosen")
    rejected = parse_transcript(text_of(get(row, "rejected"), "rejected"), "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise FieldError(
            "rejected", "the conversation before the final reply differs from chosen's"
        )
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=chosen[:-1],
        chosen=chosen[-1]["content"],
        rejected=rejected[-1]["content"],
        modality="text",
        source=ctx.source,
        meta=ctx.meta(),
    )
