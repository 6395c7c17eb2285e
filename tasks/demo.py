"""The offline demo: a tiny VLM learns the shapes world, hallucinates, and Uni-DPO fixes some of it.

    mmdpo demo [--out runs/demo] [--compare dpo] [--seeds 0-9] [key=value ...]

Steps, all on CPU, offline, seeded:

1. build a small Qwen2-VL from a config with the project's tokenizer (``tasks/demo_model.py``);
2. a short supervised warm-up in two stages, clean one-object scenes (grounding, until a
   check set is answered right) then noisy shapes-world data with the clean examples
   replayed, so that it sees the objects, describes images and answers yes/no questions, but
   still hallucinates similar objects (``tasks/demo_world.py``);
3. preference pairs on new scenes, scored by rule, of varying quality;
4. Uni-DPO through the engine, exactly as a real run: 4-bit model, LoRA, adapter-off reference;
5. POPE and CHAIR (the built-in benchmarks, through ``mmdpo.inference``'s generation) before and
   after; with ``--compare dpo``, plain DPO on the same pairs and seeds as a third column.

Overrides: ``demo.<field>=value`` sets a :class:`DemoSettings` field; any other key sets the
engine config of the alignment runs (``train.learning_rate=5e-4``, ``loss.kwargs.beta=1``).
The run folder gets the SFT model, the data, one engine run folder per loss, the eval
results, ``demo_results.json``, ``plots/demo_evals.png`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmdpo.config import Config, ConfigError, config_from_dict, load_config, parse_override
from tasks.base import jsonable
from tasks.demo_model import ModelSize

MARKER = ".mmdpo-demo"
# What the demo writes inside its run folder; a rerun removes exactly these.
OWNED = (
    "sft",
    "eval_data",
    "pairs.jsonl",
    "train",
    "eval",
    "plots",
    "demo_results.json",
    "report.html",
)


@dataclass
class DemoSettings:
    """The demo's own knobs (``demo.<field>=value``); the engine's are the usual config keys."""

    seed: int = 0
    """Seed of the model initialisation, the SFT order and the alignment runs."""
    threads: int = 1
    """torch CPU threads. One by default: the numbers in docs/demo.md were measured with one,
    float sums depend on the thread count (and so can the tiny model's SFT), and on a shared
    2-core machine one thread is also the fastest."""
    hidden_size: int = 128
    """Width of the language model."""
    num_layers: int = 2
    """Language model layers."""
    image_side: int = 56
    """Pixels per side the processor resizes a scene to (56: 4 image tokens, one per
    quadrant; 112: 16)."""
    vision_depth: int = 0
    """Vision tower layers (0: patch embedding and merger only, the fastest; 1 and 2 learned
    no better in the same number of steps)."""
    grounding_steps: int = 600
    """Steps of the first SFT stage (clean one-object scenes) at most; 0 skips it. It ends
    early at the first check the model passes (``grounding_accuracy``)."""
    grounding_check_every: int = 100
    """Steps between two checks of the first SFT stage."""
    grounding_accuracy: float = 0.95
    """Share of a check set of one-object yes/no questions (other scenes than the training
    ones) the model must answer right for the first SFT stage to end."""
    grounding_batch_size: int = 64
    """Examples per step of the first SFT stage. Larger batches passed the check on more
    seeds: at 16, seed 3 did not in 1800 steps; at 32, seed 4 did not in 1200; at 64 it
    passed at step 400 (docs/demo.md)."""
    grounding_replay: float = 1.0
    """Share of the grounding examples mixed into the second, noisy SFT stage (0: none;
    only with the first stage). The noisy examples are the same with or without them."""
    sft_scenes: int = 600
    """Scenes of the SFT data (each gives a description and 2-6 yes/no questions)."""
    sft_steps: int = 450
    """Steps of the second SFT stage (full fine-tuning, AdamW, warm-up and cosine decay).
    At 300, three of seeds 0-9 said "yes" to 15-31 % of absent objects unlike any present one
    (which no SFT example teaches: a stage that ended before its model fit its data); at 450,
    0-13 % on every seed (docs/demo.md)."""
    sft_batch_size: int = 16
    """SFT examples per step."""
    sft_learning_rate: float = 1e-3
    """SFT peak learning rate."""
    extra_object_rate: float = 0.6
    """Share of SFT descriptions that name an extra object similar to a present one."""
    false_yes_rate: float = 0.5
    """Share of SFT questions about an absent object similar to a present one answered
    "Yes." (questions about other absent objects are answered "No."). At 0.6 a model that
    learned this rate exactly would have a POPE yes-ratio of 0.719, so keeping the SFT model
    under 0.7 meant hoping it underfit its data; at 0.5 that model scores 0.683
    (docs/demo.md, "Why 0.7 is tight")."""
    pair_scenes: int = 300
    """Scenes of the preference data (a description pair and a yes/no pair each)."""
    low_margin_rate: float = 0.2
    """Share of description pairs whose responses are both flawed."""
    flip_rate: float = 0.15
    """Share of pairs with chosen and rejected swapped (the scores show it)."""
    score_noise: float = 0.5
    """Standard deviation of the Gaussian noise on every score."""
    pope_scenes: int = 100
    """Held-out scenes for POPE (about two yes and two no questions each)."""
    chair_scenes: int = 100
    """Held-out scenes for CHAIR (one description each)."""
    eval_batch_size: int = 32
    """Sequences decoded at once in the evals."""
    description_tokens: int = 48
    """Token cap of a generated description."""

    def validate(self) -> None:
        positive = ("sft_scenes", "sft_steps", "sft_batch_size", "grounding_batch_size")
        positive += ("grounding_check_every", "pair_scenes", "pope_scenes", "chair_scenes")
        for name in (*positive, "eval_batch_size", "description_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"demo.{name}: must be >= 1, got {getattr(self, name)}")
        rates = ("extra_object_rate", "false_yes_rate", "low_margin_rate", "flip_rate")
        for name in (*rates, "grounding_accuracy", "grounding_replay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"demo.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.hidden_size % 32:
            raise ConfigError(f"demo.hidden_size: a multiple of 32, got {self.hidden_size}")


# The alignment runs: the paper's vision settings (η 0.7, γ 3, τ_ref 2, β 2) with a LoRA
# learning rate for a model this small, and τ_good on the demo's 0-10 score scale.
ENGINE_DEFAULTS: dict[str, Any] = {
    "task": "demo",
    "model": {"kind": "vlm", "dtype": "float32", "quantization": "4bit"},
    "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.0},
    "data": {"train": "in-memory (shapes world)", "max_length": 256, "calibration": "none"},
    "loss": {
        "name": "uni_dpo",
        "kwargs": {
            "beta": 2.0,
            "eta": 0.7,
            "gamma": 3.0,
            "tau_ref": 2.0,
            "nll_lambda": 0.1,
            "tau_good": 8.0,
        },
    },
    "reference": {"mode": "adapter_off"},
    "train": {
        "learning_rate": 1e-3,
        "epochs": 1,
        "batch_size": 8,
        "scheduler": "cosine",
        "warmup_ratio": 0.1,
        "progress": False,
        "log_every": 5,
    },
}

METRICS = (  # (benchmark, metric, label, better)
    ("pope", "accuracy", "POPE accuracy", "higher"),
    ("pope", "f1", "POPE F1", "higher"),
    ("pope", "yes_ratio", "POPE yes-ratio", "0.5"),
    ("pope", "yes_present", "  yes to present objects", "higher"),
    ("pope", "yes_look_alike", "  yes to absent look-alikes", "lower"),
    ("pope", "yes_other", "  yes to other absent objects", "lower"),
    ("chair", "chair_s", "CHAIR_s", "lower"),
    ("chair", "chair_i", "CHAIR_i", "lower"),
    ("chair", "recall", "CHAIR recall", "higher"),
)


def split_overrides(overrides: Sequence[str]) -> tuple[DemoSettings, list[str]]:
    """``demo.*`` overrides -> DemoSettings; the others are left for the engine config."""
    settings = DemoSettings()
    hints = typing.get_type_hints(DemoSettings)
    engine = []
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] != "demo":
            engine.append(text)
            continue
        name = ".".join(parts[1:])
        if name not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(DemoSettings))
            raise ConfigError(f"demo.{name}: unknown key; valid keys: {valid}")
        expected = hints[name]
        if expected is float and not isinstance(value, bool):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
            except (TypeError, ValueError):
                pass
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"demo.{name}: expected {expected.__name__}, got {value!r}")
        setattr(settings, name, value)
    settings.validate()
    return settings, engine


def engine_configs(
    out_dir: Path, model_dir: Path, overrides: list[str], seed: int, compare: str | None
) -> dict[str, Config]:
    """The Uni-DPO run's config and, with ``compare``, the other loss's: the same settings
    except the loss, which keeps β and Uni-DPO's mean log-probs, so the columns differ only
    in what Uni-DPO adds (the two weights and the calibrated NLL)."""
    base = [
        f"model.name_or_path={model_dir}",
        f"train.output_dir={out_dir / 'train' / 'uni_dpo'}",
        f"train.seed={seed}",
    ]
    main = load_config(None, base + list(overrides), defaults=ENGINE_DEFAULTS)
    configs = {"uni_dpo": main}
    if compare:
        from mmdpo.losses import get_loss

        try:
            spec = get_loss(compare)
        except ValueError as err:
            raise ConfigError(f"--compare: {err}") from None
        data = main.to_dict()
        beta = main.loss.kwargs.get("beta")
        kwargs = {"beta": beta} if beta is not None and "beta" in spec.defaults else {}
        length_normalized = main.loss.length_normalized
        if length_normalized is None:
            length_normalized = get_loss(main.loss.name).length_normalized
        data["loss"] = {"name": compare, "kwargs": kwargs, "length_normalized": length_normalized}
        data["train"]["output_dir"] = str(out_dir / "train" / compare)
        data["reference"]["mode"] = "adapter_off" if spec.needs_reference else "none"
        configs[compare] = config_from_dict(data)
    return configs


class Stages:
    """Prints "[i/n] what" for each stage, numbered once and in order.

    ``n`` is known before the first stage: the grounding stage can be switched off and each
    alignment run is a stage of its own.
    """

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.done = 0

    def start(self, name: str, text: str) -> None:
        expected = self.names[self.done]
        if name != expected:  # a programming error: the plan and the run disagree
            raise RuntimeError(f"stage {name!r} started, expected {expected!r}")
        self.done += 1
        print(f"[{self.done}/{len(self.names)}] {text}")


def stage_names(settings: DemoSettings, losses: Sequence[str]) -> list[str]:
    """The demo's stages in order: SFT (one or two), pairs, one per alignment run, eval."""
    return [*sft_stage_names(settings), "pairs", *(f"align_{name}" for name in losses), "eval"]


def sft_stage_names(settings: DemoSettings) -> list[str]:
    return ["grounding", "sft"] if settings.grounding_steps else ["sft"]


def prepare_out_dir(out_dir: Path, owned: Sequence[str] = OWNED) -> None:
    """Create the run folder; clear what an earlier demo wrote there (``owned``), and
    nothing else."""
    from mmdpo.run_folder import check_output_dir

    check_output_dir(out_dir, "--out")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ConfigError(
            f"--out {out_dir}: the folder exists and was not made by `mmdpo demo`; "
            "choose another folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by mmdpo demo\n")
    for name in owned:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_demo(
    out_dir: str | Path = "runs/demo", overrides: Sequence[str] = (), compare: str | None = None
) -> int:
    """Run the whole demo; print the table; return 0."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one line per stage reads better than bars
    started, cpu_started = time.perf_counter(), time.process_time()
    load_started = _load_average()
    out_dir = Path(out_dir)
    settings, engine_overrides = split_overrides(list(overrides or ()))
    torch.set_num_threads(settings.threads)
    # Configs are checked before any work (a bad override fails in a second, not minutes later).
    configs = engine_configs(out_dir, out_dir / "sft", engine_overrides, settings.seed, compare)
    prepare_out_dir(out_dir)
    timings: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    machine = machine_info()
    print(f"mmdpo demo -> {out_dir}")
    print(f"machine: {machine_line(machine)}")
    stages = Stages(stage_names(settings, list(configs)))
    clock = time.perf_counter()
    sft = build_sft_model(out_dir / "sft", settings, stages)
    clock = stage("sft", clock)

    pairs, kinds, eval_files = write_demo_data(out_dir, settings, stages)
    clock = stage("data", clock)

    from mmdpo.trainer import train

    runs: dict[str, Any] = {}
    for name, config in configs.items():
        stages.start(f"align_{name}", f"aligning with {name}: {describe_run(config)}")
        result = train(config, pairs)
        runs[name] = result
        print(f"      {result.steps} steps; adapter in {result.final_checkpoint}")
        clock = stage(f"train_{name}", clock)

    stages.start("eval", "evaluating (POPE, CHAIR) before and after")
    columns = {"sft": evaluate(out_dir, "sft", None, eval_files, settings)}
    clock = stage("eval_sft", clock)
    for name, result in runs.items():
        columns[name] = evaluate(out_dir, name, result.final_checkpoint, eval_files, settings)
        clock = stage(f"eval_{name}", clock)

    total = round(time.perf_counter() - started, 1)
    timings["total"] = total
    timings["cpu_total"] = round(time.process_time() - cpu_started, 1)
    print()
    print(format_demo_table(columns))
    plot = plot_columns(columns, out_dir / "plots" / "demo_evals.png")
    summary = {
        "settings": dataclasses.asdict(settings),
        "configs": {name: config.to_dict() for name, config in configs.items()},
        "pairs": dict(kinds),
        "sft_final_loss": sft.losses[-1] if sft.losses else None,
        "grounding": {"steps": sft.grounding_steps, "check_accuracy": sft.grounding_accuracy},
        "results": columns,
        "train": {name: {"steps": r.steps, **r.train_metrics} for name, r in runs.items()},
        "timings_s": timings,
        "machine": machine,
        # Other processes on the machine slow the wall clock, not the CPU time.
        "load_average": {"start": load_started, "end": _load_average()},
    }
    (out_dir / "demo_results.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    print(f"\nresults: {out_dir / 'demo_results.json'}; plots: {plot} and {out_dir}/train/*/plots")
    from mmdpo.report import write_report

    print(f"report: {write_report([out_dir], title=f'mmdpo demo, seed {settings.seed}')}")
    load = summary["load_average"]
    print(
        f"total time {total:.0f} s, CPU time {timings['cpu_total']:.0f} s, load average "
        f"{_fmt_load(load['start'])} -> {_fmt_load(load['end'])} ({_timing_line(timings)})"
    )
    return 0


def write_demo_data(
    out_dir: Path, settings: DemoSettings, stages: Stages
) -> tuple[list[Any], Counter, dict[str, Path]]:
    """The preference pairs (``pairs.jsonl``) and the POPE / CHAIR eval files of the world."""
    from tasks.demo_world import preference_pairs, write_eval_data

    pairs = preference_pairs(
        settings.pair_scenes,
        low_margin_rate=settings.low_margin_rate,
        flip_rate=settings.flip_rate,
        score_noise=settings.score_noise,
    )
    write_pairs(out_dir / "pairs.jsonl", pairs)
    kinds = Counter(sample.meta["kind"] for sample in pairs)
    stages.start(
        "pairs",
        f"{len(pairs)} preference pairs: " + ", ".join(f"{k} {n}" for k, n in kinds.items()),
    )
    eval_files = write_eval_data(out_dir / "eval_data", settings.pope_scenes, settings.chair_scenes)
    return pairs, kinds, eval_files


@dataclass
class SFTResult:
    """What the SFT warm-up did: the loss of every step, and the grounding stage's length
    and last check (None without that stage)."""

    losses: list[float]
    grounding_steps: int = 0
    grounding_accuracy: float | None = None


def build_sft_model(
    directory: Path, settings: DemoSettings, stages: Stages | None = None
) -> SFTResult:
    """A fresh demo VLM, warmed up on noisy supervised data, saved to ``directory``.

    ``stages`` numbers its one or two stages within the demo's; alone they are numbered
    among themselves (``mmdpo ablate`` builds the SFT model this way).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tasks.demo_model import Encoder, build_demo_vlm, supervised_warmup
    from tasks.demo_world import grounding_examples, sft_examples, with_replay

    size = ModelSize(
        hidden_size=settings.hidden_size,
        intermediate_size=2 * settings.hidden_size,
        num_layers=settings.num_layers,
        vision_depth=settings.vision_depth,
        image_side=settings.image_side,
    )
    build_demo_vlm(directory, size, seed=settings.seed)
    model = AutoModelForImageTextToText.from_pretrained(directory)
    processor = AutoProcessor.from_pretrained(directory)
    encoder = Encoder(processor)
    result = SFTResult(losses=[])
    if stages is None:
        stages = Stages(sft_stage_names(settings))
    grounding = grounding_examples(400) if settings.grounding_steps else []
    if grounding:
        stages.start(
            "grounding",
            f"SFT stage 1 (grounding, clean): {len(grounding)} examples, batches of "
            f"{settings.grounding_batch_size} until {settings.grounding_accuracy:.0%} of the "
            f"check questions are right ({settings.grounding_steps} steps at most)",
        )
        result.losses, result.grounding_accuracy = ground(model, encoder, grounding, settings)
        result.grounding_steps = len(result.losses)
    examples = sft_examples(
        settings.sft_scenes,
        extra_object_rate=settings.extra_object_rate,
        false_yes_rate=settings.false_yes_rate,
    )
    described = f"{len(examples)} examples"
    if grounding and settings.grounding_replay:
        # Trained on the noisy examples alone, a grounded model answered "Yes." to about
        # 70 % of the absent look-alikes (its data then: 60 %) and to ~78 % of POPE's questions;
        # the clean examples beside them keep part of its grounding (docs/demo.md).
        noisy = len(examples)
        examples = with_replay(examples, grounding, settings.grounding_replay)
        described = f"{noisy} noisy + {len(examples) - noisy} replayed grounding examples"
    stage = "SFT stage 2 (noisy)" if settings.grounding_steps else "SFT (noisy)"
    stages.start(
        "sft",
        f"{stage}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter "
        f"Qwen2-VL, {described}, {settings.sft_steps} steps",
    )
    result.losses += supervised_warmup(
        model,
        encoder,
        examples,
        steps=settings.sft_steps,
        batch_size=settings.sft_batch_size,
        learning_rate=settings.sft_learning_rate,
        seed=settings.seed,
    )
    model.save_pretrained(directory)  # safetensors: the engine loads it like any model
    return result


def ground(
    model: Any, encoder: Any, grounding: list[Any], settings: DemoSettings
) -> tuple[list[float], float | None]:
    """The first SFT stage: the clean one-object examples at a constant learning rate until
    the model answers ``grounding_accuracy`` of a check set of such questions right (checked
    every ``grounding_check_every`` steps), ``grounding_steps`` at most. Returns the losses
    and the last check's accuracy."""
    from tasks.demo_model import supervised_warmup, yes_no_accuracy
    from tasks.demo_world import GROUNDING_CHECK_SEED, grounding_examples

    check = [
        example
        for example in grounding_examples(50, seed=GROUNDING_CHECK_SEED)
        if example.answer in ("Yes.", "No.")
    ]
    accuracies: list[float] = []

    def passes(step: int) -> bool:
        accuracies.append(yes_no_accuracy(model, encoder, check))
        print(f"  step {step}: {accuracies[-1]:.0%} of {len(check)} check questions right")
        return accuracies[-1] >= settings.grounding_accuracy

    losses = supervised_warmup(
        model,
        encoder,
        grounding,
        steps=settings.grounding_steps,
        batch_size=settings.grounding_batch_size,
        learning_rate=settings.sft_learning_rate,
        seed=settings.seed,
        stop_check=passes,
        check_every=settings.grounding_check_every,
    )
    if not accuracies or accuracies[-1] < settings.grounding_accuracy:
        print(
            f"  grounding check not passed in {settings.grounding_steps} steps: the SFT model "
            "may not tell the objects apart (more demo.grounding_steps may help)"
        )
    return losses, (accuracies[-1] if accuracies else None)


def machine_info() -> dict[str, Any]:
    """What made the numbers: CPU model and flags that change kernels, cores, versions."""
    import importlib.metadata
    import os
    import platform

    cpu, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    versions = {}
    for package in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "torch_threads": torch.get_num_threads(),
        **versions,
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line of :func:`machine_info`, for the top of the demo's output."""
    flag = "with" if machine["avx512_bf16"] else "without"
    versions = ", ".join(
        f"{name} {machine[name]}" for name in ("torch", "transformers", "peft", "bitsandbytes")
    )
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {flag} avx512_bf16, "
        f"{machine['torch_threads']} torch thread(s); {versions}"
    )


