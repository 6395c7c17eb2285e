"""Opening an image reference as an RGB PIL image: the one helper every layer uses."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def open_image(ref: Any, mode: str | None = "RGB") -> Any:
    """Open an image reference: a path, bytes, a PIL image, an HF datasets ``{"bytes": ...}``
    dict, or an object with ``.open()``. The pixels are decoded now (a file is closed after);
    ``mode=None`` keeps the image's own mode.

    Raises:
        FileNotFoundError: a path to no file.
        TypeError: something that is no image reference.
    """
    from PIL import Image

    if hasattr(ref, "open") and not isinstance(ref, (Image.Image, Path)):  # Path.open is text
        ref = ref.open()
    if isinstance(ref, dict) and "bytes" in ref:
        ref = ref["bytes"]
    if isinstance(ref, (bytes, bytearray)):
        image = Image.open(io.BytesIO(ref))
    elif isinstance(ref, Image.Image):
        image = ref
    elif isinstance(ref, (str, Path)):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"image not found: {ref}")
        with Image.open(ref) as opened:
            opened.load()
            return opened.convert(mode) if mode is not None else opened.copy()
    else:
        raise TypeError(f"cannot open an image from {type(ref).__name__}")
    return image.convert(mode) if mode is not None else image
