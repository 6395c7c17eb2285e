"""The Task type: a data format, the config defaults a run starts from, and an eval suite."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_adapters import get_adapter
from mmdpo.config import Config, load_config

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class Task:
    """One use of the toolkit (text, math, vision, mixed).

    Attributes:
        name: the task name used on the command line (``mmdpo train NAME``).
        description: one line for help texts.
        data_format: the adapter that reads this task's data by default (``data.format``).
        modality: the modality its samples get by default (``data.modality``); None lets
            each data entry or adapter decide (the mixed task).
        defaults: a config dict in the schema of ``mmdpo.config`` that a recipe, the user's
            YAML and ``key=value`` overrides are layered on. It never sets ``loss.kwargs``:
            those belong to one loss, and a deep merge would carry them into another one
            when a recipe or an override changes ``loss.name``. Recipes set them.
        eval_suite: names of built-in benchmarks (``eval.BENCHMARKS``) that
            ``mmdpo train NAME --eval`` runs on the base model before training and on the run
            after it (``tasks.run.EvalPlan``).
    """

    name: str
    description: str
    data_format: str
    modality: str | None
    defaults: dict[str, Any] = field(default_factory=dict)
    eval_suite: list[str] = field(default_factory=list)

    @property
    def adapter(self) -> Any:
        """The ``data_adapters`` entry for ``data_format``."""
        return get_adapter(self.data_format)

    def config_defaults(self) -> dict[str, Any]:
        """A deep copy of ``defaults`` that a caller may change freely."""
        return copy.deepcopy(self.defaults)

    def load_config(
        self, path: str | Path | None = None, overrides: list[str] | None = None
    ) -> Config:
        """Task defaults <- YAML file <- ``key=value`` overrides -> a validated Config."""
        return load_config(path, overrides, defaults=self.config_defaults())

    def recipes(self) -> list[Path]:
        """The shipped recipe files of this task (``tasks/recipes/NAME/*.yaml``)."""
        return sorted((RECIPES_DIR / self.name).glob("*.yaml"))


def jsonable(value: Any) -> Any:
    """``value`` with paths as strings and non-finite floats as None, for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
