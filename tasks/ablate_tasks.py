"""What ``mmdpo ablate`` trains and how it scores a run, one class per ``--task``.

A task prepares what all variants share (once, resumable) under ``OUT/shared``, names the
Uni-DPO training config every variant starts from, and evaluates a trained run.
"""

from __future__ import annotations

import argparse
import json
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

    def train_samples(self, shared: Path) -> list[Any] | None:
        """The pairs to train on, or None to load the config's ``data`` (the usual way)."""
        return None

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


def _write_yaml(config: Any, path: Path) -> Path:
    from mmdpo.config import save_config

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_config(config, tmp)
    tmp.replace(path)
    return path


class DemoTask(AblationTask):
    """The demo world (``mmdpo demo``): one SFT model and one set of noisy pairs (flipped and
    low-margin ones are what the quality weight is for), POPE and CHAIR on held-out scenes.

    The world, the SFT model and the pairs come from the demo's settings (``demo.seed`` 0
    unless overridden); each run's seed changes only the training order and the LoRA init.
    """

    metrics = [
        Metric("pope/accuracy", "POPE accuracy"),
        Metric("pope/f1", "POPE F1"),
        Metric("pope/yes_ratio", "POPE yes-ratio", higher_is_better=False),
        Metric("chair/chair_s", "CHAIR_s", higher_is_better=False),
        Metric("chair/chair_i", "CHAIR_i", higher_is_better=False),
    ]

    def __init__(self, demo_overrides: list[str] | None = None, **_: Any) -> None:
        self.demo_overrides = list(demo_overrides or [])

    def _settings(self) -> Any:
        from tasks.demo import split_overrides

        settings, engine = split_overrides(self.demo_overrides)
        if engine:
            raise ValueError(f"demo options must start with demo., got {engine}")
        return settings

    def prepare(self, shared: Path) -> None:
        import torch

        from tasks.demo import build_sft_model, evaluate
        from tasks.demo_world import write_eval_data

        settings = self._settings()
        torch.set_num_threads(settings.threads)
        if not (shared / "sft" / "config.json").is_file():
            print("  shared: SFT model (demo stages 1-2)")
            build_sft_model(shared / "sft", settings)
        eval_files = write_eval_data(
            shared / "eval_data", settings.pope_scenes, settings.chair_scenes
        )
        before = shared / "before.json"
        if not before.is_file():
            print("  shared: POPE and CHAIR of the SFT model")
            metrics = evaluate(shared, "sft", None, eval_files, settings)
            before.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        self.base_config(shared)

    def base_config(self, shared: Path) -> Path:
        path = shared / "base.yaml"
        if not path.is_file():
            from tasks.demo import engine_configs

            configs = engine_configs(shared, shared / "sft", [], self._settings().seed, None)
            _write_yaml(configs["uni_dpo"], path)
        return path

    def train_samples(self, shared: Path) -> list[Any]:
        from tasks.demo_world import preference_pairs

        settings = self._settings()
        return preference_pairs(
            settings.pair_scenes,
            low_margin_rate=settings.low_margin_rate,
            flip_rate=settings.flip_rate,
            score_noise=settings.score_noise,
        )

    def evaluate(self, shared: Path, trained: Any, *, threads: int) -> dict[str, float]:
        from tasks.demo import evaluate
        from tasks.demo_world import write_eval_data

        settings = self._settings()
        eval_files = write_eval_data(
            shared / "eval_data", settings.pope_scenes, settings.chair_scenes
        )
        name = "runs/" + "-".join(Path(trained.run_dir).parts[-3:-1])
        return evaluate(shared, name, trained.final_checkpoint, eval_files, settings)

    def before(self, shared: Path) -> dict[str, float] | None:
        path = shared / "before.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class SmolTask(AblationTask):
    """SmolLM2-135M-Instruct (``mmdpo smol``): on-policy pairs sampled once from the model,
    scored by rule, trained by every variant; greedy answers to held-out prompts scored again.

    ``smol-text``: writing prompts with IFEval instructions; the score of a response is 10 x
    the share of its instructions it follows (graded, not pass/fail), chosen = best, rejected
    = worst of K. ``smol-math``: word problems, correct vs incorrect.
    """

    def __init__(self, preset: str, n_prompts: int | None = None, k: int | None = None) -> None:
        from tasks.smol_preset import PRESETS

        self.preset_name = preset
        self.preset = PRESETS[preset]
        self.metrics = [Metric(key, label) for key, label in self.preset.metrics]
        self.args = argparse.Namespace(
            preset=preset,
            model=None,
            n_prompts=n_prompts or 256,
            n_heldout=128,
            k=k or 4,
            temperature=0.7,
            max_new_tokens=128,
            batch_size=64,
            seed=0,
            threads=1,
            no_progress=True,
            words=[],
        )

    def prepare(self, shared: Path) -> None:
        from tasks.smol_preset import build_pairs, ensure_model, evaluate, write_prompts

        config = self._config(shared)
        model_dir = ensure_model(Path(config.model.name_or_path), explicit=False)
        if not (shared / "prompts" / "heldout.jsonl").is_file():
            write_prompts(self.preset, shared / "prompts", self.args)
        before = shared / "before.json"
        if not before.is_file():
            print("  shared: held-out eval of the base model")
            metrics = evaluate(
                self.preset, shared / "prompts" / "heldout.jsonl", str(model_dir),
                shared / "eval" / "before", self.args,
            )  # fmt: skip
            before.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        pairs = shared / "pairs.jsonl"
        if not pairs.is_file():
            print(f"  shared: {self.args.k} samples per train prompt, scored and paired")
            tmp = shared / "pairs.partial.jsonl"
            counts = build_pairs(self.preset, shared / "prompts" / "train.jsonl", tmp, model_dir,
                                 self.args)  # fmt: skip
            for suffix in (".report.json", ".responses.jsonl"):
                made = Path(f"{tmp}{suffix}")
                if made.is_file():
                    made.replace(Path(f"{pairs}{suffix}"))
            tmp.replace(pairs)
            print(f"  shared: {counts['pairs']} pairs")
        self.base_config(shared)

    def _config(self, shared: Path) -> Any:
        from tasks.smol_preset import engine_config

        config = engine_config(self.preset, shared, None, self.args)
        return config

    def base_config(self, shared: Path) -> Path:
        path = shared / "base.yaml"
        if not path.is_file():
            _write_yaml(self._config(shared), path)
        return path

    def evaluate(self, shared: Path, trained: Any, *, threads: int) -> dict[str, float]:
        from tasks.smol_preset import evaluate

        args = argparse.Namespace(**{**vars(self.args), "threads": threads})
        return evaluate(
            self.preset, shared / "prompts" / "heldout.jsonl", str(trained.run_dir),
            Path(trained.run_dir).parent / "eval", args,
        )  # fmt: skip

    def before(self, shared: Path) -> dict[str, float] | None:
        path = shared / "before.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


TASKS: dict[str, Any] = {
    "config": ConfigTask,
    "demo": DemoTask,
    "smol-text": SmolTask,
    "smol-math": SmolTask,
}


def make_task(name: str, config: str | None, options: dict[str, Any]) -> AblationTask:
    if name not in TASKS:
        raise ValueError(f"unknown ablation task {name!r}; valid: {', '.join(TASKS)}")
    if name == "config":
        return ConfigTask(config or "")
    if name == "demo":
        return DemoTask(options.get("demo_overrides"))
    return SmolTask(name.removeprefix("smol-"), options.get("n_prompts"), options.get("k"))
