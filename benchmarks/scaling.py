"""Workloads shaped like real preference data, to see how cost grows (issue 13, item 3).

(a) ``vlm1``, ``vlm2``, ``vlm4``: prompt-heavy image-text pairs on the Qwen2-VL-shaped model:
    1, 2 or 4 images of 448 px per prompt (32 x 32 patches of 14 px, merged 2 x 2: 256 image
    tokens per image, the count Qwen2-VL gives a 448 px image), a question of 32-64 tokens,
    responses of 32-128 tokens.
(b) ``skewed``: text with UltraFeedback-like lengths, batches of 8 pairs. Prompt and response
    lengths are log-normal, the long right tail that chat data has: prompt median 112 tokens
    with sigma 1.0 (mean ~185), each response median 221 with sigma 0.8 (mean ~305), drawn
    independently and cut to fit 2,048 tokens (prompt <= 1,536, response <= 1,024). The means
    are the averages the UltraFeedback paper reports for its prompts and responses (Cui et
    al. 2023, dataset comparison table), quoted from memory: no copy of the data is here to
    measure; the sigmas are a choice that gives a p90/p50 of ~3.6 (prompt) and ~2.8
    (response). What matters for padding is the spread inside a batch, which this has.
(c) ``prompt256`` ... ``prompt4096``: text, a prompt of exactly N tokens, both responses
    exactly 128 tokens.

Lengths and the image size are for the full-size presets (``full``, ``gpu1b``); ``quick``
divides them by 8 and ``tiny`` by 16, so the same code runs as a smoke test.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

from workload import EOS, PATCH_SIZE, PairText, _words, write_image

# Lengths divide by this in the small presets.
SHRINK = {"full": 1, "gpu1b": 1, "quick": 8, "tiny": 16}

PROMPT_SWEEP = (256, 512, 1024, 2048, 4096)
IMAGE_COUNTS = (1, 2, 4)
SKEWED_BATCH = 8


@dataclass(frozen=True)
class Workload:
    """One synthetic data shape. Lengths in tokens, at full size."""

    name: str
    family: str  # text, qwen2_vl
    what: str
    axis: str  # the plot's x axis: "prompt tokens", "images per prompt", or "" (none)
    x: int = 0  # this workload's value on that axis
    images: int = 0  # images per prompt
    image_size: int = 448
    prompt: tuple[int, int] = (32, 64)  # text prompt length, uniform in [low, high]
    response: tuple[int, int] = (32, 128)  # each response's length (EOS included)
    skewed: bool = False  # log-normal lengths instead of the ranges above
    batch_size: int = 2

    def shrunk(self, preset: str) -> Workload:
        k = SHRINK[preset]
        if k == 1:
            return self
        return replace(
            self,
            image_size=max(
                2 * PATCH_SIZE, self.image_size // k // (2 * PATCH_SIZE) * 2 * PATCH_SIZE
            ),
            prompt=(max(2, self.prompt[0] // k), max(2, self.prompt[1] // k)),
            response=(max(2, self.response[0] // k), max(2, self.response[1] // k)),
        )

    def x_at(self, preset: str) -> int:
        """This workload's value on its axis at ``preset`` (prompt lengths shrink, counts not)."""
        return self.x // SHRINK[preset] if self.axis == "prompt tokens" else self.x

    def image_tokens(self) -> int:
        """Tokens of one image in the prompt (Qwen2-VL: merged patches plus start/end)."""
        side = self.image_size // PATCH_SIZE
        return (side // 2) ** 2 + 2

    def max_length(self, preset: str) -> int:
        """Prompt + one response never exceed this; neither engine truncates anything."""
        if self.skewed:
            return SKEWED_LIMITS["total"] // SHRINK[preset]
        w = self.shrunk(preset)
        return self.images * w.image_tokens() + w.prompt[1] + w.response[1] + 8


# Log-normal (median, sigma) and the cuts of the ``skewed`` workload, at full size.
SKEWED_PROMPT = (112, 1.0)
SKEWED_RESPONSE = (221, 0.8)
SKEWED_LIMITS = {"prompt": 1536, "response": 1024, "total": 2048}


def _workloads() -> dict[str, Workload]:
    out = [
        Workload(
            f"vlm{n}",
            "qwen2_vl",
            f"prompt-heavy image-text: {n} image(s) of 448 px per prompt, responses 32-128",
            "images per prompt",
            n,
            images=n,
        )
        for n in IMAGE_COUNTS
    ]
    out.append(
        Workload(
            "skewed",
            "text",
            "length-skewed text (UltraFeedback-like log-normal lengths), 8 pairs per batch",
            "",
            skewed=True,
            batch_size=SKEWED_BATCH,
        )
    )
    out += [
        Workload(
            f"prompt{n}",
            "text",
            f"text, {n}-token prompt, 128-token responses",
            "prompt tokens",
            n,
            prompt=(n, n),
            response=(128, 128),
        )
        for n in PROMPT_SWEEP
    ]
    return {w.name: w for w in out}


WORKLOADS = _workloads()


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))))


def _skewed_lengths(rng: random.Random, k: int) -> tuple[int, int, int]:
    limits = {key: value // k for key, value in SKEWED_LIMITS.items()}
    prompt = _lognormal(rng, SKEWED_PROMPT[0] / k, SKEWED_PROMPT[1], 4, limits["prompt"])
    room = min(limits["response"], limits["total"] - prompt - 2)
    chosen = _lognormal(rng, SKEWED_RESPONSE[0] / k, SKEWED_RESPONSE[1], 2, room)
    rejected = _lognormal(rng, SKEWED_RESPONSE[0] / k, SKEWED_RESPONSE[1], 2, room)
    return prompt, chosen, rejected


def workload_pairs(
    workload: Workload, preset: str, n: int, image_dir: Path, seed: int = 0
) -> list[PairText]:
    """``n`` pairs of ``workload`` at ``preset``'s size; a response's last token is ``</s>``."""
    w = workload.shrunk(preset)
    rng = random.Random(seed)
    pairs = []
    for index in range(n):
        if w.skewed:
            prompt, chosen, rejected = _skewed_lengths(rng, SHRINK[preset])
        else:
            prompt = rng.randint(*w.prompt)
            chosen, rejected = rng.randint(*w.response), rng.randint(*w.response)
        images = [
            write_image(image_dir / f"{w.image_size}px-{index}-{i}.png", w.image_size, rng)
            for i in range(w.images)
        ]
        pairs.append(
            PairText(
                id=f"{w.name}-{index}",
                prompt=_words(rng, prompt),
                chosen=_words(rng, chosen - 1) + " " + EOS,
                rejected=_words(rng, rejected - 1) + " " + EOS,
                images=images,
            )
        )
    return pairs
