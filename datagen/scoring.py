"""``mmdpo score``: attach ``score_chosen`` / ``score_rejected`` to preference pairs.

    mmdpo score pairs.jsonl scored.jsonl --scorer reward_model --model RM --batch-size 16
    mmdpo score math.jsonl scored.jsonl --scorer math --gold-field answer
    mmdpo score if.jsonl scored.jsonl --scorer ifeval
    mmdpo score captions.jsonl scored.jsonl --scorer objects --vocabulary coco
    mmdpo score rated.jsonl scored.jsonl --scorer column --chosen-field r1 --rejected-field r2

The input is read with any data adapter (``--format``, default ``trl``); the output is JSONL in
the TRL layout the ``trl`` adapter reads back (docs/scoring.md). The input is never
overwritten. The scorers rate one response at a time (:class:`Response`), so ``mmdpo pairs``
(datagen/pairs.py) uses the same ones to rate freshly sampled responses.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datagen.scorers import (  # noqa: F401 (re-exported for datagen.pairs and tests)
    DEFAULT_GOLD_FIELDS,
    SCORE_SCALE,
    ColumnScorer,
    IFEvalScorer,
    MathScorer,
    ObjectsScorer,
    Response,
    RewardModelScorer,
    content_text,
    lookup,
    prompt_text,
)
from mmdpo.types import PreferenceSample

# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer by name: how to build it from command-line options, and what it reads.

    Attributes:
        build: options -> a scorer (an object with ``score(responses) -> list[float]``).
        needs_fields: it reads the source row's columns (gold answer, instructions, objects).
        summary: one line for help texts.
    """

    name: str
    build: Callable[[argparse.Namespace], Any]
    needs_fields: bool
    summary: str


def _reward_model(args: argparse.Namespace) -> RewardModelScorer:
    name = getattr(args, "reward_model", None)
    if not name:
        flag = getattr(args, "reward_model_flag", "--model")
        raise ValueError(f"the reward_model scorer needs {flag} (a sequence-classification model)")
    return RewardModelScorer.from_pretrained(
        name,
        dtype=getattr(args, "reward_dtype", None),
        trust_remote_code=getattr(args, "trust_remote_code", False),
        batch_size=getattr(args, "batch_size", 8),
        max_length=getattr(args, "max_length", 2048),
        progress=not getattr(args, "no_progress", False),
    )


def _timeout(args: argparse.Namespace) -> float | None:
    timeout = getattr(args, "verify_timeout", 5.0)
    return None if timeout is not None and timeout <= 0 else timeout


SCORERS: dict[str, ScorerSpec] = {
    "reward_model": ScorerSpec(
        "reward_model", _reward_model, False, "a sequence-classification reward model's logit"
    ),
    "math": ScorerSpec(
        "math",
        lambda args: MathScorer(getattr(args, "gold_field", None), _timeout(args)),
        True,
        "10 if the final answer equals the gold answer (math-verify), else 0",
    ),
    "ifeval": ScorerSpec(
        "ifeval",
        lambda args: IFEvalScorer(
            getattr(args, "instructions_field", "instruction_id_list"),
            getattr(args, "kwargs_field", "kwargs"),
            getattr(args, "loose", False),
        ),
        True,
        "10 x the share of IFEval instructions followed",
    ),
    "objects": ScorerSpec(
        "objects",
        lambda args: ObjectsScorer(
            getattr(args, "objects_field", "objects"), getattr(args, "vocabulary", "coco")
        ),
        True,
        "10 x (1 - hallucinated object mentions / mentions) against known objects",
    ),
    "column": ScorerSpec(
        "column",
        lambda args: ColumnScorer(
            getattr(args, "chosen_field", None), getattr(args, "rejected_field", None)
        ),
        True,
        "copy existing ratings from two columns",
    ),
}


