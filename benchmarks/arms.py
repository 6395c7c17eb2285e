"""What runs in each case: mmdpo in each of its forward layouts, and TRL.

An mmdpo arm is the engine plus the config override that picks its layout
(``train.forward_layout``, docs/layouts.md): two rows per pair, the shared-prompt forward (one
row ``prompt | chosen | rejected`` per pair), or shared prompts packed several pairs per row
without padding. A build whose config lacks the setting reports the arms that need it as "not
available in this build": never run under another layout and never filled in.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

LAYOUT = "train.forward_layout"

# arm -> (label, {config key: value}); order is the report's. A value of None means "the
# build's default when it has no such setting" (the two-row forward of older builds).
MMDPO_ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "mmdpo": ("mmdpo two-row", {LAYOUT: "two_row"}),
    "mmdpo-shared": ("mmdpo shared-prompt", {LAYOUT: "shared_prompt"}),
    "mmdpo-shared-packed": ("mmdpo shared-prompt + padding-free", {LAYOUT: "packed"}),
}
# What a build without the setting runs: every arm but this one is then unavailable.
BUILD_DEFAULT = {LAYOUT: "two_row"}
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

    A setting the build does not know is left out when the value is what such a build does
    anyway (``BUILD_DEFAULT``); any other value makes the arm unavailable."""
    _, switches = MMDPO_ARMS[arm]
    overrides = []
    for key, value in switches.items():
        if config_has(key):
            overrides.append(f"{key}={value}")
        elif BUILD_DEFAULT.get(key) != value:
            return None
    return overrides


def missing_settings(arm: str) -> list[str]:
    """The settings ``arm`` needs that this build's config lacks (for the report)."""
    _, switches = MMDPO_ARMS[arm]
    return [
        key
        for key, value in switches.items()
        if not config_has(key) and BUILD_DEFAULT.get(key) != value
    ]


def parse_arms(spec: str | None) -> list[str]:
    """``--arms``: comma-separated mmdpo arms (TRL is added wherever it runs)."""
    if spec is None:
        return list(MMDPO_ARMS)
    arms = [a.strip() for a in spec.split(",") if a.strip()]
    unknown = [a for a in arms if a not in MMDPO_ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; valid: {', '.join(MMDPO_ARMS)}")
    return arms
