"""Load a source into PreferenceSamples, checking every row; report problems as
``FILE:LINE: FIELD: what is wrong``.

Strict by default: any invalid row raises one DataError listing the first 20 problems and
the total. With ``skip_invalid`` the bad rows come back separately with their reasons.
Nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_adapters.columns import check_columns, rename_columns
from data_adapters.fields import FieldError, RowContext
from data_adapters.images import check_image, describe_image, image_content_hash, image_exists
from data_adapters.loaders import DataError, RowError, SourceInfo, describe_source, read_rows
from data_adapters.registry import get_adapter
from mmdpo.types import MODALITIES, PreferenceSample

IMAGE_CHECKS = ("none", "exists", "header", "full")
MAX_LISTED = 20
ID_KEYS = ("id", "prompt_id", "idx")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row; ``str()`` gives ``FILE:LINE: FIELD: message``."""

    file: str
    line: int
    field: str
    message: str
    sample_id: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


@dataclass
class InvalidRow:
    """A row left out, with every reason and the raw row (None when it could not be parsed)."""

    file: str
    line: int
    sample_id: str | None
    problems: list[Problem]
    row: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record (one line of invalid_rows.jsonl); bytes and images shortened."""
        return {
            "file": self.file,
            "line": self.line,
            "id": self.sample_id,
            "problems": [str(problem) for problem in self.problems],
            "row": _json_safe(self.row),
        }


@dataclass
class LoadResult:
    """The valid samples and the invalid rows (empty unless ``skip_invalid``).

    ``default_source`` is the source name samples got because neither ``source_name`` nor a
    ``source`` field named one (the file stem, a Hub dataset's name, or the format for an
    in-memory list); None when ``source_name`` was given.
    """

    samples: list[PreferenceSample]
    invalid: list[InvalidRow] = field(default_factory=list)
    default_source: str | None = None

    @property
    def problems(self) -> list[Problem]:
        return [problem for row in self.invalid for problem in row.problems]


@dataclass
class ValidationReport:
    """What ``mmdpo data validate`` prints: counts, and every problem found."""

    source: str
    format: str
    rows: int
    valid_per_modality: dict[str, int]
    invalid: list[InvalidRow]
    duplicate_ids: int = 0

    @property
    def ok(self) -> bool:
        return not self.invalid

    @property
    def valid(self) -> int:
        return sum(self.valid_per_modality.values())

    @property
    def problems(self) -> list[Problem]:
        return [problem for row in self.invalid for problem in row.problems]


def load_samples(
    source: Any,
    format: str,
    *,
    columns: Mapping[str, str] | None = None,
    modality: str | None = None,
    source_name: str | None = None,
    skip_invalid: bool = False,
    check_images: str = "exists",
    base_dir: str | Path | None = None,
) -> LoadResult:
    """Read ``source`` (a JSON/JSONL/Parquet path, gzip too; a list of dicts; a Hub name)
    with the adapter ``format`` and check every row.

    Args:
        columns: field -> column mapping; required by ``format="columns"``, a renaming in
            front of any other adapter.
        modality: overrides the adapter's modality for every sample.
        source_name: the samples' ``source`` (calibration groups by it). Default: a row's own
            ``source`` field, else the file's stem (``judge`` for ``data/judge.jsonl.gz``), a Hub
            dataset's name without owner and split, or the format for an in-memory list.
        skip_invalid: return bad rows in ``LoadResult.invalid`` instead of raising.
        check_images: ``none``; ``exists`` (a stat per path, the default: nothing is
            decoded); ``header`` (open and verify without decoding); ``full`` (decode).
        base_dir: folder for relative image paths; default: the data file's folder.

    Raises:
        DataError: the source cannot be read, holds no rows, or (strict) has invalid rows.
    """
    samples, invalid = [], []
    for item in iter_checked(
        source,
        format,
        columns=columns,
        modality=modality,
        source_name=source_name,
        check_images=check_images,
        base_dir=base_dir,
    ):
        (invalid if isinstance(item, InvalidRow) else samples).append(item)
    if invalid and not skip_invalid:
        label = describe_source(source).label
        problems = [problem for row in invalid for problem in row.problems]
        total = len(samples) + len(invalid)
        raise DataError(
            f"{label}: {len(invalid)} of {total} rows are invalid "
            "(fix them, or set skip_invalid to keep only the valid rows):\n"
            + format_problems(problems, rows=len(invalid)),
            problems,
        )
    default = None if source_name else default_source(describe_source(source), format)
    return LoadResult(samples, invalid, default)


def validate(
    source: Any,
    format: str,
    *,
    columns: Mapping[str, str] | None = None,
    modality: str | None = None,
    source_name: str | None = None,
    check_images: str = "full",
    base_dir: str | Path | None = None,
) -> ValidationReport:
    """Check every row without keeping the samples; images fully decoded by default."""
    per_modality: Counter[str] = Counter()
    invalid: list[InvalidRow] = []
    duplicates = 0
    for item in iter_checked(
        source,
        format,
        columns=columns,
        modality=modality,
        source_name=source_name,
        check_images=check_images,
        base_dir=base_dir,
    ):
        if isinstance(item, InvalidRow):
            invalid.append(item)
        else:
            per_modality[item.modality] += 1
            duplicates += "original_id" in item.meta
    rows = sum(per_modality.values()) + len(invalid)
    label = describe_source(source).label
    return ValidationReport(label, format, rows, dict(per_modality), invalid, duplicates)


def iter_checked(
    source: Any,
    format: str,
    *,
    columns: Mapping[str, str] | None = None,
    modality: str | None = None,
    source_name: str | None = None,
    check_images: str = "exists",
    base_dir: str | Path | None = None,
) -> Iterator[PreferenceSample | InvalidRow]:
    """Yield each row as a checked sample or as an InvalidRow, in source order.

    Repeated row ids get a ``#2``, ``#3`` ... suffix (the original in ``meta["original_id"]``)
    so that ids stay unique within a load.
    """
    adapter = get_adapter(format)
    if check_images not in IMAGE_CHECKS:
        valid = ", ".join(IMAGE_CHECKS)
        raise ValueError(f"check_images must be one of {valid}, got {check_images!r}")
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    if format == "columns" and not columns:
        raise ValueError(
            'format "columns" needs a columns mapping, e.g. '
            '{"prompt": "question", "chosen": "good", "rejected": "bad"}'
        )
    mapping = check_columns(columns) if columns else {}
    info = describe_source(source)
    anchor = Path(base_dir) if base_dir is not None else info.base_dir
    name = source_name or default_source(info, format)
    seen: Counter[str] = Counter()
    count = 0
    for line, row in read_rows(source):
        count += 1
        if isinstance(row, RowError):
            problem = Problem(info.label, line, row.field, row.message)
            yield InvalidRow(info.label, line, None, [problem])
            continue
        sample_id = None
        try:
            renamed = rename_columns(row, mapping) if mapping else row
            sample_id = _row_id(renamed, info.stem, line)
            ctx = RowContext(info.label, line, sample_id, anchor, name)
            sample = adapter.convert(renamed, ctx)
            if not source_name and renamed.get("source") is not None:
                sample.source = _row_source(renamed["source"])
            issues = sample_issues(sample)
            if not issues:
                issues = image_issues(sample, check_images)
        except FieldError as error:
            issues = [(error.field, error.message)]
        if issues:
            problems = [
                Problem(info.label, line, _source_field(f, mapping), message, sample_id)
                for f, message in issues
            ]
            yield InvalidRow(info.label, line, sample_id, problems, row)
            continue
        if modality is not None:
            sample.modality = modality
        seen[sample.id] += 1
        if seen[sample.id] > 1:
            sample.meta["original_id"] = sample.id
            sample.id = f"{sample.id}#{seen[sample.id]}"
        yield sample
    if count == 0:
        raise DataError(f"{info.label}: no rows")


def sample_issues(sample: PreferenceSample) -> list[tuple[str, str]]:
    """Checks every adapter's output must pass: (field, message) pairs."""
    issues = []
    if not any(_has_content(message.get("content")) for message in sample.prompt):
        issues.append(("prompt", "empty prompt"))
    for name in ("chosen", "rejected"):
        if not getattr(sample, name).strip():
            issues.append((name, "empty response"))
    if issues or sample.chosen.strip() != sample.rejected.strip():
        return issues
    if sample.rejected_images is None:
        issues.append(("rejected", "identical to chosen"))
    elif _same_images(sample.images, sample.rejected_images):
        # An image-contrastive pair whose two image sets are the same pictures: nothing to prefer.
        message = "identical to chosen, and rejected_images are the same images (by content)"
        issues.append(("rejected", message))
    return issues


