"""What runs in each case: mmdpo in each of its forward layouts, and TRL.

An mmdpo arm is the engine plus the config overrides that pick its layout. The shared-prompt
forward (one row ``prompt | chosen | rejected`` per pair) and padding-free packing (several
pairs in one row, no padding) are engine settings (issue 13, items 1-2). Until the engine's
config has a setting, the arms that need it are reported as "not available in this build":
never run under another layout and never filled in.

When the engine's settings land under other names, change ``SHARED_PROMPT`` / ``PADDING_FREE``
here; nothing else in the benchmark names them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

SHARED_PROMPT = "train.shared_prompt"
PADDING_FREE = "train.padding_free"

# arm -> (label, {config key: value}); order is the report's.
MMDPO_ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "mmdpo": ("mmdpo two-row", {SHARED_PROMPT: False, PADDING_FREE: False}),
    "mmdpo-shared": ("mmdpo shared-prompt", {SHARED_PROMPT: True, PADDING_FREE: False}),
    "mmdpo-shared-packed": (
        "mmdpo shared-prompt + padding-free",
        {SHARED_PROMPT: True, PADDING_FREE: True},
    ),
}
TRL = "trl"
ARMS = [*MMDPO_ARMS, TRL]
LABELS = {**{arm: label for arm, (label, _) in MMDPO_ARMS.items()}, TRL: "TRL"}


def config_has(key: str) -> bool:
    """Whether mmdpo's config (this build) has the dotted ``key``."""
    from mmdpo.config import Config

    cls: Any = Config
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return False
        if part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = typing.get_type_hints(cls)[part]
    return True


def arm_overrides(arm: str) -> list[str] | None:
    """The dotted overrides that select ``arm`` in this build, or None when it cannot run.

    A switch set to false that the build does not know is left out: a build without the
    feature runs without it. A switch set to true that it does not know makes the arm
    unavailable."""
    _, switches = MMDPO_ARMS[arm]
    overrides = []
    for key, value in switches.items():
        if config_has(key):
            overrides.append(f"{key}={str(value).lower()}")
        elif value:
            return None
    return overrides


def missing_settings(arm: str) -> list[str]:
    """The settings ``arm`` needs that this build's config lacks (for the report)."""
    _, switches = MMDPO_ARMS[arm]
    return [key for key, value in switches.items() if value and not config_has(key)]


def parse_arms(spec: str | None) -> list[str]:
    """``--arms``: comma-separated mmdpo arms (TRL is added wherever it runs)."""
    if spec is None:
        return list(MMDPO_ARMS)
    arms = [a.strip() for a in spec.split(",") if a.strip()]
    unknown = [a for a in arms if a not in MMDPO_ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; valid: {', '.join(MMDPO_ARMS)}")
    return arms