def describe_run(config: Config) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in config.loss.kwargs.items())
    return (
        f"{config.model.quantization} model + LoRA r={config.lora.r}, reference "
        f"{config.reference.mode}, lr {config.train.learning_rate:g}, "
        f"{config.loss.name}({kwargs})"
    )


def write_pairs(path: Path, pairs: list[Any]) -> None:
    """The pairs without their images (the scene id says which image), for inspection."""
    with open(path, "w", encoding="utf-8") as handle:
        for sample in pairs:
            row = {
                "id": sample.id,
                "prompt": sample.prompt[0]["content"],
                "chosen": sample.chosen,
                "rejected": sample.rejected,
                "score_chosen": sample.score_chosen,
                "score_rejected": sample.score_rejected,
                **sample.meta,
            }
            handle.write(json.dumps(row) + "\n")


def evaluate(
    out_dir: Path, name: str, adapter: Path | None, eval_files: dict, settings: DemoSettings
) -> dict[str, float]:
    """POPE and CHAIR on the 4-bit SFT model (with ``adapter`` on top when given).

    The 4-bit model is the one alignment starts from (its reference), so the columns differ
    only by the adapter. Results are saved under ``eval/<name>/``.
    """
    from eval.chair import CHAIR
    from eval.pope import POPE
    from eval.results import make_result
    from mmdpo.inference import InferenceModel
    from mmdpo.models.loading import load_policy
    from tasks.demo_world import question_kinds, yes_by_kind

    model, processor, _ = load_policy(
        out_dir / "sft",
        kind="vlm",
        quantization="4bit",
        dtype="float32",
        prepare_for_training=False,
    )
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    model.eval()
    loaded = InferenceModel(model, processor, is_vlm=True)
    metrics: dict[str, float] = {}
    for bench, max_tokens in ((POPE(), 8), (CHAIR(), settings.description_tokens)):
        data = bench.load(eval_files[bench.name])
        prompts = [bench.build_prompt(item) for item in data.items]
        responses, stats = loaded.generate(
            prompts,
            max_new_tokens=max_tokens,
            batch_size=settings.eval_batch_size,
            progress=False,
        )
        records = [bench.score(item, r) for item, r in zip(data.items, responses, strict=True)]
        result = make_result(
            bench,
            data,
            records,
            model=str(out_dir / "sft"),
            adapter=str(adapter) if adapter else None,
            generation={"max_new_tokens": max_tokens, "greedy": True, "quantization": "4bit"},
            extra={"throughput": stats},
        )
        result.save(out_dir / "eval" / name)
        metrics.update({f"{bench.name}/{key}": value for key, value in result.metrics.items()})
        if bench.name == "pope":  # where the "yes" answers go (present, look-alike, other)
            kinds = question_kinds(eval_files["pope"])
            metrics.update({f"pope/{key}": v for key, v in yes_by_kind(records, kinds).items()})
    return metrics


