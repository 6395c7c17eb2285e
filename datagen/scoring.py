"""``mmdpo score``: attach ``score_chosen`` / ``score_rejected`` to preference pairs.

    mmdpo score pairs.jsonl scored.jsonl --scorer reward_model --model RM --batch-size 16
    mmdpo score math.jsonl scored.jsonl --scorer math --gold-field answer
    mmdpo score if.jsonl scored.jsonl --scorer ifeval
    mmdpo score captions.jsonl scored.jsonl --scorer objects --vocabulary coco
    mmdpo score rated.jsonl scored.jsonl --scorer column --chosen-field r1 --rejected-field r2

The input is read with any data adapter (``--format``, default ``trl``); the output is JSONL in
the TRL layout the ``trl`` adapter reads back (docs/scoring.md). The input is never
overwritten. The scorers rate one response at a time (:class:`Response`), so ``mmdpo pairs``
(datagen/pairs.py) uses the same ones (datagen/scorers.py, by name in datagen/registry.py)
to rate freshly sampled responses.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from datagen.output import check_output, write_samples
from datagen.registry import SCORERS, add_scorer_options, get_scorer
from datagen.scorers import Response
from mmdpo.types import PreferenceSample


def score_samples(
    samples: Sequence[PreferenceSample], scorer: Any, fields: Sequence[dict[str, Any]]
) -> list[PreferenceSample]:
    """Copies of ``samples`` with both scores from ``scorer`` (one call for all responses)."""
    responses = []
    for sample, row in zip(samples, fields, strict=True):
        where = f"{sample.meta.get('file', '<memory>')}:{sample.meta.get('line', '?')}"
        for side in ("chosen", "rejected"):
            text = getattr(sample, side)
            responses.append(Response(sample.prompt, text, row, where, side))
    scores = scorer.score(responses)
    for response, value in zip(responses, scores, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"{response.where}: {response.side}: the scorer gave {value}")
    return [
        replace(sample, score_chosen=scores[2 * i], score_rejected=scores[2 * i + 1])
        for i, sample in enumerate(samples)
    ]


def row_fields(source: Any, samples: Sequence[PreferenceSample]) -> list[dict[str, Any]]:
    """Each sample's source-row columns, found by its line: the raw row over its nested
    ``meta`` over the sample's meta."""
    from data_adapters import read_rows

    rows = {line: row for line, row in read_rows(source) if isinstance(row, dict)}
    fields = []
    for sample in samples:
        row = rows.get(sample.meta.get("line"), {})
        nested = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        fields.append({**sample.meta, **nested, **row})
    return fields


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo score`` (the caller owns the parser and its help)."""
    parser.add_argument("input", metavar="IN", help="preference pairs (JSON/JSONL/Parquet)")
    parser.add_argument("out", metavar="OUT", help="output JSONL (TRL layout, with scores)")
    parser.add_argument("--format", default="trl", help="IN's adapter (default trl)")
    parser.add_argument("--columns", nargs="*", help="field=column pairs for --format columns")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="leave out invalid rows instead of failing"
    )
    parser.add_argument(
        "--model", dest="reward_model", help="reward_model: a sequence-classification model"
    )
    parser.add_argument("--dtype", dest="reward_dtype", help="reward_model: weights dtype")
    parser.add_argument("--batch-size", type=int, default=8, help="responses per batch (8)")
    parser.add_argument("--chosen-field", help="column: the chosen response's rating")
    parser.add_argument("--rejected-field", help="column: the rejected response's rating")
    add_scorer_options(parser)
    parser.set_defaults(reward_model_flag="--model")


def parse_columns(pairs: Sequence[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise ValueError(f"--columns: expected field=column pairs, got {' '.join(bad)}")
    return dict(pair.split("=", 1) for pair in pairs)


def run_score(args: argparse.Namespace) -> int:
    """Run ``mmdpo score``. User mistakes raise ValueError / FileNotFoundError."""
    from data_adapters import load_samples
    from data_adapters.loaders import is_hub_name

    if not args.scorer:
        raise ValueError(f"--scorer is required; valid scorers: {', '.join(SCORERS)}")
    spec = get_scorer(args.scorer)
    if not Path(args.input).expanduser().exists() and not is_hub_name(str(args.input)):
        raise FileNotFoundError(f"{args.input}: file not found")
    check_output(args.out, [args.input], overwrite=args.overwrite)
    result = load_samples(
        args.input,
        args.format,
        columns=parse_columns(args.columns),
        skip_invalid=args.skip_invalid,
    )
    samples = result.samples
    if not samples:
        raise ValueError(f"{args.input}: no valid pairs to score")
    scorer = spec.build(args)
    fields = row_fields(args.input, samples) if spec.needs_fields else [{} for _ in samples]
    scored = score_samples(samples, scorer, fields)
    out = write_samples(scored, args.out, inputs=[args.input], overwrite=args.overwrite)
    print(summarize(scored, spec.name, skipped=len(result.invalid)))
    print(f"wrote {out}")
    return 0


def summarize(samples: Sequence[PreferenceSample], scorer: str, skipped: int = 0) -> str:
    chosen = [s.score_chosen for s in samples]
    rejected = [s.score_rejected for s in samples]
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    ties = sum(c == r for c, r in zip(chosen, rejected, strict=True))
    text = (
        f"scored {len(samples)} pairs with {scorer}: mean chosen {statistics.fmean(chosen):.3f}, "
        f"mean rejected {statistics.fmean(rejected):.3f}; chosen > rejected in {wins} "
        f"({wins / len(samples):.1%}), ties {ties}"
    )
    if skipped:
        text += f"; {skipped} invalid rows left out"
    return text
