"""``mmdpo eval``: run built-in benchmarks on a model or run, or score a predictions file.

    mmdpo eval gsm8k,ifeval --model HuggingFaceTB/SmolLM2-135M-Instruct --limit 100
    mmdpo eval preference,pope --model runs/vision        # base model + latest adapter
    mmdpo eval gsm8k --model BASE --adapter runs/math     # an adapter run on top of BASE
    mmdpo eval gsm8k --predictions answers.jsonl          # no model loaded

Each benchmark writes ``<out>/<name>.json`` (metrics and where they came from) and
``<out>/<name>.samples.jsonl`` (one record per sample); the metrics are printed as a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.results import EvalResult, format_table

EXIT_USER_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo eval`` (the caller owns the parser and its help)."""
    parser.add_argument("benchmarks", help="benchmark name(s), comma-separated: gsm8k,ifeval")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder, hub id, or mmdpo run folder")
    source.add_argument(
        "--predictions", help="JSONL of {id, response} to score instead of generating"
    )
    parser.add_argument("--adapter", help="mmdpo run (or checkpoint) whose adapter goes on --model")
    parser.add_argument(
        "--data", help="data file (one benchmark) or folder laid out like $MMDPO_EVAL_DATA"
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N samples only")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="generation: sequences decoded at once; preference: pairs per forward (default 8; "
        "on CPU, generation benchmarks run faster with 32-64)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, help="cap on generated tokens (default: per benchmark)"
    )
    parser.add_argument(
        "--out",
        help="results folder (default: <run>/eval for a run, else eval-results/<model name>)",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="with --predictions: score the predicted samples only",
    )
    parser.add_argument("--dtype", help="weights dtype (default: the run's; float32 on CPU)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for logs and CI)"
    )


def default_out_dir(args: argparse.Namespace) -> Path:
    """Where results go without --out: beside the run, or named after the model/predictions."""
    from eval.export import model_file_name
    from mmdpo.run_folder import RunFolder

    for candidate in (args.adapter, args.model):
        if candidate and RunFolder(candidate).is_run():
            return RunFolder(candidate).eval_dir
    return Path("eval-results") / model_file_name(args.model or Path(args.predictions).stem)


def run(args: argparse.Namespace) -> int:
    """Run ``mmdpo eval``; user errors are printed and give exit status 2."""
    from eval.runner import EvalError
    from mmdpo.run_folder import RunFolderError, check_output_dir

    out_dir = Path(args.out) if args.out else default_out_dir(args)
    try:
        check_output_dir(out_dir, "--out")
        results = _evaluate(args, out_dir)
    except (EvalError, RunFolderError, FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mmdpo eval: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_table(results))
    print(f"results: {out_dir}")
    return 0


def _evaluate(args: argparse.Namespace, out_dir: Path) -> list[EvalResult]:
    """The results, each saved under ``out_dir`` as soon as it is complete."""
    from eval.runner import EvalError, parse_names, run_benchmarks

    if args.limit is not None and args.limit < 1:
        raise EvalError("--limit must be at least 1")
    if args.predictions is not None and not Path(args.predictions).is_file():
        raise EvalError(f"--predictions {args.predictions}: no such file")
    if args.model is not None:
        from mmdpo.models.source import check_model_source

        check_model_source(args.model, "--model")
    if args.adapter is not None and not Path(args.adapter).is_dir():
        raise EvalError(f"--adapter {args.adapter}: no such folder")
    if args.predictions is not None:
        from eval.predictions import score_predictions

        names = parse_names(args.benchmarks)
        if len(names) != 1:
            raise EvalError("--predictions scores one benchmark at a time")
        if args.adapter:
            raise EvalError("--adapter needs --model, not --predictions")
        result = score_predictions(
            names[0],
            args.predictions,
            args.data,
            limit=args.limit,
            allow_missing=args.allow_missing,
        )
        result.save(out_dir)
        return [result]
    return run_benchmarks(
        args.benchmarks,
        model=args.model,
        adapter=args.adapter,
        data=args.data,
        limit=args.limit,
        batch_size=args.batch_size,
        out_dir=out_dir,
        max_new_tokens=args.max_new_tokens,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
