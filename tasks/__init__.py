"""Tasks: one per use (text, math, vision, mixed), each an adapter, config defaults and evals.

    task = get_task("text")                       # ValueError listing valid names if unknown
    config = task.load_config("tasks/recipes/text/llama3_8b_unidpo.yaml", ["train.epochs=2"])

Shipped recipes live under ``tasks/recipes/<task>/``; docs/recipes.md lists them.
"""

from __future__ import annotations

from tasks.base import RECIPES_DIR, Task
from tasks.math import MATH
from tasks.mixed import MIXED
from tasks.text import TEXT
from tasks.vision import VISION

TASKS: dict[str, Task] = {
    "text": TEXT,
    "math": MATH,
    "vision": VISION,
    "mixed": MIXED,
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises a ValueError listing the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


__all__ = ["RECIPES_DIR", "TASKS", "Task", "get_task"]
