"""The ``mmdpo`` command: arguments in, the application (``tasks``, ``eval``) called, one clear
line out for a user's mistake. Nothing imports this module but ``python -m mmdpo``.

    mmdpo train [TASK] [--config FILE] [--resume] [--eval [--eval-limit N]] [key=value ...]
    mmdpo data validate PATH [PATH ...] --format NAME [--images full|header|exists|none]
    mmdpo data inspect PATH [PATH ...] --format NAME [--model M]
    mmdpo data formats
    mmdpo losses
    mmdpo eval BENCH[,BENCH] --model MODEL_OR_RUN [--adapter RUN] [--limit N] | --predictions F
    mmdpo export RUN [--merge] --out DIR
    mmdpo score IN OUT --scorer NAME
    mmdpo pairs PROMPTS OUT --model M --k 8
    mmdpo demo [--out DIR] [--compare dpo] [--seeds 0-9] [key=value ...]
    mmdpo ablate --task demo|smol-text|smol-math|config [--config F] [--seeds N] [--out DIR]
    mmdpo report RUN [RUN ...] [--out FILE]

A user's mistake (bad config, bad data, a wrong combination) prints one clear message and
exits with status 2, never a traceback; set MMDPO_DEBUG=1 to see the traceback anyway.
Ctrl-C during training finishes the step, saves, and prints the command that resumes (130).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from typing import Any

from mmdpo.config import ConfigError, load_config
from mmdpo.process import is_main_process

EXIT_USER_ERROR = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from data_adapters import DataError, UnknownFormatError
    from mmdpo.checkpoint import CheckpointError
    from mmdpo.models.quantization import QuantizationUnavailableError
    from mmdpo.setup import SetupError
    from mmdpo.trainer import TrainingError

    return (
        ConfigError,
        DataError,
        UnknownFormatError,
        SetupError,
        TrainingError,
        CheckpointError,
        QuantizationUnavailableError,
        FileNotFoundError,
        ValueError,  # the remaining user mistakes: unknown names, bad arguments, bad rows
    )


def _task_and_overrides(words: list[str]) -> tuple[Any, list[str]]:
    """``[TASK] key=value ...``: the first word names a task unless it is an override."""
    from tasks import get_task

    if words and "=" not in words[0]:
        try:
            return get_task(words[0]), words[1:]
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return None, words


def cmd_train(args: argparse.Namespace) -> int:
    task, overrides = _task_and_overrides(args.words)
    if task is not None:
        config = task.load_config(args.config, overrides)
    else:
        config = load_config(args.config, overrides)
    from mmdpo.run_folder import RunFolder
    from tasks.run import before_after_table, train_run

    done = train_run(config, resume=args.resume, evaluate=_eval_plan(args, task))
    if not is_main_process():
        return 0
    result, folder = done.result, RunFolder(done.result.run_dir)
    print(f"run folder: {result.run_dir}")
    print(f"final checkpoint: {result.final_checkpoint}")
    if folder.report_file.is_file():
        print(f"report: {folder.report_file}")
    for key in ("loss", "rewards/accuracies", "rewards/margins"):
        if key in result.train_metrics:
            print(f"  train {key}: {result.train_metrics[key]:.4f}")
    for key, value in sorted(result.eval_metrics.items()):
        print(f"  {key}: {value:.4f}")
    if done.after:
        where = folder.eval_dir
        print(f"\n{task.name} eval suite (results in {where}/before and {where}/after):")
        print(before_after_table(done.before, done.after))
    return 0


def _eval_plan(args: argparse.Namespace, task: Any) -> Any:
    """``--eval``: the task's eval suite before and after training; None without it."""
    if not args.eval:
        if args.eval_limit is not None or args.eval_data is not None:
            raise ConfigError("--eval-limit and --eval-data need --eval")
        return None
    if task is None:
        raise ConfigError(
            "--eval runs a task's eval suite: name the task (mmdpo train text --eval)"
        )
    if args.eval_limit is not None and args.eval_limit < 1:
        raise ConfigError("--eval-limit must be at least 1")
    from tasks.run import EvalPlan

    return EvalPlan(tuple(task.eval_suite), data=args.eval_data, limit=args.eval_limit)


