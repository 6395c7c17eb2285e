"""Every built-in benchmark by name (``mmdpo eval NAME``)."""

from __future__ import annotations

from eval.base import Benchmark
from eval.chair import CHAIR
from eval.export import AlpacaEval, ArenaHard, MMHalBench, MTBench
from eval.gsm8k import GSM8K
from eval.ifeval.benchmark import IFEval
from eval.math500 import Math500, MathJsonl
from eval.pope import POPE
from eval.preference import Preference

BENCHMARKS: dict[str, Benchmark] = {
    "preference": Preference(),
    "gsm8k": GSM8K(),
    "math500": Math500(),
    "math_jsonl": MathJsonl(),
    "pope": POPE(),
    "chair": CHAIR(),
    "alpaca_eval": AlpacaEval(),
    "arena_hard": ArenaHard(),
    "mt_bench": MTBench(),
    "mmhal_bench": MMHalBench(),
    "ifeval": IFEval(),
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; an unknown name raises a KeyError listing the valid ones."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        valid = ", ".join(sorted(BENCHMARKS))
        raise KeyError(f"unknown benchmark {name!r}; valid names: {valid}") from None
