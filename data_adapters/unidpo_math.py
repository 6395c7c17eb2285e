"""The Uni-DPO math release: ``prompt``, ``chosen``, ``rejected``, ``score_chosen``,
``score_rejected`` (process-reward minimum x 10), ``correct_chosen``, ``correct_rejected``.

The prompt is kept as given (one user turn); the correctness flags, and the release's
``score_margin`` fields when present, go to ``meta``.
"""

from __future__ import annotations

from typing import Any

from data_adapters.fields import RowContext, get, parse_flag, parse_score, text_of, to_messages
from mmdpo.types import PreferenceSample

_EXTRAS = ("score_margin", "score_margin_normalized", "gt", "problem")


def convert_unidpo_math(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One Uni-DPO math row -> a math sample with both scores and correctness in meta."""
    extras = {key: row[key] for key in _EXTRAS if row.get(key) is not None}
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=to_messages(get(row, "prompt"), "prompt"),
        chosen=text_of(get(row, "chosen"), "chosen"),
        rejected=text_of(get(row, "rejected"), "rejected"),
        score_chosen=parse_score(row, "score_chosen", required=True),
        score_rejected=parse_score(row, "score_rejected", required=True),
        modality="math",
        source=ctx.source,
        meta=ctx.meta(
            correct_chosen=parse_flag(row, "correct_chosen"),
            correct_rejected=parse_flag(row, "correct_rejected"),
            **extras,
        ),
    )