def cmd_data(args: argparse.Namespace) -> int:
    from data_adapters import (
        ADAPTERS,
        format_inspection,
        format_report,
        inspect_samples,
        load_samples,
        validate,
    )

    if args.data_command == "formats":
        for name, adapter in ADAPTERS.items():
            print(f"{name:22s} {getattr(adapter, 'summary', '')}")
        return 0
    columns = parse_columns(args.columns)
    if args.data_command == "validate":
        reports = [
            validate(path, args.format, columns=columns, check_images=args.images)
            for path in args.path
        ]
        print("\n".join(format_report(report) for report in reports))
        return 0 if all(report.ok for report in reports) else 1
    # Several files are loaded as training loads data.train: each its own group by default.
    results = [load_samples(p, args.format, columns=columns, skip_invalid=True) for p in args.path]
    samples = [sample for result in results for sample in result.samples]
    print(format_inspection(inspect_samples(samples)))
    invalid = sum(len(result.invalid) for result in results)
    if invalid:
        print(f"\n{invalid} invalid row(s) left out; run `mmdpo data validate`")
    if args.model:
        print("\n" + _token_lengths(samples, args.model))
    return 0


def parse_columns(pairs: list[str] | None) -> dict[str, str] | None:
    """``--columns prompt=question chosen=good`` -> {"prompt": "question", ...}."""
    if not pairs:
        return None
    columns = {}
    for pair in pairs:
        field, _, column = pair.partition("=")
        if not field or not column:
            raise ConfigError(
                f"--columns {pair!r}: expected FIELD=COLUMN, e.g. --columns prompt=question "
                "chosen=good rejected=bad"
            )
        columns[field] = column
    return columns


def _token_lengths(samples: list[Any], model: str) -> str:
    """Token-length percentiles under a model's template (prompt, chosen, rejected)."""
    from mmdpo.data.pipeline import tokenize_samples
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.setup import load_processing

    config = load_config(None, [f"model.name_or_path={model}", "data.train=-"])
    processing, is_vlm = load_processing(config)
    transform = PairTransform(processing, TransformSettings(max_length=1 << 30), is_vlm=is_vlm)
    result = tokenize_samples(samples, transform, desc="tokenizing")
    lines = [f"token lengths under {model} (p50 / p90 / p99 / max):"]
    for name, values in (
        ("prompt", [len(p.prompt_ids) for p in result.pairs]),
        ("chosen", [len(p.chosen_ids) for p in result.pairs]),
        ("rejected", [len(p.rejected_ids) for p in result.pairs]),
        (
            "prompt+longest",
            [len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in result.pairs],
        ),
    ):
        if not values:
            continue
        values = sorted(values)
        pick = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.9, 0.99)]
        lines.append(f"  {name:15s} {pick[0]} / {pick[1]} / {pick[2]} / {values[-1]}")
    if result.problems:
        lines.append(f"  {len(result.problems)} sample(s) could not be tokenized")
    return "\n".join(lines)


