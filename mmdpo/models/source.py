"""Where a model comes from: a local folder or a hub id, checked in a second, not after the
hub client's half-minute of retries."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

# A hub repository id: "name" or "owner/name" (letters, digits, -, _, .), at most 96 chars.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class ModelSourceError(FileNotFoundError):
    """A model name that is neither a local folder nor a hub id that can be had."""


def check_model_source(name: str, option: str) -> None:
    """Raise a one-line ModelSourceError unless ``name`` can be loaded: a local folder, a hub
    id in the local cache, or a hub id while the hub is reachable.

    A name that cannot be a hub id (``./x``, ``/abs/path``, ``a/b/c``, ``~/m``) is a path
    and must exist; a hub id is only looked up online when the hub answers within seconds.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"{option} {name}: is a file, not a model folder or hub id")
        return
    if not could_be_hub_id(name):
        raise ModelSourceError(f"{option} {name}: no such folder")
    if _in_hub_cache(name):
        return
    if any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in _OFFLINE_VARS):
        raise ModelSourceError(
            f"{option} {name}: no such folder, and not in the local hub cache "
            "(offline: HF_HUB_OFFLINE is set)"
        )
    host = _hub_unreachable()
    if host:
        raise ModelSourceError(
            f"{option} {name}: no such folder, not in the local hub cache, and {host} "
            "cannot be reached"
        )


def could_be_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a hub repository id (it may still be a local path)."""
    return (
        len(name) <= 96
        and _HUB_ID.match(name) is not None
        and ".." not in name
        and "--" not in name
    )


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id after all
        return False


def _hub_unreachable() -> str | None:
    """The hub's host name when a connection fails within 3 s, else None."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    try:
        socket.create_connection((host, endpoint.port or 443), timeout=3).close()
    except OSError:
        return host
    return None
