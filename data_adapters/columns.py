"""Any other layout: a mapping from sample fields to the row's own column names.

``{"prompt": "question", "chosen": "good", "rejected": "bad", "score_chosen": "s1"}``:
the columns are renamed, then read as the TRL format reads them (strings or messages,
explicit or implicit prompt, images). A dotted name (``"meta.question"``) reads a nested
field. Fields left out of the mapping are read under their own names when present.
The same renaming works in front of any other adapter (``columns=`` with ``format=``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from data_adapters.fields import FieldError, RowContext
from data_adapters.trl import convert_trl
from mmdpo.types import PreferenceSample

COLUMN_KEYS = (
    "id",
    "prompt",
    "chosen",
    "rejected",
    "images",
    "rejected_images",
    "score_chosen",
    "score_rejected",
    "source",
)


def check_columns(columns: Mapping[str, str]) -> dict[str, str]:
    """Validate a mapping (sample field -> source column); raises ValueError when wrong."""
    if not isinstance(columns, Mapping):
        kind = type(columns).__name__
        raise ValueError(f"columns must be a mapping of field -> column, got {kind}")
    unknown = sorted(set(columns) - set(COLUMN_KEYS))
    if unknown:
        raise ValueError(
            f"unknown field(s) in columns: {', '.join(unknown)}; valid: {', '.join(COLUMN_KEYS)}"
        )
    for key, column in columns.items():
        if not isinstance(column, str) or not column:
            raise ValueError(f"columns[{key!r}] must be a column name, got {column!r}")
    return dict(columns)


def rename_columns(row: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """The row with each mapped column copied under its sample field name."""
    renamed = dict(row)
    for key, column in columns.items():
        value: Any = row
        for part in column.split("."):
            if not isinstance(value, dict) or part not in value:
                raise FieldError(column, f"missing field (mapped to {key})")
            value = value[part]
        renamed[key] = value
    return renamed


def convert_columns(row: dict[str, Any], ctx: RowContext) -> PreferenceSample:
    """A row already renamed by :func:`rename_columns` -> a sample (TRL rules)."""
    return convert_trl(row, ctx)
