"""Results of one benchmark run: metrics, per-sample records, and where every number came from."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData


@dataclass
class EvalResult:
    """Summary metrics, per-sample records and the metadata that makes a number reproducible.

    Attributes:
        benchmark, version, kind: copied from the benchmark.
        metrics: name -> value (``aggregate``'s output).
        records: one dict per sample (id, prompt, response, extracted, score, ...).
        source, sha256, generated, data_note: copied from ``EvalData``; ``generated`` marks a
            seeded stand-in sample, whose numbers are never benchmark numbers.
        n: number of scored samples.
        model, adapter: what produced the responses (a name, path or run folder; the
            predictions file for ``--predictions``).
        generation: generation settings (max_new_tokens, stop, do_sample, batch size, ...).
        extra: anything else worth recording (missing ids of a predictions file, ...).
        created: local time the result was made, ISO 8601.
        artifacts: extra files to write beside the results (file name -> text): the
            upstream-format answers of export benchmarks.
    """

    benchmark: str
    version: str
    kind: str
    metrics: dict[str, float]
    records: list[dict[str, Any]]
    source: str
    sha256: str
    generated: bool
    n: int
    model: str | None = None
    adapter: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    data_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    artifacts: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the records and artifacts: the content of the results JSON."""
        summary = asdict(self)
        del summary["records"], summary["artifacts"]
        summary["metrics"] = {key: _json_number(value) for key, value in self.metrics.items()}
        summary["records_file"] = f"{self.benchmark}.samples.jsonl"
        summary["artifact_files"] = sorted(self.artifacts)
        return summary

    def save(self, out_dir: str | Path) -> Path:
        """Write ``<benchmark>.json``, ``<benchmark>.samples.jsonl`` and any artifacts.

        Returns the path of the results JSON.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results_path = out_dir / f"{self.benchmark}.json"
        results_path.write_text(json.dumps(self.summary(), indent=2, ensure_ascii=False) + "\n")
        with open(out_dir / f"{self.benchmark}.samples.jsonl", "w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        for name, text in self.artifacts.items():
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / name).write_text(text, encoding="utf-8")
        return results_path


def make_result(
    benchmark: Benchmark,
    data: EvalData,
    records: list[dict[str, Any]],
    *,
    model: str | None = None,
    adapter: str | None = None,
    generation: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> EvalResult:
    """Aggregate the records and attach the metadata; what a runner returns per benchmark."""
    return EvalResult(
        benchmark=benchmark.name,
        version=benchmark.version,
        kind=benchmark.kind,
        metrics=benchmark.aggregate(records),
        records=records,
        source=data.source,
        sha256=data.sha256,
        generated=data.generated,
        n=len(records),
        model=model,
        adapter=adapter,
        generation=dict(generation or {}),
        data_note=data.note,
        extra=dict(extra or {}),
        artifacts=benchmark.artifacts(records, model or "model"),
    )


def format_table(results: list[EvalResult]) -> str:
    """A plain-text table: one row per (benchmark, metric); generated data is flagged."""
    rows = [("benchmark", "metric", "value", "n", "data")]
    for result in results:
        data = "GENERATED sample" if result.generated else _short_source(result.source)
        for metric, value in result.metrics.items():
            rows.append((result.benchmark, metric, _format_value(value), str(result.n), data))
        if not result.metrics:
            rows.append((result.benchmark, "-", "-", str(result.n), data))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if any(result.generated for result in results):
        lines.append(
            "GENERATED: a seeded stand-in sample, not the benchmark; numbers are smoke tests."
        )
    return "\n".join(lines)


def _format_value(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def _short_source(source: str) -> str:
    return source if len(source) <= 48 else "..." + source[-45:]


def _json_number(value: Any) -> Any:
    """NaN is not JSON; write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
