"""Fast batched sampling: a KV cache of row slots, left padding, one prefill per prompt for
its ``n`` samples and one copy of its keys and values, per-row stop strings, finished rows
leaving the batch at once, and seeded per-sample random streams.

    from mmdpo.sampling import sample
    result = sample(model, tokenizer, prompts, n=4, max_new_tokens=128, greedy=False,
                    temperature=0.7, top_k=50, seed=0, batch_size=64)
    result.texts()          # [[str] * 4 per prompt]
    result.completions[0][1].token_ids, result.stats.samples_per_s

Modules: ``engine`` (the loop and the public types), ``cache`` (the slot cache), ``shared``
(one copy of a prompt for its samples, and the attention over it), ``choose``
(greedy and sampled tokens), ``stops`` (EOS, stop strings, the cap), ``inputs`` (prompts,
position ids, the model's call), ``spare`` (a finished cache's CPU buffers, kept for the next
run; ``drop_spare_buffers`` frees them), ``packed`` (float32 linear weights packed once for
MKL's GEMM, for the decode steps on CPU). Rendering, encoding, EOS ids and stop-string cuts are
today's generation's (``mmdpo.generation``), so both paths see the same tokens.
"""

from mmdpo.sampling.engine import (
    Completion,
    SamplingResult,
    SamplingSettings,
    SamplingStats,
    generate_texts,
    generate_top_k,
    sample,
    supports,
)
from mmdpo.sampling.inputs import ChatPrompt
from mmdpo.sampling.spare import drop_spare_buffers

__all__ = [
    "ChatPrompt",
    "Completion",
    "SamplingResult",
    "SamplingSettings",
    "SamplingStats",
    "drop_spare_buffers",
    "generate_texts",
    "generate_top_k",
    "sample",
    "supports",
]
