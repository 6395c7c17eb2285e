"""Held-out preference pairs: does the trained policy prefer the chosen response?

The runner computes, per pair, the implicit reward margin of DPO,
``β · [(ℓw − ℓw⁰) − (ℓl − ℓl⁰)]`` (policy and reference sequence log-probs of the chosen and
rejected responses), and this module turns margins into metrics:

    accuracy                  = mean 1[margin > 0]
    mean_margin               = mean margin
    quality_weighted_accuracy = Σ w_i 1[margin_i > 0] / Σ w_i,  w_i = σ(η (S_w − S_l))

The weight is Uni-DPO's quality weight (arXiv 2506.10054; η = 0.7 as in the paper): a pair
whose chosen response scores far above the rejected one counts more; pairs without both
scores are left out of this one metric. Each metric is also given per modality
(``text/accuracy``, ...). Pairs are read as rows in the ``PreferenceSample`` layout (id,
prompt, chosen, rejected, images, score_chosen, score_rejected, modality); convert other
formats with ``data_adapters`` first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, mean
from eval.data import load_eval_data, require_fields
from eval.generated import word_problems
from mmdpo.types import PreferenceSample


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _group_metrics(
    margins: Sequence[float],
    score_chosen: Sequence[float | None],
    score_rejected: Sequence[float | None],
    eta: float,
) -> dict[str, float]:
    wins = [float(margin > 0) for margin in margins]
    weights, weighted_wins = 0.0, 0.0
    for win, chosen, rejected in zip(wins, score_chosen, score_rejected, strict=True):
        if chosen is None or rejected is None:
            continue
        weight = _sigmoid(eta * (float(chosen) - float(rejected)))
        weights += weight
        weighted_wins += weight * win
    return {
        "accuracy": mean(wins),
        "mean_margin": mean([float(margin) for margin in margins]),
        "quality_weighted_accuracy": weighted_wins / weights if weights else float("nan"),
        "n": float(len(margins)),
    }


def preference_metrics(
    margins: Sequence[float],
    *,
    modalities: Sequence[str] | None = None,
    score_chosen: Sequence[float | None] | None = None,
    score_rejected: Sequence[float | None] | None = None,
    eta: float = 0.7,
) -> dict[str, float]:
    """Accuracy, mean margin and quality-weighted accuracy, overall and per modality.

    Args:
        margins: implicit reward margin per pair. Shape: (N,)
        modalities: modality per pair; per-modality metrics are added when given.
        score_chosen, score_rejected: quality scores per pair (None where unknown).
        eta: sharpness of the quality weight σ(η (S_w − S_l)).
    """
    count = len(margins)
    score_chosen = list(score_chosen) if score_chosen is not None else [None] * count
    score_rejected = list(score_rejected) if score_rejected is not None else [None] * count
    if not len(score_chosen) == len(score_rejected) == count:
        raise ValueError("margins, score_chosen and score_rejected must have the same length")
    metrics = _group_metrics(margins, score_chosen, score_rejected, eta)
    if modalities is not None:
        if len(modalities) != count:
            raise ValueError("margins and modalities must have the same length")
        for modality in sorted(set(modalities)):
            index = [i for i, value in enumerate(modalities) if value == modality]
            group = _group_metrics(
                [margins[i] for i in index],
                [score_chosen[i] for i in index],
                [score_rejected[i] for i in index],
                eta,
            )
            metrics.update({f"{modality}/{name}": value for name, value in group.items()})
    return metrics


class Preference(Benchmark):
    """Held-out pairs; the runner supplies each pair's margin as the "response"."""

    name = "preference"
    version = "1"
    kind = "loglikelihood"
    id_field = "id"
    response_field = "margin"
    relative_file = "preference/test.jsonl"

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        return load_eval_data(
            self.name,
            self.relative_file,
            data_path,
            limit,
            make_items=_items,
            generate=_generated_rows,
        )

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return Prompt(messages=to_sample(item).prompt, images=list(item.get("images") or []))

    def score(self, item: dict[str, Any], response: float) -> dict[str, Any]:
        margin = float(response)
        return {
            "id": item["id"],
            "prompt": Prompt(messages=to_sample(item).prompt).text,
            "response": None,
            "extracted": margin,
            "margin": margin,
            "modality": item.get("modality", "text"),
            "score_chosen": item.get("score_chosen"),
            "score_rejected": item.get("score_rejected"),
            "score": float(margin > 0),
        }

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        return preference_metrics(
            [record["margin"] for record in records],
            modalities=[record["modality"] for record in records],
            score_chosen=[record["score_chosen"] for record in records],
            score_rejected=[record["score_rejected"] for record in records],
        )


def to_sample(item: dict[str, Any]) -> PreferenceSample:
    """The item as the engine's sample type (what the runner feeds its log-prob pass)."""
    # A missing source stays the sample type's UNSOURCED; calibrate() then picks the group.
    fields = ("id", "prompt", "chosen", "rejected", "images", "score_chosen", "score_rejected",
              "source")  # fmt: skip
    return PreferenceSample(
        **{name: item[name] for name in fields if name in item},
        modality=item.get("modality", "text"),
    )


def _items(rows: list[dict[str, Any]], source: Any) -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(rows):
        require_fields(row, ("prompt", "chosen", "rejected"), f"{source.source} row {index + 1}")
        items.append({**row, "id": str(row.get("id", index))})
    return items


def _generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Math pairs: the worked solution against one that is off by one."""
    rows = []
    for index, problem in enumerate(word_problems(n, seed)):
        wrong = problem.answer + 1
        rows.append(
            {
                "id": f"generated-{index}",
                "prompt": problem.question,
                "chosen": problem.solution,
                "rejected": problem.solution.replace(f"#### {problem.answer}", f"#### {wrong}"),
                "score_chosen": 1.0,
                "score_rejected": 0.0,
                "modality": "math",
            }
        )
    return rows
