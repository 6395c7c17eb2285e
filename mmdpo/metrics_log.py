"""Where step metrics go: ``metrics.jsonl``, accelerate's trackers, the progress bar, and the
plots at the end of a run. ``mmdpo.metrics`` computes what they hold.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmdpo.config import ConfigError
from mmdpo.run_folder import RunFolder

# Tracker names. metrics.jsonl is always written (the run folder's record, which resume,
# export and the plots read); "jsonl" may be listed for clarity.
TRACKERS = ("jsonl", "tensorboard", "wandb")
_INSTALL = {
    "tensorboard": "pip install tensorboard (or mmdpo[extras])",
    "wandb": "pip install wandb; set WANDB_MODE=offline to log without a network",
}


# --- sinks ----------------------------------------------------------------------------------


def check_trackers(requested: Iterable[str]) -> list[str]:
    """The trackers besides metrics.jsonl among ``requested``, each checked to be installed.

    Called before any data or model is loaded, so a run never trains for hours and then
    finds that its tracker is missing; raises a ConfigError that names the fix.
    """
    chosen = []
    for name in requested:
        if name not in TRACKERS:
            raise ConfigError(
                f"train.trackers: unknown tracker {name!r}; valid: {', '.join(TRACKERS)}"
            )
        if name == "jsonl" or name in chosen:
            continue
        if importlib.util.find_spec(name) is None:
            raise ConfigError(
                f"train.trackers: {name} is not installed ({_INSTALL[name]}), or remove it "
                "from train.trackers"
            )
        chosen.append(name)
    return chosen


class _TensorBoard:
    """Scalars into ``<run>/tensorboard`` event files; a resume drops the steps after it."""

    def __init__(self, folder: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(folder), purge_step=purge)

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class _WandB:
    """One wandb run per mmdpo run, its files in the run folder (offline with WANDB_MODE)."""

    def __init__(self, folder: Path, config: Mapping[str, Any] | None) -> None:
        import wandb

        self.run = wandb.init(
            project="mmdpo", name=folder.name, dir=str(folder), config=dict(config or {})
        )

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self) -> None:
        self.run.finish()


class MetricsWriter:
    """Appends one JSON line per step to ``run_dir/metrics.jsonl`` and forwards to trackers.

    Each line is ``{"step": n, key: value, ...}``, flushed as it is written; NaN and infinite
    values are written as ``null`` (strict JSON). On resume pass ``resume_step``: lines with a
    larger step (written after the checkpoint, before the interruption) and a torn last line
    are removed, so the file reads as one uninterrupted run. Without ``resume_step`` an
    existing file is started anew. Only the main process writes. ``trackers`` may add
    ``tensorboard`` (event files in ``run_dir/tensorboard``) and ``wandb`` (numbers only);
    ``config`` is the run config that wandb records.
    """

    def __init__(
        self,
        run_dir: str | Path,
        trackers: Sequence[str] = ("jsonl",),
        *,
        resume_step: int | None = None,
        is_main_process: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = [name for name in trackers if name not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown trackers {unknown}; valid: {', '.join(TRACKERS)}")
        folder = RunFolder(run_dir)
        self.path = folder.metrics_file
        self._file = None
        self._trackers: list[Any] = []
        if not is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            truncate_after(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if "tensorboard" in trackers:
            self._trackers.append(_TensorBoard(folder.tensorboard_dir, resume_step))
        if "wandb" in trackers:
            self._trackers.append(_WandB(folder.path, config))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write the metrics of ``step`` (numbers, tensors of one element, or strings)."""
        record = {"step": step, **{key: _plain(value) for key, value in metrics.items()}}
        if self._file is not None:
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
        numbers = {
            k: float(v)
            for k, v in record.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
        }
        for tracker in self._trackers:
            tracker.log(numbers, step)

    def log_skipped(self, step: int, reason: str, **values: Any) -> None:
        """Record a step skipped for a non-finite loss or gradient."""
        self.log({"skipped": reason, **values}, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for tracker in self._trackers:
            tracker.finish()
        self._trackers = []

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, skipping a torn or unreadable line."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_after(path: str | Path, step: int) -> None:
    """Keep only the records of steps up to ``step`` (atomic rewrite); no-op without a file."""
    path = Path(path)
    if not path.exists():
        return
    kept = [
        r for r in read_metrics(path) if not isinstance(r.get("step"), int) or r["step"] <= step
    ]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(temporary, path)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ProgressBar:
    """A tqdm bar over optimizer steps with ETA and loss, margin, accuracy and pairs/s."""

    POSTFIX = {
        "loss": "loss",
        "margin": "rewards/margins",
        "acc": "rewards/accuracies",
        "pairs/s": "perf/pairs_per_s",
    }

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        disable: bool = False,
        desc: str = "train",
        file: Any | None = None,
    ) -> None:
        """``initial``: steps already done (on resume); ``disable`` on non-main processes."""
        self._bar = tqdm(
            total=total,
            initial=initial,
            disable=disable,
            desc=desc,
            unit="step",
            dynamic_ncols=True,
            file=file,
        )

    def update(self, metrics: Mapping[str, Any] | None = None, steps: int = 1) -> None:
        if metrics:
            shown = {
                label: f"{float(metrics[key]):.4g}"
                for label, key in self.POSTFIX.items()
                if metrics.get(key) is not None
            }
            self._bar.set_postfix(shown, refresh=False)
        self._bar.update(steps)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if not self._bar.disable:
            self._bar.write(message)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- plots ----------------------------------------------------------------------------------


