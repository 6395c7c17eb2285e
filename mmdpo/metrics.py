"""Step metrics: what a batch of pairs says, where it is written, and the plots at the end.

Keys written per optimizer step (means over the step's pairs unless said otherwise)::

    loss                                  mean per-pair loss (the objective)
    rewards/chosen, rewards/rejected      implicit rewards
    rewards/margins                       chosen - rejected reward
    rewards/accuracies                    share of pairs with chosen reward > rejected reward
    logps/chosen, logps/rejected          policy sequence log-probs
    weights/w_qual_{mean,min,max}         Uni-DPO quality weight (when the loss reports it)
    weights/w_perf_{mean,min,max}         Uni-DPO performance weight (when reported)
    weights/nll_active                    share of pairs whose c-NLL gate is on
    weights/ess                           effective sample size (Σw)² / Σw² of w_qual · w_perf
    weights/ess_ratio                     weights/ess divided by the number of pairs
    extra/<name>                          mean of any other per-pair metric of the loss
    pairs                                 number of pairs summarized
    <key>/<modality>                      all of the above per modality, in mixed batches

The training loop adds ``lr``, ``grad_norm``, ``perf/pairs_per_s``, ``perf/tokens_per_s``
(``Throughput``), ``memory/peak_bytes`` (``peak_memory_bytes``), and at each eval ``eval/...``
keys, among them ``eval/spearman_score_reward`` (``score_reward_spearman``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

try:  # not on Windows
    import resource
except ImportError:  # pragma: no cover
    resource = None

METRICS_FILE = "metrics.jsonl"
WEIGHT_NAMES = ("w_qual", "w_perf")
NLL_GATE = "nll_gate"
# Tracker names: "jsonl" is ours, the rest are accelerate's (Accelerator(log_with=...)).
TRACKERS = ("jsonl", "tensorboard", "wandb")

Tensor = torch.Tensor


# --- what a batch says ----------------------------------------------------------------------


def effective_sample_size(weights: Tensor) -> float:
    """(Σw)² / Σw²: B for B equal weights, 1 when a single pair carries all the weight.

    Shape: weights (B,). NaN when all weights are zero.
    """
    weights = weights.detach().double().cpu()
    squares = (weights * weights).sum()
    if squares == 0:
        return math.nan
    return float(weights.sum() ** 2 / squares)


def summarize_pairs(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    metrics: Mapping[str, Tensor] | None = None,
    policy_chosen_logps: Tensor | None = None,
    policy_rejected_logps: Tensor | None = None,
    modality: Sequence[str] | None = None,
    *,
    losses: Tensor | None = None,
) -> dict[str, float]:
    """The step metrics of a batch of pairs (keys in the module docstring).

    Args:
        chosen_rewards, rejected_rewards: implicit rewards. Shape: (B,)
        metrics: per-pair tensors from the loss (``LossOutput.metrics``); ``w_qual``,
            ``w_perf`` and ``nll_gate`` get weight statistics, others a mean. Shape: (B,) each
        policy_chosen_logps, policy_rejected_logps: policy sequence log-probs. Shape: (B,)
        modality: the modality of each pair; with more than one distinct value, every key is
            repeated per modality as ``<key>/<modality>``.
        losses: unreduced per-pair losses. Shape: (B,)
    """
    columns = _columns(
        chosen_rewards,
        rejected_rewards,
        metrics,
        policy_chosen_logps,
        policy_rejected_logps,
        losses,
    )
    summary = _summarize_columns(columns)
    modalities = list(modality) if modality is not None else []
    if len(set(modalities)) > 1:
        for name in sorted(set(modalities)):
            rows = torch.tensor([m == name for m in modalities])
            subset = {key: values[rows] for key, values in columns.items()}
            for key, value in _summarize_columns(subset).items():
                summary[f"{key}/{name}"] = value
    return summary


def _columns(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    metrics: Mapping[str, Tensor] | None,
    policy_chosen_logps: Tensor | None,
    policy_rejected_logps: Tensor | None,
    losses: Tensor | None,
) -> dict[str, Tensor]:
    """The per-pair inputs as detached float64 CPU tensors, under fixed names."""
    named = {
        "chosen_rewards": chosen_rewards,
        "rejected_rewards": rejected_rewards,
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "losses": losses,
        **{f"metric:{key}": value for key, value in (metrics or {}).items()},
    }
    return {
        key: value.detach().double().cpu().reshape(-1)
        for key, value in named.items()
        if value is not None
    }


def _summarize_columns(columns: dict[str, Tensor]) -> dict[str, float]:
    chosen, rejected = columns["chosen_rewards"], columns["rejected_rewards"]
    summary: dict[str, float] = {}
    if "losses" in columns:
        summary["loss"] = _mean(columns["losses"])
    summary["rewards/chosen"] = _mean(chosen)
    summary["rewards/rejected"] = _mean(rejected)
    summary["rewards/margins"] = _mean(chosen - rejected)
    summary["rewards/accuracies"] = _mean((chosen > rejected).double())
    if "policy_chosen_logps" in columns:
        summary["logps/chosen"] = _mean(columns["policy_chosen_logps"])
    if "policy_rejected_logps" in columns:
        summary["logps/rejected"] = _mean(columns["policy_rejected_logps"])
    metrics = {key[7:]: value for key, value in columns.items() if key.startswith("metric:")}
    summary.update(_weight_statistics(metrics))
    summary["pairs"] = float(chosen.numel())
    return summary


def _weight_statistics(metrics: dict[str, Tensor]) -> dict[str, float]:
    summary: dict[str, float] = {}
    present = [name for name in WEIGHT_NAMES if name in metrics]
    for name in present:
        values = metrics[name]
        empty = values.numel() == 0
        summary[f"weights/{name}_mean"] = _mean(values)
        summary[f"weights/{name}_min"] = math.nan if empty else float(values.min())
        summary[f"weights/{name}_max"] = math.nan if empty else float(values.max())
    if NLL_GATE in metrics:
        summary["weights/nll_active"] = _mean((metrics[NLL_GATE] > 0).double())
    if present:
        # Uni-DPO scales each pair's DPO term by w_qual * w_perf (arXiv 2506.10054), so that
        # product is the weight whose concentration the ESS measures.
        product = torch.ones_like(metrics[present[0]])
        for name in present:
            product = product * metrics[name]
        ess = effective_sample_size(product) if product.numel() else math.nan
        summary["weights/ess"] = ess
        summary["weights/ess_ratio"] = ess / product.numel() if product.numel() else math.nan
    for name, values in sorted(metrics.items()):
        if name not in WEIGHT_NAMES and name != NLL_GATE:
            summary[f"extra/{name}"] = _mean(values)
    return summary


def _mean(values: Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


class MetricsAccumulator:
    """Collects the pairs of one optimizer step across gradient-accumulation micro-batches.

    ``compute`` summarizes all collected pairs at once, so means are weighted by pairs and the
    minimum, maximum, ESS and per-modality keys are those of the whole step, not averages of
    micro-batch values. With several processes pass ``accelerate.utils.gather_object`` to
    ``compute`` to summarize the pairs of all of them (every process must call it).
    """

    def __init__(self) -> None:
        self._parts: list[dict[str, Any]] = []

    def add(
        self,
        chosen_rewards: Tensor,
        rejected_rewards: Tensor,
        metrics: Mapping[str, Tensor] | None = None,
        policy_chosen_logps: Tensor | None = None,
        policy_rejected_logps: Tensor | None = None,
        modality: Sequence[str] | None = None,
        *,
        losses: Tensor | None = None,
    ) -> None:
        """Keep one micro-batch (arguments as ``summarize_pairs``; tensors are copied to CPU)."""
        columns = _columns(
            chosen_rewards,
            rejected_rewards,
            metrics,
            policy_chosen_logps,
            policy_rejected_logps,
            losses,
        )
        size = columns["chosen_rewards"].numel()
        self._parts.append({"columns": columns, "modality": list(modality or ["text"] * size)})

    @property
    def num_pairs(self) -> int:
        return sum(part["columns"]["chosen_rewards"].numel() for part in self._parts)

    def compute(self, gather_object: Callable[[list], list] | None = None) -> dict[str, float]:
        """Summarize the collected pairs; an empty dict when there are none."""
        parts = gather_object(self._parts) if gather_object is not None else self._parts
        if not parts:
            return {}
        shared = set.intersection(*(set(part["columns"]) for part in parts))
        columns = {key: torch.cat([part["columns"][key] for part in parts]) for key in shared}
        modality = [name for part in parts for name in part["modality"]]
        metrics = {key[7:]: value for key, value in columns.items() if key.startswith("metric:")}
        return summarize_pairs(
            columns["chosen_rewards"],
            columns["rejected_rewards"],
            metrics,
            columns.get("policy_chosen_logps"),
            columns.get("policy_rejected_logps"),
            modality,
            losses=columns.get("losses"),
        )

    def reset(self) -> None:
        self._parts.clear()


# --- correlation ----------------------------------------------------------------------------


def average_ranks(values: Iterable[float]) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of their positions (scipy's ``rankdata``)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(values)]  # exclusive
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends - 1) / 2 + 1)[group]
    return ranks


def spearman(x: Iterable[float] | Tensor, y: Iterable[float] | Tensor) -> float:
    """Spearman's rank correlation with average ranks for ties.

    Pairs where either value is NaN or infinite are dropped; NaN when fewer than two pairs
    remain or either side is constant.
    """
    x, y = _as_array(x), _as_array(y)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs equal lengths, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return math.nan
    rank_x = average_ranks(x) - (len(x) + 1) / 2
    rank_y = average_ranks(y) - (len(y) + 1) / 2
    denominator = math.sqrt(float((rank_x**2).sum() * (rank_y**2).sum()))
    if denominator == 0:
        return math.nan
    return float((rank_x * rank_y).sum() / denominator)


def score_reward_spearman(
    score_chosen: Tensor, score_rejected: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor
) -> float:
    """Spearman correlation of the score margin and the implicit reward margin over pairs.

    Pairs without scores (NaN) are left out. Shape: each (N,)
    """
    return spearman(
        _as_array(score_chosen) - _as_array(score_rejected),
        _as_array(chosen_rewards) - _as_array(rejected_rewards),
    )


def _as_array(values: Iterable[float] | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().double().cpu().numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


# --- the running numbers --------------------------------------------------------------------


class Throughput:
    """Pairs and tokens per second since the previous call (wall clock).

    Pass the counts of all processes (summed) to get the run's throughput.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._last = clock()

    def step(self, pairs: int, tokens: int) -> dict[str, float]:
        now = self._clock()
        elapsed = max(now - self._last, 1e-9)
        self._last = now
        return {"perf/pairs_per_s": pairs / elapsed, "perf/tokens_per_s": tokens / elapsed}


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak memory of this process so far, in bytes.

    On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensors only, not the allocator's
    cache). Otherwise the process's peak resident set size from ``resource.getrusage``, which
    counts everything the process ever held, Python and libraries included; 0 where
    ``resource`` is unavailable (Windows). ``device=None`` means CUDA when it is initialized.
    """
    if device is None:
        use_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        device = "cuda" if use_cuda else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def nonfinite_reason(loss: Tensor | float, grad_norm: Tensor | float | None = None) -> str | None:
    """Why a step must be skipped ("loss is nan", "grad_norm is inf"), or None when finite."""
    for name, value in (("loss", loss), ("grad_norm", grad_norm)):
        if value is None:
            continue
        number = float(value.detach().float().cpu()) if isinstance(value, Tensor) else float(value)
        if not math.isfinite(number):
            return f"{name} is {number}"
    return None


# --- sinks ----------------------------------------------------------------------------------


def available_trackers(requested: Iterable[str]) -> list[str]:
    """The accelerate trackers among ``requested`` that are installed (for ``log_with``).

    ``jsonl`` is always written by ``MetricsWriter`` and is not an accelerate tracker; a
    requested tracker that is not installed is dropped with a warning.
    """
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    installed = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    chosen = []
    for name in requested:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; valid: {', '.join(TRACKERS)}")
        if name == "jsonl":
            continue
        if installed[name]():
            chosen.append(name)
        else:
            warnings.warn(f"tracker {name!r} is not installed; not logging to it", stacklevel=2)
    return chosen


class MetricsWriter:
    """Appends one JSON line per step to ``run_dir/metrics.jsonl`` and forwards to trackers.

    Each line is ``{"step": n, key: value, ...}``, flushed as it is written; NaN and infinite
    values are written as ``null`` (strict JSON). On resume pass ``resume_step``: lines with a
    larger step (written after the checkpoint, before the interruption) and a torn last line
    are removed, so the file reads as one uninterrupted run. Without ``resume_step`` an
    existing file is started anew. Only the main process writes; tensorboard and wandb go
    through ``accelerator.log`` (set up with ``log_with`` and ``init_trackers``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        trackers: Sequence[str] = ("jsonl",),
        accelerator: Any | None = None,
        *,
        resume_step: int | None = None,
        is_main_process: bool = True,
    ) -> None:
        unknown = [name for name in trackers if name not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown trackers {unknown}; valid: {', '.join(TRACKERS)}")
        self.path = Path(run_dir) / METRICS_FILE
        self._accelerator = accelerator if set(trackers) - {"jsonl"} else None
        self._file = None
        if is_main_process and "jsonl" in trackers:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is None:
                self.path.write_text("")
            else:
                truncate_after(self.path, resume_step)
            self._file = open(self.path, "a", encoding="utf-8")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write the metrics of ``step`` (numbers, tensors of one element, or strings)."""
        record = {"step": step, **{key: _plain(value) for key, value in metrics.items()}}
        if self._file is not None:
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
        if self._accelerator is not None:
            numbers = {k: v for k, v in record.items() if k != "step" and v is not None}
            self._accelerator.log(numbers, step=step)

    def log_skipped(self, step: int, reason: str, **values: Any) -> None:
        """Record a step skipped for a non-finite loss or gradient."""
        self.log({"skipped": reason, **values}, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

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
    if isinstance(value, Tensor):
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
    """
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
