"""Score responses generated elsewhere (``mmdpo eval BENCH --predictions FILE``), no model loaded.

A predictions file is JSONL, one row per sample: the benchmark's own id (under ``id`` or the
upstream name, e.g. ``unique_id`` for MATH-500, ``question_id`` for POPE) and the response
(``response``; ``margin`` for ``preference``; a list of strings for multi-turn MT-Bench). Rows
are joined to the benchmark data on that id. Every problem is reported with its file:line:
a row without an id or response, an id given twice, an id the data does not have. Samples
without a prediction are an error too unless ``allow_missing`` (then only the predicted ones
are scored and the results say how many were missing).
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from eval.base import Benchmark
from eval.data import iter_jsonl, sha256_file
from eval.registry import get_benchmark
from eval.results import EvalResult, make_result

# Keys a predictions row may use for its id, besides "id" (upstream names of the same id).
ID_ALIASES = ("id", "unique_id", "question_id", "key", "uid", "image_id", "index")
_SHOWN = 10


def score_predictions(
    benchmark: Benchmark | str,
    predictions_path: str | Path,
    data_path: str | Path | None = None,
    *,
    limit: int | None = None,
    allow_missing: bool = False,
    model: str | None = None,
) -> EvalResult:
    """Join the predictions on the benchmark's ids, score them, and return the result (unsaved).

    Args:
        benchmark: a benchmark or its registry name.
        predictions_path: the JSONL described in the module docstring.
        data_path: ``--data``; otherwise the usual precedence ($MMDPO_EVAL_DATA, hub, generated).
        limit: score only the first ``limit`` samples of the data (predictions for later
            samples are ignored; ids the data does not have at all are still an error).
        allow_missing: score the predicted samples only instead of failing on missing ones.
        model: recorded as the model; default: the predictions file's path.

    Raises:
        ValueError: a malformed row, a duplicate or unknown id, or missing predictions.
    """
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    data = bench.load(data_path, None)
    known = {item["id"] for item in data.items}
    responses = _read_predictions(bench, Path(predictions_path), known, data.source, data.generated)
    items = data.items[:limit] if limit is not None else data.items
    missing = [item["id"] for item in items if item["id"] not in responses]
    if missing and not allow_missing:
        raise ValueError(
            f"{predictions_path}: no prediction for {len(missing)} of {len(items)} samples of "
            f"{bench.name} (first: {missing[:_SHOWN]}); pass --limit, or allow_missing to score "
            "only the predicted samples"
        )
    data.items = [item for item in items if item["id"] in responses]
    records = [bench.score(item, responses[item["id"]]) for item in data.items]
    extra = {
        "predictions": str(predictions_path),
        "predictions_sha256": sha256_file(predictions_path),
    }
    if missing:
        extra.update(missing=len(missing), missing_ids=missing[:100], n_data=len(items))
    return make_result(bench, data, records, model=model or str(predictions_path), extra=extra)


def _read_predictions(
    bench: Benchmark, path: Path, known: set[str], source: str, generated: bool
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    unknown: list[str] = []
    for line_number, row in iter_jsonl(path):
        where = f"{path}:{line_number}"
        id_key = next((key for key in ID_ALIASES if key in row), None)
        if id_key is None:
            raise ValueError(
                f"{where}: no id; expected one of {list(ID_ALIASES)} ({bench.id_field})"
            )
        if bench.response_field not in row:
            raise ValueError(
                f"{where}: no {bench.response_field!r} field; the row has {sorted(row)}"
            )
        sample_id = str(row[id_key])
        if sample_id in first_line:
            raise ValueError(
                f"{where}: id {sample_id} already given at line {first_line[sample_id]}"
            )
        first_line[sample_id] = line_number
        if sample_id not in known:
            unknown.append(f"{where}: {sample_id}")
            continue
        responses[sample_id] = _checked_response(bench, row[bench.response_field], where)
    if unknown:
        hint = (
            " (the data is a GENERATED stand-in: set --data or $MMDPO_EVAL_DATA)"
            if generated
            else ""
        )
        raise ValueError(
            f"{len(unknown)} prediction id(s) not in {bench.name} data {source}{hint}; the id "
            f"is the {bench.id_field}: " + "; ".join(unknown[:_SHOWN])
        )
    return responses


def _checked_response(bench: Benchmark, response: Any, where: str) -> Any:
    if bench.kind == "loglikelihood":
        if isinstance(response, bool) or not isinstance(response, numbers.Real):
            raise ValueError(f"{where}: {bench.response_field} must be a number, got {response!r}")
        return float(response)
    if isinstance(response, list) and all(isinstance(turn, str) for turn in response):
        return response if len(response) > 1 else (response[0] if response else "")
    if not isinstance(response, str):
        raise ValueError(
            f"{where}: {bench.response_field} must be a string, got {type(response).__name__}"
        )
    return response
