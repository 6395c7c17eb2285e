"""The runner: load a model (or an mmdpo run) once, drive benchmarks through it, return results.

The model is reached only through ``mmdpo.inference.InferenceModel`` (after
lm-evaluation-harness's narrow model interface), in one of two ways per benchmark:

- ``generate``: chat prompts rendered with the model's template, generated in batches
  (greedy by default), cut at the benchmark's stop strings, then scored.
- ``reward_margins`` (``kind == "loglikelihood"``): the implicit DPO reward margin
  ``β[(ℓw − ℓw⁰) − (ℓl − ℓl⁰)]`` of held-out pairs; the policy is the model with its adapter
  on, the reference the same model with the adapter off (as in training).

A run folder of mmdpo (``config.yaml`` and ``checkpoints/step-*/``) stands for its base model
(``model.name_or_path`` of its config) with the adapter of its latest checkpoint; its loss
settings give β and mean vs summed log-probs for the margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData
from eval.registry import get_benchmark
from eval.results import EvalResult, make_result
from mmdpo.inference import InferenceError, InferenceModel, is_run_folder, margin_settings

__all__ = ["EvalError", "is_run_folder", "parse_names", "run_benchmarks"]


class EvalError(ValueError):
    """A problem with what the user asked for (model, adapter, benchmark): no traceback."""


# ---------------------------------------------------------------------------- benchmarks


def parse_names(names: str | Sequence[str]) -> list[str]:
    """``"gsm8k,ifeval"`` or a list of names (each may hold commas) -> names, in order."""
    parts = [names] if isinstance(names, str) else list(names)
    found = [name.strip() for part in parts for name in part.split(",") if name.strip()]
    if not found:
        raise EvalError("no benchmark named")
    return found


def run_benchmarks(
    names: str | Sequence[str],
    *,
    model: str,
    adapter: str | None = None,
    data: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
    max_new_tokens: int | None = None,
    greedy: bool = True,
    temperature: float = 1.0,
    dtype: str | None = None,
    progress: bool = True,
    model_settings: dict[str, Any] | None = None,
) -> list[EvalResult]:
    """Load the model once, run each benchmark on it, save each result when ``out_dir``.

    Args:
        names: benchmark names (``"gsm8k,ifeval"`` or a list).
        model: a model folder or hub id, or an mmdpo run folder (its base model plus the
            adapter of its latest checkpoint).
        adapter: a run folder (or checkpoint folder) whose adapter goes on top of ``model``.
        data: ``--data``: a file (one benchmark) or a folder laid out like $MMDPO_EVAL_DATA.
        limit: the first ``limit`` samples of each benchmark.
        batch_size: generation benchmarks: sequences decoded at once (8 keeps the log-likelihood
            benchmarks' memory low; on CPU, generation alone runs faster with 32-64);
            log-likelihood benchmarks: pairs per forward.
        max_new_tokens: overrides every benchmark's own cap.
        dtype: weights dtype; default: the run's, else bfloat16 on CUDA and float32 on CPU.
        model_settings: for a plain ``model``: a config's ``model`` section to load it with
            (quantization, kind, dtype), as ``InferenceModel.load`` takes it.

    Returns:
        One ``EvalResult`` per benchmark, in the order named.
    """
    benchmarks = _benchmarks(names, has_adapter=adapter is not None or is_run_folder(model))
    datasets = [bench.load(data, limit) for bench in benchmarks]  # data errors before loading
    try:
        loaded = InferenceModel.load(model, adapter, dtype=dtype, model_settings=model_settings)
    except InferenceError as error:
        raise EvalError(str(error)) from None
    options = {"batch_size": batch_size, "progress": progress}
    results = []
    for bench, eval_data in zip(benchmarks, datasets, strict=True):
        if bench.kind == "loglikelihood":
            records, generation, stats = _run_loglikelihood(bench, eval_data, loaded, **options)
        else:
            records, generation, stats = _run_generation(
                bench,
                eval_data,
                loaded,
                max_new_tokens=max_new_tokens or bench.max_new_tokens,
                greedy=greedy,
                temperature=temperature,
                **options,
            )
        generation.update(batch_size=batch_size, dtype=loaded.dtype, device=str(loaded.device))
        result = make_result(
            bench,
            eval_data,
            records,
            model=str(model),
            adapter=loaded.adapter,
            generation=generation,
            extra={"base_model": loaded.base, "throughput": stats},
        )
        if out_dir is not None:
            result.save(out_dir)
        results.append(result)
    return results


def _benchmarks(names: str | Sequence[str], *, has_adapter: bool) -> list[Any]:
    """The named benchmarks; a log-likelihood one needs an adapter to switch off."""
    try:
        benchmarks = [get_benchmark(name) for name in parse_names(names)]
    except KeyError as error:
        raise EvalError(error.args[0]) from None
    for bench in benchmarks:
        if bench.kind == "loglikelihood" and not has_adapter:
            raise EvalError(
                f"{bench.name} compares the model with its adapter on and off: give a run "
                "folder as --model, or --adapter RUN"
            )
    return benchmarks


def _run_generation(
    bench: Benchmark,
    data: EvalData,
    loaded: InferenceModel,
    *,
    max_new_tokens: int,
    greedy: bool,
    temperature: float,
    batch_size: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Generate every turn of every item (turn t of all items in one batched pass), score."""
    items = data.items
    turns = [bench.num_turns(item) for item in items]
    answers: list[list[str]] = [[] for _ in items]
    totals = {"seconds": 0.0, "new_tokens": 0}
    for turn in range(max(turns, default=0)):
        active = [index for index, count in enumerate(turns) if count > turn]
        prompts = [bench.build_prompt(items[index], answers[index]) for index in active]
        responses, stats = loaded.generate(
            prompts,
            max_new_tokens=max_new_tokens,
            stop=bench.stop,
            batch_size=batch_size,
            greedy=greedy,
            temperature=temperature,
            progress=progress,
            desc=bench.name if turn == 0 else f"{bench.name} turn {turn + 1}",
        )
        for index, response in zip(active, responses, strict=True):
            answers[index].append(response)
        totals["seconds"] += stats["seconds"]
        totals["new_tokens"] += stats["new_tokens"]
    records = [
        bench.score(item, answer[0] if len(answer) == 1 else answer)
        for item, answer in zip(items, answers, strict=True)
    ]
    seconds = totals["seconds"]
    throughput = {
        **totals,
        "n": len(items),
        "samples_per_s": round(len(items) / seconds, 4) if seconds else float("nan"),
        "tokens_per_s": round(totals["new_tokens"] / seconds, 2) if seconds else float("nan"),
    }
    generation = {
        "max_new_tokens": max_new_tokens,
        "stop": list(bench.stop),
        "do_sample": not greedy,
        "temperature": None if greedy else temperature,
        "chat_template": True,
    }
    return records, generation, throughput


def _run_loglikelihood(
    bench: Benchmark, data: EvalData, loaded: InferenceModel, *, batch_size: int, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Reward margins of the held-out pairs, their scores on the run's calibrated scale."""
    from eval.preference import to_sample

    beta, average, loss_name = margin_settings(loaded.run_config)
    max_length = loaded.run.max_length if loaded.run is not None else 1024
    raw = [to_sample(item) for item in data.items]
    samples, calibration = loaded.calibrate(raw)
    items = data.items  # the records show the scores the margins were weighed with
    if samples is not raw:
        items = [
            {**item, "score_chosen": sample.score_chosen, "score_rejected": sample.score_rejected}
            for item, sample in zip(data.items, samples, strict=True)
        ]
    margins, stats = loaded.reward_margins(
        samples,
        beta=beta,
        average=average,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    records = [bench.score(item, margin) for item, margin in zip(items, margins, strict=True)]
    settings = {
        "calibration": calibration,
        "beta": beta,
        "logps": "mean" if average else "sum",
        "loss": loss_name,
        "max_length": max_length,
        "reference": "adapter_off",
    }
    return records, settings, stats