def get_scorer(name: str) -> ScorerSpec:
    """The scorer called ``name``; an unknown name raises a ValueError listing the valid ones."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; valid scorers: {', '.join(SCORERS)}") from None


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


# ---------------------------------------------------------------------------- output


def check_output(out: str | os.PathLike, inputs: Sequence[Any], *, overwrite: bool) -> Path:
    """The output path, refused when it is one of ``inputs`` (always) or exists (unless
    ``overwrite``)."""
    path = Path(out).expanduser()
    for source in inputs:
        given = Path(os.fspath(source)).expanduser()
        same = path.resolve() == given.resolve()
        if not same and path.exists() and given.exists():
            same = os.path.samefile(path, given)
        if same:
            raise ValueError(f"{out}: is the input file {source}; choose another output file")
    if path.is_dir():
        raise ValueError(f"{out}: is a folder; the output is one JSONL file")
    if path.exists() and not overwrite:
        raise ValueError(f"{out}: exists; pass --overwrite to replace it")
    return path


def sample_row(sample: PreferenceSample, image_dir: Path, out_dir: Path) -> dict[str, Any]:
    """One output line in the TRL layout (images as paths; bytes and PIL images are saved
    under ``image_dir``, named relative to the output file's folder)."""
    row: dict[str, Any] = {
        "id": sample.id,
        "prompt": sample.prompt,
        "chosen": sample.chosen,
        "rejected": sample.rejected,
    }
    if sample.images:
        row["images"] = [
            _image_path(image, image_dir, out_dir, f"{sample.id}-{k}")
            for k, image in enumerate(sample.images)
        ]
    if sample.rejected_images is not None:
        row["rejected_images"] = [
            _image_path(image, image_dir, out_dir, f"{sample.id}-rejected-{k}")
            for k, image in enumerate(sample.rejected_images)
        ]
    row.update(
        score_chosen=sample.score_chosen,
        score_rejected=sample.score_rejected,
        modality=sample.modality,
        source=sample.source,
        meta=sample.meta,
    )
    return row


def _image_path(image: Any, image_dir: Path, out_dir: Path, stem: str) -> str:
    if isinstance(image, str):
        return image
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    suffix = (picture.format or "png").lower()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem)
    image_dir.mkdir(parents=True, exist_ok=True)
    path = image_dir / f"{safe}.{suffix}"
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        picture.save(path)
    return os.path.relpath(path, out_dir)


def write_samples(
    samples: Sequence[PreferenceSample],
    out: str | os.PathLike,
    *,
    inputs: Sequence[Any] = (),
    overwrite: bool = False,
) -> Path:
    """Write ``samples`` as JSONL in the TRL layout, atomically; never over an input."""
    path = check_output(out, inputs, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    out_dir = path.resolve().parent
    image_dir = out_dir / f"{path.name}.images"
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=out_dir, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            for sample in samples:
                row = sample_row(sample, image_dir, out_dir)
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------- command


def add_scorer_options(parser: argparse.ArgumentParser) -> None:
    """Options every scorer reads (shared by ``mmdpo score`` and ``mmdpo pairs``)."""
    parser.add_argument("--scorer", help=f"one of: {', '.join(SCORERS)}")
    parser.add_argument(
        "--max-length", type=int, default=2048, help="reward model: token cap (default 2048)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="reward model: run code it ships"
    )
    parser.add_argument(
        "--gold-field", help="math: the gold answer's column (default: answer, gold or gt)"
    )
    parser.add_argument(
        "--verify-timeout",
        type=float,
        default=5.0,
        help="math: seconds per answer check; 0 checks in-process without a limit (default 5)",
    )
    parser.add_argument(
        "--instructions-field",
        default="instruction_id_list",
        help="ifeval: the instruction ids' column (default instruction_id_list)",
    )
    parser.add_argument(
        "--kwargs-field", default="kwargs", help="ifeval: the checker arguments' column"
    )
    parser.add_argument("--loose", action="store_true", help="ifeval: loose instead of strict")
    parser.add_argument(
        "--objects-field", default="objects", help="objects: the known objects' column"
    )
    parser.add_argument(
        "--vocabulary", default="coco", help="objects: coco (default) or shapes (the demo world)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (never the input)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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
