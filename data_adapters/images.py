"""Image references: resolve them against the data file, check them, open them only on demand.

A sample's ``images`` hold plain values the engine understands without importing this
package: an absolute path (``str``), raw encoded bytes, or a PIL image given in memory.
A path is the lazy reference: nothing is read until :func:`open_image` or :func:`check_image`.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

ImageValue = Any  # str (absolute path) | bytes | PIL.Image.Image


class ImageRefError(ValueError):
    """An image reference that cannot be interpreted (wrong type, URL, empty)."""


def resolve_image(value: Any, base_dir: str | os.PathLike | None) -> ImageValue:
    """Turn one image entry of a source row into a sample image value, without reading it.

    Accepts a path (relative paths are joined to ``base_dir``, the data file's folder), raw
    bytes, a PIL image, or the ``{"bytes": ..., "path": ...}`` struct that Parquet files and
    Hugging Face datasets use (bytes win when both are present).
    """
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
        if not value:
            raise ImageRefError("image struct has neither bytes nor path")
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise ImageRefError("empty image bytes")
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if not text.strip():
            raise ImageRefError("empty image path")
        if text.startswith(("http://", "https://")):
            raise ImageRefError(f"image URLs are not supported, download the file first: {text}")
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return str(path)
    raise ImageRefError(f"expected an image path, bytes or a PIL image, got {type(value).__name__}")


def describe_image(value: ImageValue) -> str:
    """A short human-readable name for an image value (for messages and rendering)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Image.Image):
        return f"<PIL image {value.width}x{value.height}>"
    return repr(value)


def _open_raw(value: ImageValue) -> Image.Image:
    if isinstance(value, str):
        return Image.open(value)
    if isinstance(value, bytes):
        return Image.open(io.BytesIO(value))
    if isinstance(value, Image.Image):
        return value
    raise ImageRefError(f"expected an image path, bytes or a PIL image, got {type(value).__name__}")


def open_image(value: ImageValue, mode: str | None = "RGB") -> Image.Image:
    """Open and decode an image value now; ``mode=None`` keeps the file's own mode.

    Raises FileNotFoundError for a missing file and ``PIL.UnidentifiedImageError`` /
    ``OSError`` for a file that is not an image or is truncated.
    """
    if isinstance(value, str) and not os.path.isfile(value):
        raise FileNotFoundError(f"image not found: {value}")
    image = _open_raw(value)
    image.load()
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    return image


def image_exists(value: ImageValue) -> str | None:
    """The cheapest check: a path that points to no file. Returns a problem or None."""
    if isinstance(value, str) and not os.path.isfile(value):
        return f"image not found: {value}"
    return None


def check_image(value: ImageValue, full: bool = False) -> str | None:
    """Check one image value; returns a problem string or None.

    Without ``full`` the header is read and the file's structure verified (PNG chunks and
    checksums, for example) without decoding pixels; with ``full`` the image is decoded,
    which also catches truncated JPEGs.
    """
    missing = image_exists(value)
    if missing:
        return missing
    if isinstance(value, Image.Image):
        return None
    name = describe_image(value)
    try:
        with _open_raw(value) as image:
            if full:
                image.load()
            else:
                image.verify()
    except UnidentifiedImageError:
        return f"not an image: {name}"
    except (OSError, SyntaxError, ValueError) as error:
        return f"truncated or corrupt image: {name} ({error})"
    return None


def image_content_hash(value: ImageValue) -> str | None:
    """sha256 of an image's bytes (a file's, or the given encoded bytes), so that a copy under
    another name hashes the same; a PIL image hashes its mode, size and pixels. None when the
    file cannot be read (the image checks report that)."""
    digest = hashlib.sha256()
    if isinstance(value, Image.Image):
        digest.update(f"{value.mode}:{value.size}:".encode())
        digest.update(value.tobytes())
    elif isinstance(value, bytes):
        digest.update(value)
    elif isinstance(value, str):
        try:
            with open(value, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return None
    else:
        return None
    return digest.hexdigest()