COLUMN_TITLES = {"sft": "SFT (before)", "uni_dpo": "Uni-DPO"}


def format_demo_table(columns: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, models as columns; the arrow says which way is better."""
    titles = [COLUMN_TITLES.get(name, name.upper()) for name in columns]
    rows = [["metric", *titles]]
    for bench, metric, label, better in METRICS:
        mark = {"higher": " (higher better)", "lower": " (lower better)"}.get(
            better, " (0.5 ideal)"
        )
        values = [columns[name].get(f"{bench}/{metric}", math.nan) for name in columns]
        rows.append([label + mark, *[_fmt(v) for v in values]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def plot_columns(columns: dict[str, dict[str, float]], path: Path) -> Path:
    """A grouped bar chart: one group per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(columns)
    for index, (name, metrics) in enumerate(columns.items()):
        values = [metrics.get(f"{bench}/{metric}", math.nan) for bench, metric, _, _ in METRICS]
        positions = [m + (index - (len(columns) - 1) / 2) * width for m in range(len(METRICS))]
        axis.bar(positions, values, width, label=COLUMN_TITLES.get(name, name.upper()))
    axis.set_xticks(range(len(METRICS)))
    axis.set_xticklabels([label for _, _, label, _ in METRICS], rotation=15)
    axis.set_ylim(0, 1)
    axis.set_title("Shapes-world hallucination evals (CHAIR_s, CHAIR_i: lower is better)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _fmt(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.3f}"


def _timing_line(timings: dict[str, float]) -> str:
    return ", ".join(
        f"{name} {seconds:.0f} s"
        for name, seconds in timings.items()
        if name not in ("total", "cpu_total")
    )


def _load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _fmt_load(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"
