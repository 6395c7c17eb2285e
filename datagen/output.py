"""Preference pairs written as JSONL in the TRL layout (the ``trl`` adapter reads them back),
atomically, never over an input file; in-memory images saved beside the output."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdpo.types import PreferenceSample


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