def plot_metrics(metrics_jsonl: str | Path, out_dir: str | Path) -> list[Path]:
    """Write PNG plots of the logged curves into ``out_dir``; return the files written.

    loss.png, rewards.png (margins per modality too), weights.png (Uni-DPO weights, ESS,
    c-NLL share), optim.png (lr, grad norm) and eval.png, each only when its keys were logged.
    Uses matplotlib's Agg canvas directly, never pyplot, so no display or global state.
    Without a metrics file nothing is drawn.
    """
    if not Path(metrics_jsonl).is_file():
        return []
    series = _series(read_metrics(metrics_jsonl))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    margins = sorted(k for k in series if k.startswith("rewards/margins/"))
    panels = {
        "loss": [["loss", "eval/loss"]],
        "rewards": [
            ["rewards/chosen", "rewards/rejected", "rewards/margins", *margins],
            ["rewards/accuracies", "eval/rewards/accuracies"],
        ],
        "weights": [
            ["weights/w_qual_mean", "weights/w_qual_min", "weights/w_qual_max"],
            ["weights/w_perf_mean", "weights/w_perf_min", "weights/w_perf_max"],
            ["weights/ess_ratio", "weights/nll_active"],
        ],
        "optim": [["lr"], ["grad_norm"]],
        "eval": [
            sorted(k for k in series if k.startswith("eval/rewards/accuracies")),
            sorted(k for k in series if k.startswith("eval/rewards/margins")),
            ["eval/spearman_score_reward"],
        ],
    }
    written = []
    for name, groups in panels.items():
        groups = [[key for key in group if key in series] for group in groups]
        groups = [group for group in groups if group]
        if groups:
            written.append(_plot_panels(series, groups, out_dir / f"{name}.png"))
    return written


def _series(records: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        step = record.get("step")
        if not isinstance(step, int) or "skipped" in record:
            continue
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                steps, values = series.setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    return series


def _plot_panels(series: dict, groups: list[list[str]], path: Path) -> Path:
    from matplotlib.figure import Figure

    columns = min(len(groups), 3)
    rows = math.ceil(len(groups) / columns)
    # No layout engine: constrained layout costs seconds per figure on a busy CPU.
    figure = Figure(figsize=(5 * columns, 3.5 * rows))
    figure.subplots_adjust(left=0.08, right=0.97, bottom=0.12, top=0.95, wspace=0.3, hspace=0.4)
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for axis, group in zip(axes, groups, strict=False):
        for key in group:
            steps, values = series[key]
            style = "--" if key.endswith(("_min", "_max")) or key.count("/") > 1 else "-"
            marker = "o" if len(steps) < 20 else None
            axis.plot(steps, values, style, marker=marker, label=key, linewidth=1.2)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    for axis in axes[len(groups) :]:
        axis.set_visible(False)
    figure.savefig(path, dpi=100)
    return path