def _same_images(images: Sequence[Any], rejected_images: Sequence[Any]) -> bool:
    """Whether two image lists hold the same pictures in order, compared by content hash (a
    byte-identical copy under another name counts as the same); unreadable ones never match."""
    if len(images) != len(rejected_images):
        return False
    for image, rejected in zip(images, rejected_images, strict=True):
        if image is rejected or (isinstance(image, str) and image == rejected):
            continue
        digest = image_content_hash(image)
        if digest is None or digest != image_content_hash(rejected):
            return False
    return True


def image_issues(sample: PreferenceSample, mode: str) -> list[tuple[str, str]]:
    """Problems with the sample's images under ``mode`` (see ``load_samples``)."""
    if mode == "none":
        return []
    issues = []
    groups = [("images", sample.images), ("rejected_images", sample.rejected_images or [])]
    for name, images in groups:
        for index, image in enumerate(images):
            if mode == "exists":
                problem = image_exists(image)
            else:
                problem = check_image(image, full=mode == "full")
            if problem:
                issues.append((f"{name}[{index}]", problem))
    return issues


def format_problems(
    problems: Sequence[Problem], limit: int = MAX_LISTED, rows: int | None = None
) -> str:
    """The first ``limit`` problems, one ``FILE:LINE: FIELD: message`` per line, then the total."""
    lines = [str(problem) for problem in problems[:limit]]
    where = f" in {rows} rows" if rows is not None else ""
    if len(problems) > limit:
        hidden = len(problems) - limit
        lines.append(f"... {hidden} more not shown; {len(problems)} problems{where} in total")
    else:
        lines.append(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}{where} in total")
    return "\n".join(lines)


