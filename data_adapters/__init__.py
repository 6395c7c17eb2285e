"""Source formats -> PreferenceSample: adapters, loaders, validation, inspection.

Typical use::

    from data_adapters import load_samples
    result = load_samples("pairs.jsonl", "ultrafeedback", skip_invalid=True)
    result.samples, result.invalid
"""

from data_adapters.fields import FieldError, RowContext
from data_adapters.groups import adopt_training_sources
from data_adapters.images import check_image, open_image, resolve_image
from data_adapters.inspect import Inspection, format_inspection, inspect_samples, render_sample
from data_adapters.loaders import DataError, RowError, read_rows
from data_adapters.registry import ADAPTERS, Adapter, UnknownFormatError, get_adapter
from data_adapters.validation import (
    InvalidRow,
    LoadResult,
    Problem,
    ValidationReport,
    format_problems,
    format_report,
    load_samples,
    validate,
    write_invalid_rows,
)

__all__ = [
    "ADAPTERS",
    "Adapter",
    "DataError",
    "FieldError",
    "Inspection",
    "InvalidRow",
    "LoadResult",
    "Problem",
    "RowContext",
    "RowError",
    "UnknownFormatError",
    "ValidationReport",
    "adopt_training_sources",
    "check_image",
    "format_inspection",
    "format_problems",
    "format_report",
    "get_adapter",
    "inspect_samples",
    "load_samples",
    "open_image",
    "read_rows",
    "render_sample",
    "resolve_image",
    "validate",
    "write_invalid_rows",
]
