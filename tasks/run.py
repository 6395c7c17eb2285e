"""The application's training entry point: a config's data loaded with the adapters, then the
engine. ``mmdpo train``, ``mmdpo.train(config)`` and the presets all come through here.

    from tasks.run import train_run
    result = train_run(config).result               # loads config.data, trains
    done = train_run(config, evaluate=EvalPlan(get_task("text").eval_suite, limit=100))
    done.before, done.after                         # the task's evals before and after

It lives outside the engine (``mmdpo/``) because it composes the engine with the data
adapters and the evals, which the engine may not import; and outside the CLI because the CLI
is only argument parsing, which a Python caller or a preset should not have to go through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdpo.config import Config, ConfigError
from mmdpo.process import is_main_process
from mmdpo.run_folder import RunFolder
from mmdpo.trainer import RunResult
from mmdpo.trainer import train as train_engine

ENTRY_KEYS = ("path", "format", "modality", "source", "columns")


@dataclass(frozen=True)
class EvalPlan:
    """Benchmarks to run on the base model before training and on the run after it.

    Attributes:
        benchmarks: names (a task's ``eval_suite``); log-likelihood ones (``preference``)
            compare the adapter on and off, so they run after training only.
        data: a data file or a folder laid out like $MMDPO_EVAL_DATA (``mmdpo eval --data``).
        limit: the first N samples of each benchmark.
        batch_size: generation: sequences decoded at once; preference: pairs per forward.
        max_new_tokens: a cap on generated tokens (default: each benchmark's own).
    """

    benchmarks: tuple[str, ...]
    data: str | None = None
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None


@dataclass
class TrainedRun:
    """A run's outcome, with the evals before and after when an ``EvalPlan`` was given."""

    result: RunResult
    before: list[Any] = field(default_factory=list)
    after: list[Any] = field(default_factory=list)


def train_run(
    config: Config, *, resume: bool = False, evaluate: EvalPlan | None = None
) -> TrainedRun:
    """Load and validate ``config.data`` (invalid rows into the run folder), then train;
    with ``evaluate``, run its benchmarks on the base model first and on the run after.

    The run folder, the data and the benchmarks' data are all checked before any model
    loads: a folder that already holds a run is refused unless ``resume``.
    """
    folder = RunFolder(config.train.output_dir)
    folder.prepare(resume=resume)
    if evaluate is not None:
        _check_eval_plan(evaluate)
    train_samples, eval_samples = load_run_data(config, folder)
    before = _evaluate_base(config, evaluate, folder, resume) if evaluate else []
    result = train_engine(config, train_samples, eval_samples, resume=resume)
    after = []
    if evaluate is not None:
        after = _run_benchmarks(evaluate, evaluate.benchmarks, str(folder.path), config, "after")
    return TrainedRun(result, before, after)


def _check_eval_plan(plan: EvalPlan) -> None:
    """Every benchmark known and its data readable, before hours of training."""
    from eval.registry import get_benchmark

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "--eval runs in one process; under accelerate launch train first, then run "
            "`mmdpo eval SUITE --model RUN`"
        )
    for name in plan.benchmarks:
        try:
            get_benchmark(name).load(plan.data, plan.limit)
        except KeyError as err:
            raise ConfigError(str(err.args[0] if err.args else err)) from None


def _evaluate_base(config: Config, plan: EvalPlan, folder: RunFolder, resume: bool) -> list[Any]:
    """The generation benchmarks on the base model, loaded as the run loads it (same
    quantization and dtype); kept from the first attempt when a run is resumed."""
    from eval.registry import get_benchmark

    if resume and (folder.eval_dir / "before").is_dir():
        return []
    names = [n for n in plan.benchmarks if get_benchmark(n).kind != "loglikelihood"]
    if not names:
        return []
    return _run_benchmarks(plan, names, config.model.name_or_path, config, "before")


def _run_benchmarks(
    plan: EvalPlan, names: Any, model: str, config: Config, stage: str
) -> list[Any]:
    from eval.runner import run_benchmarks

    print(f"eval {stage} training: {', '.join(names)} on {model}", flush=True)
    return run_benchmarks(
        list(names),
        model=model,
        data=plan.data,
        limit=plan.limit,
        batch_size=plan.batch_size,
        max_new_tokens=plan.max_new_tokens,
        out_dir=RunFolder(config.train.output_dir).eval_dir / stage,
        dtype=config.model.dtype,
        progress=config.train.progress,
        model_settings=config.to_dict()["model"],
    )


def before_after_table(before: list[Any], after: list[Any]) -> str:
    """One row per (benchmark, metric): the value before training, after, and the change."""
    earlier = {(r.benchmark, k): v for r in before for k, v in r.metrics.items()}
    rows = [("benchmark", "metric", "before", "after", "change")]
    for result in after:
        for metric, value in result.metrics.items():
            old = earlier.get((result.benchmark, metric))
            change = "" if old is None else _number(value - old)
            rows.append((result.benchmark, metric, _number(old), _number(value), change))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any(r.generated for r in [*before, *after]):
        lines.append("GENERATED: seeded stand-in samples, not the benchmarks; smoke numbers only.")
    return "\n".join(lines)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def data_entries(value: Any, config: Config) -> list[dict[str, Any]]:
    """data.train / data.eval as a list of {path, format, modality, source, columns}."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        entry = {"path": item} if isinstance(item, str) else dict(item)
        if "path" not in entry:
            raise ConfigError(f"data: each entry needs a path, got {item!r}")
        unknown = set(entry) - set(ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"data: unknown key(s) {sorted(unknown)} in entry {item!r}")
        entry.setdefault("format", config.data.format)
        entry.setdefault("modality", config.data.modality)
        entry.setdefault("source", config.data.source)
        entry.setdefault("columns", config.data.columns)
        out.append(entry)
    return out


def load_run_data(config: Config, folder: RunFolder | Path) -> tuple[list[Any], list[Any]]:
    """Training and held-out samples, validated; rows left out go to invalid_rows.jsonl."""
    from data_adapters import adopt_training_sources, load_samples
    from mmdpo.data.pipeline import split_eval

    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    grouped = config.data.calibration != "none" or config.loss.kwargs.get("tau_good") == "auto"

    def load(value: Any, split: str, train: list[Any] | None = None) -> list[Any]:
        samples, invalid = [], []
        for entry in data_entries(value, config):
            result = load_samples(
                entry["path"],
                entry["format"],
                columns=entry["columns"],
                modality=entry["modality"],
                source_name=entry["source"],
                skip_invalid=config.data.skip_invalid,
            )
            if train is not None:  # held-out files join the training data's score groups
                notes = adopt_training_sources(train, result, str(entry["path"]), grouped)
                if notes and is_main_process():
                    print("\n".join(notes))
            samples += result.samples
            invalid += result.invalid
        if is_main_process():
            rows = [row.to_dict() for row in invalid]
            if folder.record_invalid(rows, stage="load", split=split):
                print(f"skipped {len(rows)} invalid row(s): see {folder.invalid_rows_file}")
        return samples

    train = load(config.data.train, "train")
    if config.data.eval is not None:
        return train, load(config.data.eval, "eval", train)
    return split_eval(train, config.data.eval_fraction, config.train.seed)
