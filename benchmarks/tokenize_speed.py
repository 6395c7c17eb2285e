"""How long the model transform takes on 10,000 text pairs (issue: under 30 s on 2 cores).

    python benchmarks/tokenize_speed.py [--pairs 10000] [--model DIR]

Without --model it uses the project's own tokenizer (mmdpo.tiny); with --model, that model's
tokenizer and chat template (e.g. the SmolLM2 folder written by tasks/smol.py). Prints the
pairs per second and the total; a benchmark, never a timed test.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

from mmdpo.data.pipeline import tokenize_samples
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.types import PreferenceSample

WORDS = (
    "the model answers questions about numbers shapes colours and stories with care "
    "while checking each step twice before it gives a final short reply to the user"
).split()


def make_pairs(n: int, seed: int = 0) -> list[PreferenceSample]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    return [
        PreferenceSample(
            id=f"p{i}",
            prompt=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text(rng.randint(20, 120))},
            ],
            chosen=text(rng.randint(40, 200)),
            rejected=text(rng.randint(40, 200)),
            score_chosen=rng.uniform(5, 9),
            score_rejected=rng.uniform(1, 5),
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--model", help="a model folder whose tokenizer to use")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()

    if args.model:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        name = args.model
    else:
        from mmdpo.tiny import build_tokenizer

        tokenizer = build_tokenizer()
        name = "mmdpo.tiny tokenizer"
    samples = make_pairs(args.pairs)
    transform = PairTransform(tokenizer, TransformSettings(args.max_length))
    started = time.perf_counter()
    result = tokenize_samples(samples, transform, progress=False)
    elapsed = time.perf_counter() - started
    tokens = sum(p.num_tokens for p in result.pairs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"tokenizer: {name}")
    print(
        f"{len(result.pairs)} pairs ({len(result.problems)} problems), {tokens} tokens "
        f"in {elapsed:.1f} s: {len(result.pairs) / elapsed:.0f} pairs/s"
    )


if __name__ == "__main__":
    main()
