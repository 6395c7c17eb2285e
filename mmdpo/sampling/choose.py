"""The next token of each row: greedy, or sampled with temperature, top-k and top-p.

Sampling filters the logits as transformers' warpers do, in their order (temperature, then
top-k, then top-p; ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``), so
the distribution is the one ``model.generate(do_sample=True, ...)`` samples from. The draw
itself differs: every sample owns a ``torch.Generator`` seeded from (seed, prompt, sample)
and takes one uniform number per token, inverted through the filtered distribution's CDF.
A sample's random stream therefore does not depend on which other rows share its batch.
"""

from __future__ import annotations

import hashlib

import torch


def sample_generator(seed: int, prompt_index: int, sample_index: int) -> torch.Generator:
    """The CPU generator of sample ``sample_index`` of prompt ``prompt_index`` under ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{prompt_index}:{sample_index}".encode(), digest_size=8)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
    return generator


def filtered_probs(
    logits: torch.Tensor, *, temperature: float, top_k: int | None, top_p: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sampling distribution after temperature, top-k and top-p.

    Args:
        logits: next-token logits. Shape: (B, V).

    Returns:
        ``(probs, token_ids)``: probabilities over candidates, shape (B, C), and the token id
        of each candidate, shape (B, C), or None when the candidates are the whole
        vocabulary in order (C == V). With ``top_k`` the candidates are the k best tokens
        (a tie with the k-th value beyond k is dropped, where transformers keeps it).
    """
    scores, token_ids = logits.float(), None
    if top_k is not None and top_k < scores.shape[-1]:
        # before the temperature (a positive scale keeps the order): k values to divide, not V
        scores, token_ids = scores.topk(top_k, dim=-1)  # sorted, best first
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        ascending, order = scores.sort(dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= 1.0 - top_p
        remove[..., -1] = False  # the most likely token always stays
        scores = scores.scatter(-1, order, ascending.masked_fill(remove, float("-inf")))
    return scores.softmax(dim=-1), token_ids


def choose_tokens(
    logits: torch.Tensor,
    generators: list[torch.Generator] | None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
) -> torch.Tensor:
    """One token per row: argmax when ``generators`` is None, else one draw per row.

    Args:
        logits: next-token logits. Shape: (B, V).
        generators: one per row (its sample's stream), or None for greedy decoding.

    Returns:
        Token ids. Shape: (B,).
    """
    if generators is None:
        return logits.argmax(dim=-1)
    probs, token_ids = filtered_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    cdf = probs.double().cumsum(dim=-1)
    targets = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    # right=True: the first candidate whose CDF exceeds the target, never a zero-probability one
    picks = torch.searchsorted(cdf, targets, right=True).clamp(max=cdf.shape[-1] - 1).squeeze(-1)
    if token_ids is None:
        return picks
    return token_ids.gather(-1, picks.unsqueeze(-1)).squeeze(-1)
