"""Step metrics: what a batch of pairs says (``mmdpo.metrics_log`` writes and plots them).

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

The training loop (``mmdpo.trainer``) adds ``lr``, ``grad_norm``, ``epoch``,
``perf/pairs_per_s`` and ``perf/tokens_per_s`` (timed around each step), ``memory/peak_bytes``
(``peak_memory_bytes``), and at each eval the same keys as ``eval/...`` (through
``MetricsAccumulator``) plus ``eval/spearman_score_reward``: ``spearman`` of the score margins
and the reward margins of the held-out pairs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

try:  # not on Windows
    import resource
except ImportError:  # pragma: no cover
    resource = None

WEIGHT_NAMES = ("w_qual", "w_perf")
NLL_GATE = "nll_gate"

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


def _as_array(values: Iterable[float] | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().double().cpu().numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


# --- the running numbers --------------------------------------------------------------------


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