def cmd_losses(args: argparse.Namespace) -> int:
    from mmdpo.losses import LOSSES

    for name, spec in LOSSES.items():
        ref = "reference" if spec.needs_reference else "reference-free"
        norm = "mean logps" if spec.length_normalized else "summed logps"
        print(f"{name:8s} {ref:15s} {norm:13s} {spec.summary}")
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items())
        print(f"{'':8s} {defaults}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tasks.demo import run_demo

    if args.seeds:
        from tasks.demo_seeds import parse_seeds, run_demo_seeds

        return run_demo_seeds(args.out, parse_seeds(args.seeds), args.words, args.compare)
    return run_demo(out_dir=args.out, overrides=args.words, compare=args.compare)


# Commands whose arguments live beside their code: module, its add-arguments function, its
# run function, help. Only the chosen one is imported, so `mmdpo --help` stays fast.
PLUGINS: dict[str, tuple[str, str, str, str]] = {
    "eval": ("eval.command", "add_arguments", "run", "run built-in benchmarks on a model or a run"),
    "export": (
        "mmdpo.export",
        "add_arguments",
        "run",
        "write a run's adapter, or a merged model, with a model card",
    ),
    "score": (
        "datagen.scoring",
        "add_score_arguments",
        "run_score",
        "attach score_chosen/score_rejected to preference pairs",
    ),
    "pairs": (
        "datagen.pairs",
        "add_pairs_arguments",
        "run_pairs",
        "sample K responses per prompt, score them, build pairs",
    ),
    "ablate": (
        "tasks.ablate",
        "add_arguments",
        "run",
        "train loss variants (Uni-DPO ablations, DPO, SimPO) over seeds; mean, std, 95% CI",
    ),
    "report": (
        "mmdpo.report.command",
        "add_arguments",
        "run",
        "write one self-contained HTML page about one or several runs",
    ),
    "smol": (
        "tasks.smol_preset",
        "add_arguments",
        "run",
        "align SmolLM2-135M on a CPU, offline: prompts, on-policy pairs, Uni-DPO, eval",
    ),
}


def cmd_plugin(args: argparse.Namespace) -> int:
    module, _, runner, _ = PLUGINS[args.command]
    return getattr(importlib.import_module(module), runner)(args)


def _add_plugin_commands(sub: Any, wanted: str | None) -> None:
    for name, (module, add, _, text) in PLUGINS.items():
        parser = sub.add_parser(name, help=text, description=text)
        if name == wanted:
            getattr(importlib.import_module(module), add)(parser)
        parser.set_defaults(func=cmd_plugin)


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmdpo", description="Uni-DPO and the DPO family for LLMs and VLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train a LoRA adapter on preference pairs",
        description="mmdpo train [text|math|vision|mixed] [--config FILE] [--resume] "
        "[--eval [--eval-limit N] [--eval-data PATH]] [key=value ...]",
    )
    train.add_argument("--config", help="YAML config file (see tasks/recipes and README)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument(
        "--eval",
        action="store_true",
        help="run the task's eval suite on the base model before training and on the run "
        "after it (results in <output_dir>/eval/before and /after)",
    )
    train.add_argument("--eval-limit", type=int, help="with --eval: the first N samples each")
    train.add_argument(
        "--eval-data", help="with --eval: benchmark data file or folder (as mmdpo eval --data)"
    )
    train.add_argument(
        "words",
        nargs="*",
        metavar="[TASK] key=value",
        help="an optional task (text, math, vision, mixed) whose defaults the config and "
        "overrides refine, then dotted overrides, e.g. train.learning_rate=1e-6",
    )
    train.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="validate or inspect a preference data file")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, text in (("validate", "check every row"), ("inspect", "counts, scores, examples")):
        p = data_sub.add_parser(name, help=text)
        p.add_argument(
            "path", nargs="+", help="JSON / JSONL / Parquet files (gzip too) or hub dataset names"
        )
        p.add_argument("--format", required=True, help="adapter name (mmdpo data formats)")
        p.add_argument("--columns", nargs="*", help="field=column pairs for --format columns")
        if name == "validate":
            p.add_argument(
                "--images",
                default="full",
                choices=("full", "header", "exists", "none"),
                help="how deeply to check images (default: decode them fully)",
            )
        else:
            p.add_argument("--model", help="also report token lengths under this model's template")
        p.set_defaults(func=cmd_data)
    formats = data_sub.add_parser("formats", help="list the adapters")
    formats.set_defaults(func=cmd_data)

    losses = sub.add_parser("losses", help="list the losses and their defaults")
    losses.set_defaults(func=cmd_losses)

    _add_plugin_commands(sub, wanted)

    demo = sub.add_parser("demo", help="the offline demo: a tiny model aligned in minutes")
    demo.add_argument("--out", default="runs/demo", help="run folder")
    demo.add_argument("--compare", default=None, help="also train this loss (e.g. dpo)")
    demo.add_argument(
        "--seeds", help="run once per seed (e.g. 0-9 or 1,3,5) into OUT/seed-N; print the spread"
    )
    demo.add_argument("words", nargs="*", help="dotted overrides of the demo config")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((word for word in argv if not word.startswith("-")), None))
    # Overrides may come after options (`train text --config F lr=...`): argparse leaves them over.
    args, extra = parser.parse_known_args(argv)
    stray = [word for word in extra if word.startswith("-") or not hasattr(args, "words")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.words = [*args.words, *extra]
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        if os.environ.get("MMDPO_DEBUG"):
            raise
        print(f"mmdpo {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stopped:
        # mmdpo.trainer.TrainingInterrupted (not imported here: it pulls in torch) says what
        # it saved; a plain Ctrl-C outside the training loop says nothing.
        print(f"mmdpo {args.command}: {stopped or 'interrupted'}", file=sys.stderr)
        if getattr(stopped, "checkpoint", None) is not None:
            again = [*argv, *([] if "--resume" in argv else ["--resume"])]
            print(f"resume with: mmdpo {shlex.join(again)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