def format_report(report: ValidationReport, limit: int = MAX_LISTED) -> str:
    """The text ``mmdpo data validate`` prints."""
    counts = ", ".join(f"{m}: {n}" for m, n in sorted(report.valid_per_modality.items())) or "none"
    head = (
        f"{report.source} (format {report.format}): {report.rows} rows, "
        f"{report.valid} valid ({counts}), {len(report.invalid)} invalid"
    )
    lines = [head]
    if report.duplicate_ids:
        lines.append(f"note: {report.duplicate_ids} repeated ids were made unique with a #N suffix")
    if not report.ok:
        lines.append(format_problems(report.problems, limit, rows=len(report.invalid)))
    return "\n".join(lines)


def write_invalid_rows(invalid: Sequence[InvalidRow], path: str | Path) -> None:
    """Write one JSON line per invalid row (the engine's invalid_rows.jsonl)."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in invalid:
            handle.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")


def default_source(info: SourceInfo, format: str) -> str:
    """The calibration group name of a source without ``source_name``: a file's stem, a Hub
    dataset's name (``ultrafeedback_binarized`` for ``HuggingFaceH4/ultrafeedback_binarized:
    train_prefs``, so its splits share one group), the format for an in-memory list."""
    return format if info.kind == "memory" else info.stem


def _row_source(value: Any) -> str:
    """A row's own ``source`` field: a non-empty string (a number is taken as its text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise FieldError("source", f"expected a non-empty source name, got {value!r}")
    return str(value).strip()


def _row_id(row: dict[str, Any], stem: str, line: int) -> str:
    for key in ID_KEYS:
        value = row.get(key)
        if value is not None and str(value).strip():
            return str(value)
    return f"{stem}:{line}"


def _source_field(name: str, mapping: Mapping[str, str]) -> str:
    """Name a field as the user's file names it (``chosen`` -> ``good`` under a mapping)."""
    cut = min((i for i in (name.find("["), name.find(".")) if i >= 0), default=len(name))
    head = name[:cut]
    return mapping.get(head, head) + name[cut:] if mapping else name


def _has_content(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return bool(content)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and inf are not JSON
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return describe_image(value)
