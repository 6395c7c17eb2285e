"""The runner: load a model (or an mmdpo run), drive benchmarks through it, return results.

Two ways a model answers a benchmark, after lm-evaluation-harness's narrow model interface:

- ``generate``: chat prompts rendered with the model's template, generated in left-padded
  batches (greedy by default), cut at the benchmark's stop strings, then scored.
- ``preference_margins`` (``kind == "loglikelihood"``): the implicit DPO reward margin
  ``β[(ℓw − ℓw⁰) − (ℓl − ℓl⁰)]`` of held-out pairs, with the engine's own transform, collator
  and forward; the policy is the model with its adapter on, the reference the same model with
  the adapter off (as in training).

A run folder of mmdpo (``config.yaml`` and ``checkpoints/step-*/``) stands for its base model
(``model.name_or_path`` of its config) with the adapter of its newest checkpoint that verifies;
its resolved loss setting gives β and mean vs summed log-probs for the margins.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eval.base import Benchmark, EvalData, Prompt
from eval.registry import get_benchmark
from eval.results import EvalResult, make_result
from mmdpo.checkpoint import CALIBRATION_FILE, MANIFEST, CheckpointError, verified_checkpoint
from mmdpo.config import read_yaml
from mmdpo.data.transform import FALLBACK_CHAT_TEMPLATE, load_image
from mmdpo.run_folder import CONFIG_FILE as RUN_CONFIG
from mmdpo.run_folder import RunFolder


class EvalError(ValueError):
    """A problem with what the user asked for (model, adapter, benchmark): no traceback."""


# ---------------------------------------------------------------------------- generation


def _tokenizer(processing: Any, is_vlm: bool) -> Any:
    return processing.tokenizer if is_vlm else processing


def render_prompt(processing: Any, prompt: Prompt, *, is_vlm: bool) -> str:
    """The prompt's messages through the chat template, ending with the assistant's opening.

    Text models get list contents flattened to their text; a tokenizer without a chat
    template (a base model) gets the engine's plain ``User: ... Assistant:`` fallback.
    """
    messages = prompt.messages
    if not is_vlm:
        messages = [
            {**message, "content": _message_text(message["content"])} for message in messages
        ]
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if getattr(processing, "chat_template", None) is None:
        kwargs["chat_template"] = FALLBACK_CHAT_TEMPLATE
    return processing.apply_chat_template(messages, **kwargs)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest stop string (the stop string itself removed)."""
    cut = min((index for s in stop if s and (index := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the generation config's."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for token in [value] if isinstance(value, int) else list(value or []):
            if token not in ids:
                ids.append(int(token))
    return ids


def _encode_batch(
    processing: Any, texts: list[str], prompts: list[Prompt], is_vlm: bool
) -> dict[str, torch.Tensor]:
    """Left-padded inputs for one batch; images through the processor for VLMs."""
    tokenizer = _tokenizer(processing, is_vlm)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must follow every prompt directly
    try:
        if is_vlm and prompts[0].images:
            images = [[load_image(image) for image in prompt.images] for prompt in prompts]
            return dict(processing(text=texts, images=images, padding=True, return_tensors="pt"))
        return dict(tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt"))
    finally:
        tokenizer.padding_side = previous_side


def _batches(prompts: list[Prompt], texts: list[str], batch_size: int, is_vlm: bool):
    """Index batches, longest prompts first (less padding); VLM batches never mix prompts
    with and without images, which processors cannot pad together."""
    order = sorted(range(len(prompts)), key=lambda i: (bool(prompts[i].images), -len(texts[i])))
    batch: list[int] = []
    for index in order:
        if batch and (
            len(batch) == batch_size
            or (is_vlm and bool(prompts[batch[0]].images) != bool(prompts[index].images))
        ):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


@torch.inference_mode()
def generate(
    model: Any,
    processing: Any,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    batch_size: int = 8,
    is_vlm: bool = False,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    progress: bool = True,
    desc: str = "generating",
) -> tuple[list[str], dict[str, Any]]:
    """Responses to ``prompts`` (in their order) and throughput statistics.

    Args:
        model: a causal LM or image-text-to-text model (PEFT-wrapped or not).
        processing: its tokenizer (text) or processor (VLM).
        prompts: chat prompts; a VLM prompt's images go through the processor.
        max_new_tokens: cap on generated tokens per response.
        stop: strings that end a response; generation stops at them (``stop_strings``) and
            the response is cut before the first one.
        batch_size: prompts per ``generate`` call (left padding).
        greedy: greedy decoding; otherwise sampling with ``temperature`` and ``top_p``.

    Returns:
        ``(responses, stats)``: stats holds ``samples_per_s``, ``seconds``, ``n``,
        ``new_tokens`` (generated, EOS included) and ``tokens_per_s``.
    """
    from tqdm.auto import tqdm

    model.eval()
    tokenizer = _tokenizer(processing, is_vlm)
    texts = [render_prompt(processing, prompt, is_vlm=is_vlm) for prompt in prompts]
    settings: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": not greedy,
        "eos_token_id": eos_token_ids(model, tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if greedy:  # a checkpoint's sampling defaults would only raise warnings
        settings.update(temperature=None, top_p=None, top_k=None)
    else:
        settings.update(temperature=temperature, top_p=top_p)
    if stop:
        settings.update(stop_strings=list(stop), tokenizer=tokenizer)
    device = next(model.parameters()).device
    responses: list[str] = [""] * len(prompts)
    new_tokens, start = 0, time.perf_counter()
    bar = tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress)
    for batch in _batches(list(prompts), texts, batch_size, is_vlm):
        inputs = _encode_batch(
            processing, [texts[i] for i in batch], [prompts[i] for i in batch], is_vlm
        )
        inputs = {key: value.to(device) for key, value in inputs.items()}
        output = model.generate(**inputs, **settings)
        generated = output[:, inputs["input_ids"].shape[1] :]
        for row, index in enumerate(batch):
            tokens = _until_eos(generated[row].tolist(), settings)
            new_tokens += len(tokens)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            responses[index] = cut_at_stop(text, stop).strip()
        done = bar.n + len(batch)
        bar.set_postfix(samples_per_s=f"{done / (time.perf_counter() - start):.3f}", refresh=False)
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    stats = {
        "n": len(prompts),
        "seconds": round(seconds, 3),
        "samples_per_s": round(len(prompts) / seconds, 4) if seconds else float("nan"),
        "new_tokens": new_tokens,
        "tokens_per_s": round(new_tokens / seconds, 2) if seconds else float("nan"),
    }
    return responses, stats


def _until_eos(tokens: list[int], settings: dict[str, Any]) -> list[int]:
    """Generated ids up to and including the first EOS (later ones are padding)."""
    for position, token in enumerate(tokens):
        if token in settings["eos_token_id"]:
            return tokens[: position + 1]
    return tokens


# ---------------------------------------------------------------------------- log-likelihood


@torch.inference_mode()
def preference_margins(
    model: Any,
    processing: Any,
    items: Sequence[dict[str, Any]],
    *,
    is_vlm: bool = False,
    beta: float = 1.0,
    average: bool = True,
    batch_size: int = 8,
    max_length: int = 1024,
    progress: bool = True,
) -> tuple[list[float], dict[str, Any]]:
    """The implicit reward margin of each preference pair, and timing statistics.

    ``margin = β[(ℓw − ℓw⁰) − (ℓl − ℓl⁰)]``: ℓ the policy's (adapter on) and ℓ⁰ the
    reference's (adapter off) response log-probs, per-token means when ``average`` else sums.

    Raises:
        EvalError: the model has no adapter to switch off (the margin would be zero).
    """
    from tqdm.auto import tqdm

    from eval.preference import to_sample
    from mmdpo.data.collate import PreferenceCollator
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.forward import concatenated_forward
    from mmdpo.objective import adapter_disabled, unwrap

    if not hasattr(unwrap(model), "disable_adapter"):
        raise EvalError(
            "preference margins compare the model with its adapter on and off: give a run "
            "folder as --model, or --adapter RUN"
        )
    model.eval()
    transform = PairTransform(processing, TransformSettings(max_length=max_length), is_vlm=is_vlm)
    collate = PreferenceCollator(_tokenizer(processing, is_vlm).pad_token_id)
    device = next(model.parameters()).device
    margins: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=len(items), desc="preference margins", unit="pair", disable=not progress)
    for first in range(0, len(items), batch_size):
        pairs = [transform(to_sample(item)) for item in items[first : first + batch_size]]
        batch = collate(pairs).to(device)
        policy = concatenated_forward(model, batch)
        with adapter_disabled(model):
            reference = concatenated_forward(model, batch)
        chosen = policy.chosen(average) - reference.chosen(average)
        rejected = policy.rejected(average) - reference.rejected(average)
        margins += (beta * (chosen - rejected)).float().tolist()
        bar.update(len(pairs))
    bar.close()
    seconds = time.perf_counter() - start
    return margins, {
        "n": len(items),
        "seconds": round(seconds, 3),
        "samples_per_s": round(len(items) / seconds, 4) if seconds else float("nan"),
    }


# ---------------------------------------------------------------------------- models and runs


@dataclass
class LoadedModel:
    """A model ready for evaluation and what it was loaded from.

    Attributes:
        model, processing: the (possibly PEFT-wrapped) model and its tokenizer or processor.
        is_vlm: loaded as an image-text-to-text model.
        base: the base model's name or path.
        adapter: the checkpoint folder of the adapter, or None.
        run_config: the run's ``config.yaml`` as a dict when an mmdpo run was given, else {}.
        dtype: dtype of the weights.
    """

    model: Any
    processing: Any
    is_vlm: bool
    base: str
    adapter: str | None = None
    run_config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"


def is_run_folder(path: str | Path) -> bool:
    """An mmdpo run: a folder with ``config.yaml`` and a ``checkpoints/`` folder."""
    return RunFolder(path).is_run()


def resolve_adapter(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint folder, run config) of a run folder, or of a checkpoint folder given as is.

    Raises:
        EvalError: neither a run with a complete checkpoint nor a PEFT adapter folder.
    """
    path = Path(path)
    if is_run_folder(path):
        checkpoint = RunFolder(path).latest_checkpoint()
        if checkpoint is None:
            raise EvalError(
                f"run {path} has no complete checkpoint that verifies under {path}/checkpoints"
            )
        return checkpoint, read_yaml(path / RUN_CONFIG)
    if (path / "adapter_config.json").is_file():
        if (path / MANIFEST).is_file():  # an mmdpo checkpoint: used only if it verifies
            try:
                verified_checkpoint(path)
            except CheckpointError as err:
                raise EvalError(str(err)) from None
        run = path.parent.parent  # <run>/checkpoints/step-N
        config = read_yaml(run / RUN_CONFIG) if (run / RUN_CONFIG).is_file() else {}
        return path, config
    raise EvalError(
        f"{path} is neither an mmdpo run folder (config.yaml + checkpoints/) nor a PEFT "
        "adapter folder (adapter_config.json)"
    )


def load_for_eval(
    model: str,
    adapter: str | None = None,
    *,
    dtype: str | None = None,
    model_settings: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model folder or hub id, or an mmdpo run, plus an optional adapter run on top.

    The base model is loaded with the run's model settings (kind, quantization, remote
    code), frozen; without a run, with ``model_settings`` (a config's ``model`` section, so
    a base model is evaluated as a run of it trains). ``dtype`` defaults to the run's
    (bfloat16 on CUDA, float32 on CPU without a run).
    """
    from mmdpo.models.loading import load_policy

    adapter_path: Path | None = None
    run_config: dict[str, Any] = {}
    base = model
    if is_run_folder(model):
        adapter_path, run_config = resolve_adapter(model)
        base = str(run_config.get("model", {}).get("name_or_path") or "")
        if not base:
            raise EvalError(f"{model}/{RUN_CONFIG} names no model.name_or_path")
    if adapter is not None:
        if adapter_path is not None:
            raise EvalError("--model is already a run folder with an adapter; drop --adapter")
        adapter_path, run_config = resolve_adapter(adapter)
    settings = run_config.get("model") or model_settings or {}
    dtype = (
        dtype or settings.get("dtype") or ("bfloat16" if torch.cuda.is_available() else "float32")
    )
    quantization = settings.get("quantization", "none")
    loaded, processing, info = load_policy(
        base,
        kind=settings.get("kind", "auto"),
        quantization=quantization,
        quant_type=settings.get("quant_type", "nf4"),
        double_quant=settings.get("double_quant", True),
        dtype=dtype,
        trust_remote_code=bool(settings.get("trust_remote_code", False)),
        prepare_for_training=False,
    )
    if quantization == "none" and torch.cuda.is_available():
        loaded = loaded.to("cuda")
    if adapter_path is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(adapter_path), is_trainable=False)
    loaded.eval()
    return LoadedModel(
        loaded,
        processing,
        info.is_vlm,
        str(base),
        str(adapter_path) if adapter_path is not None else None,
        run_config,
        str(dtype),
    )


def margin_settings(run_config: dict[str, Any]) -> tuple[float, bool, str]:
    """(β, mean log-probs?, loss name) from a run's loss settings; the default loss otherwise."""
    from mmdpo.config import LossSettings
    from mmdpo.losses import resolve_loss

    loss = {**vars(LossSettings()), **run_config.get("loss", {})}
    setting = resolve_loss(loss["name"], loss.get("kwargs"), loss.get("length_normalized"))
    return float(setting.hyperparams.get("beta", 1.0)), setting.average, setting.name


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
        max_new_tokens: overrides every benchmark's own cap.
        dtype: weights dtype; default: the run's, else bfloat16 on CUDA and float32 on CPU.
        model_settings: for a plain ``model``: a config's ``model`` section to load it with
            (quantization, kind, dtype), as ``load_for_eval`` takes it.

    Returns:
        One ``EvalResult`` per benchmark, in the order named.
    """
    try:
        benchmarks = [get_benchmark(name) for name in parse_names(names)]
    except KeyError as error:
        raise EvalError(error.args[0]) from None
    has_adapter = adapter is not None or is_run_folder(model)
    for bench in benchmarks:
        if bench.kind == "loglikelihood" and not has_adapter:
            raise EvalError(
                f"{bench.name} compares the model with its adapter on and off: give a run "
                "folder as --model, or --adapter RUN"
            )
    datasets = [bench.load(data, limit) for bench in benchmarks]  # data errors before loading
    loaded = load_for_eval(model, adapter, dtype=dtype, model_settings=model_settings)
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
        generation.update(batch_size=batch_size, dtype=loaded.dtype, device=_device(loaded))
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


def _device(loaded: LoadedModel) -> str:
    return str(next(loaded.model.parameters()).device)


def _run_generation(
    bench: Benchmark,
    data: EvalData,
    loaded: LoadedModel,
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
        responses, stats = generate(
            loaded.model,
            loaded.processing,
            prompts,
            max_new_tokens=max_new_tokens,
            stop=bench.stop,
            batch_size=batch_size,
            is_vlm=loaded.is_vlm,
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


def _calibrated_items(
    items: list[dict[str, Any]], adapter: str | None
) -> tuple[list[dict[str, Any]], str]:
    """Scores on the run's calibrated scale (its checkpoint's calibration.json), as in training.

    Groups the run never saw keep their raw scores. Returns the items and what was applied.
    """
    from eval.preference import to_sample
    from mmdpo.calibration import Calibration

    path = Path(adapter) / CALIBRATION_FILE if adapter else None
    if path is None or not path.is_file():
        return items, "none (no run calibration)"
    calibration = Calibration.load(path)
    if calibration.method == "none":
        return items, "none"
    calibration.on_unknown = "raw"
    out = []
    for item in items:
        sample = calibration.apply(to_sample(item))
        out.append(
            {**item, "score_chosen": sample.score_chosen, "score_rejected": sample.score_rejected}
        )
    return out, f"{calibration.method} ({path})"


def _run_loglikelihood(
    bench: Benchmark, data: EvalData, loaded: LoadedModel, *, batch_size: int, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    beta, average, loss_name = margin_settings(loaded.run_config)
    max_length = int(loaded.run_config.get("data", {}).get("max_length") or 1024)
    items, calibration = _calibrated_items(data.items, loaded.adapter)
    margins, stats = preference_margins(
        loaded.model,
        loaded.processing,
        items,
        is_vlm=loaded.is_vlm,
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
