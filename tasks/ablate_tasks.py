"""What ``mmdpo ablate`` trains and how it scores a run, one class per ``--task``.

A task prepares what all variants share (once, resumable) under ``OUT/shared``, names the
Uni-DPO training config every variant starts from, and evaluates a trained run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    """A column of the ablation table: its key in a run's metrics, label, direction."""

    key: str
    label: str
    higher_is_better: bool = True


class AblationTask:
    """The interface; subclasses fill it in."""

    metrics: list[Metric] = []

    def check(self, overrides: list[str], variants: list[str]) -> None:
        """Refuse a sweep that cannot run, before anything is prepared or trained."""

    def prepare(self, shared: Path) -> None:
        """Build what every run shares; must skip work already done (resume)."""

    def base_config(self, shared: Path) -> Path:
        raise NotImplementedError

    def evaluate(self, shared: Path, trained: Any, *, threads: int) -> dict[str, float]:
        raise NotImplementedError

    def before(self, shared: Path) -> dict[str, float] | None:
        """The metrics of the model before preference training, when the task has them."""
        return None


class ConfigTask(AblationTask):
    """A user's Uni-DPO config; scored on its held-out pairs (data.eval or eval_fraction).

    The metrics are those the trainer computes on held-out pairs at the end of training:
    how often the implicit reward prefers the chosen response, and the rank correlation of
    reward margins with score margins.
    """

    metrics = [
        Metric("eval/rewards/accuracies", "held-out reward accuracy"),
        Metric("eval/spearman_score_reward", "Spearman(score, reward) margins"),
    ]

    def __init__(self, config_path: str) -> None:
        self.config_path = Path(config_path)

    def check(self, overrides: list[str], variants: list[str]) -> None:
        from mmdpo.config import ConfigError, load_config

        config = load_config(self.config_path, overrides)
        uni_dpo_variants = [v for v in variants if v not in ("dpo", "simpo")]
        if uni_dpo_variants and config.loss.name != "uni_dpo":
            raise ConfigError(
                f"{self.config_path}: loss.name is {config.loss.name!r}; the variants "
                f"{', '.join(uni_dpo_variants)} switch parts of uni_dpo off, so the config must "
                "train uni_dpo (the DPO and SimPO variants replace the loss themselves)"
            )
        if not config.data.eval and not config.data.eval_fraction:
            raise ConfigError(
                f"{self.config_path}: the sweep scores runs on held-out pairs; set data.eval "
                "or data.eval_fraction"
            )

    def base_config(self, shared: Path) -> Path:
        return self.config_path

    def evaluate(self, shared: Path, trained: Any, *, threads: int) -> dict[str, float]:
        metrics = trained.eval_metrics or {}
        return {m.key: float(metrics[m.key]) for m in self.metrics if m.key in metrics}


TASKS: dict[str, type[AblationTask]] = {"config": ConfigTask}


def make_task(name: str, config: str | None, options: dict[str, Any]) -> AblationTask:
    if name not in TASKS:
        raise ValueError(f"unknown ablation task {name!r}; valid: {', '.join(TASKS)}")
    if name == "config":
        return ConfigTask(config or "")
    return TASKS[name](**options)
