"""Read raw rows from JSON, JSONL, Parquet (gzip too), an in-memory list, or a Hub dataset.

Every reader yields ``(line, row)``: ``line`` is the 1-based line of the row in a text file,
its 1-based position in a Parquet file, list or Hub split; ``row`` is a dict, or a
:class:`RowError` for a row that could not be parsed (the caller turns it into a problem, so
one bad line does not hide the others).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")  # each also with .gz
GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data source cannot be read or holds invalid rows; the message says where and why."""

    def __init__(self, message: str, problems: Iterable[Any] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class RowError:
    """A row that could not be parsed; ``field`` is ``json`` or ``row``."""

    field: str
    message: str


@dataclass(frozen=True)
class SourceInfo:
    """Where rows come from: ``label`` names it in messages, ``stem`` prefixes derived ids,
    ``base_dir`` anchors relative image paths."""

    label: str
    stem: str
    base_dir: Path | None
    kind: str  # "file", "memory" or "hub"


def describe_source(source: Any) -> SourceInfo:
    """Say what ``source`` is without reading it (raises DataError for a missing file)."""
    if isinstance(source, (list, tuple)):
        return SourceInfo("<memory>", "memory", Path.cwd(), "memory")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return SourceInfo(text, _stem(path), path.resolve().parent, "file")
    if path.is_dir():
        raise DataError(f"{text}: is a folder; pass one data file (JSON, JSONL or Parquet)")
    if is_hub_name(text):
        name = text.removeprefix("hf://")
        return SourceInfo(name, name.split(":")[0].split("/")[-1], None, "hub")
    raise DataError(f"{text}: file not found")


def is_hub_name(text: str) -> bool:
    """``owner/name`` or ``owner/name:split`` (optionally ``hf://``-prefixed), not a local path."""
    if text.startswith("hf://"):
        return True
    name = text.split(":")[0]
    if text.startswith((".", "/", "~")) or name.count("/") != 1:
        return False
    return not name.lower().endswith(tuple(SUFFIXES) + (".gz",))


def _stem(path: Path) -> str:
    name = path.name
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_rows(source: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Yield ``(line, row)`` from a file path, an in-memory list of dicts, or a Hub name.

    Raises DataError when the source itself cannot be read (missing file, unknown suffix,
    ``datasets`` not installed, Hub unreachable). Blank lines in JSONL are skipped.
    """
    info = describe_source(source)
    if info.kind == "memory":
        yield from _read_memory(source)
    elif info.kind == "hub":
        yield from read_hub_rows(info.label)
    else:
        yield from read_file_rows(Path(os.fspath(source)).expanduser())


def _read_memory(rows: Iterable[Any]) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for index, row in enumerate(rows, start=1):
        yield index, _as_object(row)


def _as_object(row: Any) -> dict[str, Any] | RowError:
    if isinstance(row, dict):
        return row
    return RowError("row", f"expected an object, got {type(row).__name__}")


def read_file_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Rows of one local file; the format follows the suffix (``.gz`` or gzip magic too)."""
    with open(path, "rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        if compressed:
            raise DataError(f"{path}: gzip-compressed Parquet is not supported; decompress it")
        yield from _read_parquet(path)
        return
    if not name.endswith((".jsonl", ".ndjson", ".json")):
        raise DataError(
            f"{path}: unsupported file type; expected one of "
            + ", ".join(SUFFIXES)
            + " (optionally .gz)"
        )
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4096).lstrip()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read file: {error}") from error
    if head.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        head = head[3:].lstrip()
    if head.startswith(b"["):
        yield from _read_json_array(path, opener)
    elif name.endswith(".json") and _is_single_json_value(path, opener):
        yield from _read_json_array(path, opener, single=True)
    else:
        yield from _read_jsonl(path, opener)


def _is_single_json_value(path: Path, opener: Any) -> bool:
    """A ``.json`` file holding one (possibly pretty-printed) object rather than JSON Lines."""
    with opener(path, "rb") as handle:
        try:
            json.loads(handle.read().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            return False
    return True


def _malformed(error: json.JSONDecodeError) -> RowError:
    return RowError("json", f"malformed JSON: {error.msg} (column {error.colno})")


def _read_jsonl(path: Path, opener: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    yield number, RowError("json", f"not valid UTF-8 ({error.reason})")
                    continue
                try:
                    row = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as error:
                    yield number, _malformed(error)
                    continue
                yield number, _as_object(row)
    except (OSError, EOFError) as error:  # a truncated gzip stream, for example
        raise DataError(f"{path}: cannot read file: {error}") from error


def _read_json_array(
    path: Path, opener: Any, single: bool = False
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Rows of a top-level JSON array, each with the line where its object starts
    (``single``: the file is one JSON value, which is the only row)."""
    try:
        with opener(path, "rb") as handle:
            text = handle.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 ({error.reason})") from error
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read file: {error}") from error
    if single:
        _, line = _skip_space(text, 0, 1)
        yield line, _as_object(json.loads(text))
        return
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line = 1 + text.count("\n", 0, position)
    while True:
        position, line = _skip_space(text, position, line)
        if position < len(text) and text[position] == "]":
            return
        try:
            row, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            yield error.lineno, _malformed(error)
            return  # the rest of an array cannot be trusted after a syntax error
        yield line, _as_object(row)
        line += text.count("\n", position, end)
        position, line = _skip_space(text, end, line)
        if position < len(text) and text[position] == ",":
            position += 1
            continue
        if position < len(text) and text[position] == "]":
            return
        column = position - text.rfind("\n", 0, position)
        yield line, RowError("json", f"malformed JSON: expected ',' or ']' (column {column})")
        return


def _skip_space(text: str, position: int, line: int) -> tuple[int, int]:
    while position < len(text) and text[position] in " \t\r\n":
        if text[position] == "\n":
            line += 1
        position += 1
    return position, line


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable Parquet file: {error}") from error
    number = 0
    for batch in parquet.iter_batches(batch_size=512):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def read_hub_rows(name: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Rows of a Hugging Face Hub dataset ``owner/name[:split]`` (split defaults to train).

    ``datasets`` is imported here only. Rows are read as Arrow, so image columns arrive as
    ``{"bytes", "path"}`` structs and nothing is decoded.
    """
    dataset_name, _, split = name.partition(":")
    split = split or "train"
    try:
        import datasets
    except ImportError as error:
        raise DataError(
            f"{name}: loading a Hub dataset needs the `datasets` package "
            "(pip install 'mmdpo[extras]'), or download it and pass a local file"
        ) from error
    try:
        dataset = datasets.load_dataset(dataset_name, split=split)
    except Exception as error:  # network, auth, missing split: all end here
        offline = any(
            os.environ.get(key, "").lower() in ("1", "true", "yes", "on")
            for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        )
        hint = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not cached"
            if offline
            else "check the name, the split and your network"
        )
        raise DataError(
            f"{name}: cannot load Hub dataset {dataset_name!r} split {split!r}: {hint} "
            f"({type(error).__name__}: {error})"
        ) from error
    number = 0
    for table in dataset.with_format("arrow").iter(batch_size=512):
        for row in table.to_pylist():
            number += 1
            yield number, row
