"""Helpers for the data adapter tests: write rows to files, make tiny images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_png(path: Path, size: tuple[int, int] = (8, 6), color=(200, 30, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return make_png(tmp_path / "images" / "cat.png")
