"""UltraFeedback binarized rows (and the Uni-DPO text release, which uses the same layout).

``{"prompt": "...", "prompt_id": "...", "chosen": [{"role": "user", ...}, {"role":
"assistant", ...}], "rejected": [...], "score_chosen": 8.0, "score_rejected": 5.0}``.
``chosen``/``rejected`` may be whole conversations (the last message is the reply, the earlier
ones the prompt) or plain strings; ``prompt`` may be a string or messages, or absent when the
conversations carry it. Both scores are required.
"""

from __future__ import annotations

from typing import Any

from data_adapters.fields import RowContext, get, parse_score, prompt_and_responses
from mmdpo.types import PreferenceSample


def convert_ultrafeedback(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """One binarized UltraFeedback row -> a text sample with both scores."""
    prompt, chosen, rejected = prompt_and_responses(
        row.get("prompt"), get(row, "chosen"), get(row, "rejected")
    )
    return PreferenceSample(
        id=ctx.sample_id,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        score_chosen=parse_score(row, "score_chosen", required=True),
        score_rejected=parse_score(row, "score_rejected", required=True),
        modality="text",
        source=ctx.source,
        meta=ctx.meta(),
    )
