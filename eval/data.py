"""Where benchmark data comes from, in order: --data PATH, $MMDPO_EVAL_DATA, the hub, generated.

The first that exists wins. ``--data`` that does not exist is an error (never a silent
fallback); a missing file under ``$MMDPO_EVAL_DATA`` falls through to the hub, which is tried
only when online and only when the ``datasets`` package is installed. When nothing is found
the benchmark uses its seeded generated sample and marks the results as generated.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eval.base import EvalData

ENV_VAR = "MMDPO_EVAL_DATA"
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class HubSource:
    """A dataset split on the Hugging Face hub: ``load_dataset(path, name, split=split)``."""

    path: str
    name: str | None
    split: str

    def __str__(self) -> str:
        return f"hub:{self.path}/{self.name or 'default'}/{self.split}"


@dataclass
class DataSource:
    """Rows found for a benchmark, with where they came from (see ``EvalData``)."""

    rows: list[dict[str, Any]]
    source: str
    sha256: str
    path: Path | None = None


def resolve_data(
    benchmark_name: str, relative_file: str, data_path: str | Path | None = None
) -> Path | None:
    """The data file to use, or None when neither --data nor $MMDPO_EVAL_DATA provides one.

    Args:
        benchmark_name: used in error messages.
        relative_file: the file's place in an evaldata folder, e.g. ``gsm8k/test.jsonl``.
        data_path: ``--data``: a file, or a folder laid out like $MMDPO_EVAL_DATA (the file
            is looked up as ``folder/relative_file``, then ``folder/<its base name>``).

    Raises:
        FileNotFoundError: ``data_path`` is given but neither it nor the file inside it exists.
    """
    if data_path is not None:
        path = Path(data_path).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            for candidate in (path / relative_file, path / Path(relative_file).name):
                if candidate.is_file():
                    return candidate
            raise FileNotFoundError(
                f"{benchmark_name}: --data {path} is a folder without {relative_file} "
                f"or {Path(relative_file).name}"
            )
        raise FileNotFoundError(f"{benchmark_name}: --data {path} does not exist")
    folder = os.environ.get(ENV_VAR)
    if folder:
        candidate = Path(folder).expanduser() / relative_file
        if candidate.is_file():
            return candidate
    return None


def hub_online() -> bool:
    """False when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set to a true value."""
    return not any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in _OFFLINE_VARS)


def load_hub_rows(hub: HubSource) -> list[dict[str, Any]]:
    """Rows of a hub split; raises RuntimeError with the reason when it cannot be loaded."""
    if not hub_online():
        raise RuntimeError("offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:  # fail in seconds, not after the datasets library's minute of retries
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError as error:
        raise RuntimeError(f"cannot reach {endpoint.hostname}: {error}") from error
    try:
        import datasets  # lazy: an optional extra, and slow to import
    except ImportError as error:
        raise RuntimeError(
            "the `datasets` package is not installed (pip install mmdpo[extras])"
        ) from error
    try:
        dataset = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    except Exception as error:  # network, auth, missing split: all mean "not available"
        raise RuntimeError(f"{hub} could not be loaded: {error}") from error
    return [dict(row) for row in dataset]


def find_rows(
    benchmark_name: str,
    relative_file: str,
    data_path: str | Path | None = None,
    hub: HubSource | None = None,
) -> tuple[DataSource | None, str]:
    """Apply the precedence rule; returns (rows or None, why the fallback was needed)."""
    path = resolve_data(benchmark_name, relative_file, data_path)
    if path is not None:
        return DataSource(read_rows(path), str(path), sha256_file(path), path), ""
    reasons = [f"no --data and no ${ENV_VAR}/{relative_file}"]
    if hub is not None:
        try:
            rows = load_hub_rows(hub)
        except RuntimeError as error:
            reasons.append(f"hub unavailable: {error}")
        else:
            return DataSource(rows, str(hub), sha256_rows(rows)), ""
    return None, "; ".join(reasons)


def load_eval_data(
    benchmark_name: str,
    relative_file: str,
    data_path: str | Path | None,
    limit: int | None,
    *,
    make_items: Callable[[list[dict[str, Any]], DataSource], list[dict[str, Any]]],
    generate: Callable[[int, int], list[dict[str, Any]]],
    hub: HubSource | None = None,
    default_generated: int = 50,
    seed: int = 0,
) -> EvalData:
    """Rows by the precedence rule, cut to ``limit`` and turned into items.

    Args:
        make_items: (rows, source) -> items; each item gets its benchmark's own ``id``.
        generate: (n, seed) -> rows of the seeded stand-in sample (the real rows' schema).
        default_generated: size of the generated sample when no ``limit`` is given.
    """
    found, why = find_rows(benchmark_name, relative_file, data_path, hub)
    if found is None:
        rows = generate(limit or default_generated, seed)
        generated = DataSource(rows, f"generated:{benchmark_name}:seed={seed}", sha256_rows(rows))
        items = make_items(rows, generated)
        return EvalData(items, generated.source, generated.sha256, generated=True, note=why)
    rows = found.rows[:limit] if limit is not None else found.rows
    return EvalData(make_items(rows, found), found.source, found.sha256)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_rows(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows as canonical JSON lines (for data that has no file)."""
    digest = hashlib.sha256()
    for row in rows:
        line = json.dumps(row, sort_keys=True, ensure_ascii=True, default=str)
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; errors name file:line."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid JSON: {error.msg}") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object per line")
            yield line_number, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path)]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.json`` file holding a list of objects, or of a JSONL file (any name)."""
    path = Path(path)
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            if error.msg == "Extra data":  # JSON lines under a .json name (POPE's files)
                return read_jsonl(path)
            raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from error
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return rows
    return read_jsonl(path)


def require_fields(row: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    """Raise a ValueError naming the missing fields and where the row came from."""
    missing = [name for name in fields if name not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; the row has {sorted(row)}")


def resolve_image(name: str, data_file: Path | None) -> str:
    """An image path from a data row: as given if it exists, else looked up beside the data
    file (``dir/name``, ``dir/images/name``); the last candidate when none exists, so the
    error names it when the image is opened."""
    candidates = [Path(name)]
    if data_file is not None:
        folder = data_file.parent
        candidates += [folder / name, folder / "images" / name, folder / "images" / Path(name).name]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return str(candidates[-1])


def open_image(image: Any, where: str) -> Any:
    """A PIL image from a PIL image or a path; a missing file names the item it belongs to."""
    if not isinstance(image, (str, Path)):
        return image
    if not Path(image).is_file():
        raise FileNotFoundError(f"{where}: image {image} not found")
    from mmdpo.images import open_image as open_any

    return open_any(image)
