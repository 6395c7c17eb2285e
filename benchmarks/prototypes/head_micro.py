"""The LM head + log-probs alone, forward and backward, at one text step's shape
(1,708 positions, hidden 512, vocabulary 32k, 536 response targets): TRL's fused head as its
trainer calls it, TRL's head with log-probs only, mmdpo's (full logits, chunked log-softmax
on the targets), and a response-only head (proposal 1 in analysis.md).

    python benchmarks/prototypes/head_micro.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trl.kernels import ChunkedLogProbFunction  # noqa: E402
from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE  # noqa: E402

from mmdpo.logprobs import _ChunkedTargetLogps  # noqa: E402

POSITIONS, HIDDEN, VOCAB, TARGETS = 1708, 512, 32000, 536
TRL_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # what DPOTrainer asks for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden = torch.randn(POSITIONS, HIDDEN, requires_grad=True)
    weight = torch.randn(VOCAB, HIDDEN) * 0.02
    labels = torch.randint(0, VOCAB, (POSITIONS,))
    rows = torch.randperm(POSITIONS)[:TARGETS].sort().values

    def trl_fused(outputs=TRL_OUTPUTS):
        out = ChunkedLogProbFunction.apply(
            hidden, weight, None, labels, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, outputs
        )
        out[0].sum().backward()

    def trl_log_probs_only():
        trl_fused(("log_probs",))

    def mmdpo_today():
        logits = hidden @ weight.t()
        _ChunkedTargetLogps.apply(logits, rows, labels[rows], 1024).sum().backward()

    def response_only():
        logits = hidden[rows] @ weight.t()
        picked = logits.gather(1, labels[rows, None]) - logits.logsumexp(-1, keepdim=True)
        picked.sum().backward()

    variants = (trl_fused, trl_log_probs_only, mmdpo_today, response_only)
    times: dict[str, list[float]] = {f.__name__: [] for f in variants}
    for _ in range(args.repeats):
        for variant in variants:
            hidden.grad = None
            started = time.perf_counter()
            variant()
            times[variant.__name__].append(time.perf_counter() - started)
    for name, values in times.items():
        runs = [round(v, 2) for v in values]
        print(f"{name}: median {statistics.median(values):.2f} s ({runs})")


if __name__ == "__main__":
    main()
