"""Typed run configuration: dataclasses, YAML files, dotted ``key=value`` overrides, validation.

Every field is documented once, here. ``load_config(path, overrides)`` reads a YAML file
(``safe_load``: a config can never import code), applies overrides such as
``train.lr=1e-5`` or ``loss.kwargs.beta=2``, and builds a validated :class:`Config`.
Unknown keys and wrong types are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mmdpo.losses import LossSetting

QUANTIZATION_MODES = ("none", "8bit", "4bit")
REFERENCE_MODES = ("adapter_off", "model", "precomputed", "none")
DTYPES = ("float32", "bfloat16", "float16")
SCHEDULERS = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "paged_adamw_8bit", "adamw_8bit")
FORWARD_LAYOUT_SETTINGS = ("auto", "two_row", "shared_prompt", "packed")
CALIBRATIONS = ("none", "zscore", "minmax", "rank")


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key."""


@dataclass
class ModelConfig:
    name_or_path: str = ""
    """Hub id or local folder of the policy (safetensors weights only)."""
    kind: str = "auto"
    """``auto`` (decided from the model config), ``causal_lm`` or ``vlm``."""
    dtype: str = "bfloat16"
    """Weights / compute dtype: float32, bfloat16 or float16."""
    quantization: str = "none"
    """``none``, ``8bit`` or ``4bit`` (bitsandbytes)."""
    quant_type: str = "nf4"
    """4-bit type: ``nf4`` or ``fp4``."""
    double_quant: bool = True
    """Quantize the 4-bit quantization constants too."""
    trust_remote_code: bool = False
    """Run model code from the hub. Off unless you turn it on."""
    attn_implementation: str | None = None
    """``sdpa``, ``eager`` or None for the transformers default."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""

    def validate(self) -> None:
        _choice("model.kind", self.kind, ("auto", "causal_lm", "vlm"))
        _choice("model.dtype", self.dtype, DTYPES)
        _choice("model.quantization", self.quantization, QUANTIZATION_MODES)
        _choice("model.quant_type", self.quant_type, ("nf4", "fp4"))
        if not self.name_or_path:
            raise ConfigError("model.name_or_path: required (a hub id or a local folder)")


@dataclass
class LoraSettings:
    enabled: bool = True
    """Train a LoRA adapter (False: full fine-tuning, no quantization)."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: Any = "all-linear"
    """``all-linear`` (language model linears) or a list of module names."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained in full and saved with the adapter."""
    freeze_vision_tower: bool = True
    """Keep the vision encoder frozen (no LoRA there)."""
    freeze_projector: bool = False
    """Keep the vision-to-text projector frozen."""

    def validate(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r: must be positive, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: must be in [0, 1), got {self.dropout}")
        targets = self.target_modules
        names_list = isinstance(targets, list) and all(isinstance(m, str) for m in targets)
        if not (targets == "all-linear" or names_list):
            raise ConfigError("lora.target_modules: 'all-linear' or a list of module names")


@dataclass
class DataConfig:
    train: Any = None
    """Training data: a local file (JSON/JSONL/Parquet, gzip too), a hub dataset name, or a
    list of such entries, each either a string or a mapping with its own ``path``, ``format``,
    ``modality``, ``source``, ``columns``."""
    format: str = "trl"
    """Adapter name for entries that do not set their own (see ``mmdpo data formats``)."""
    eval: Any = None
    """Held-out data, same forms as ``train``; None with eval_fraction > 0 splits train."""
    eval_fraction: float = 0.0
    """Share of the training pairs held out for evaluation when ``eval`` is not given."""
    columns: dict[str, str] | None = None
    """Column mapping for the ``columns`` adapter."""
    modality: str | None = None
    """Override the adapter's modality (text, math, vision)."""
    source: str | None = None
    """Source name of every entry that sets none: calibration and ``tau_good: auto`` work per
    (modality, source) group. Default (None): a row's own ``source`` field, else the file's
    stem, else a Hub dataset's name without owner and split. So ``train: [judge.jsonl,
    rm.jsonl]`` gives the groups ``text/judge`` and ``text/rm``, printed before training; give
    both entries one ``source`` to pool them. A held-out file without one joins the training
    group of its modality when there is only one (docs/data.md, "Calibration groups")."""
    max_length: int = 1024
    """Maximum tokens of prompt + one response; responses are cut first."""
    max_prompt_length: int | None = None
    """Optional cap on prompt tokens (never cuts through image tokens)."""
    skip_invalid: bool = False
    """Drop invalid rows into invalid_rows.jsonl instead of stopping."""
    calibration: str = "none"
    """Score calibration per (modality, source) group (see ``source``): none, zscore, minmax,
    rank."""
    calibration_range: list[float] = field(default_factory=lambda: [0.0, 10.0])
    """Target range of ``minmax`` calibration."""
    limit: int | None = None
    """Use only the first N training pairs (after validation)."""
    shuffle: bool = True
    """Shuffle the training pairs each epoch (seeded)."""

    def validate(self) -> None:
        if self.train is None:
            raise ConfigError("data.train: required (a file, a hub dataset name, or a list)")
        _choice("data.calibration", self.calibration, CALIBRATIONS)
        if self.modality is not None:
            _choice("data.modality", self.modality, ("text", "math", "vision"))
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction: must be in [0, 1), got {self.eval_fraction}")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length: too small ({self.max_length})")
        low_high = self.calibration_range
        if len(low_high) != 2 or low_high[0] >= low_high[1]:
            raise ConfigError("data.calibration_range: [low, high] with low < high")


@dataclass
class LossSettings:
    name: str = "uni_dpo"
    """Loss name (``mmdpo losses`` lists them): uni_dpo, dpo, ipo, hinge, simpo, orpo."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Hyperparameters of the loss (e.g. beta, eta, tau_ref, gamma, nll_lambda, tau_good).
    ``tau_good: auto`` uses the median chosen score of each (modality, source) group."""
    length_normalized: bool | None = None
    """Mean (True) or summed (False) per-token log-probs; None = what the loss declares.
    Setting False for uni_dpo reruns the paper's "without length normalisation" ablation."""

    def validate(self) -> None:
        """The name and every hyperparameter, checked when the config is read (not when the
        first batch reaches the loss): ``loss.kwargs.beta: expected a positive number``."""
        from mmdpo.losses import get_loss  # lazy: it imports torch

        try:
            spec = get_loss(self.name)
        except ValueError as err:
            raise ConfigError(f"loss.name: {err}") from None
        self.kwargs = {key: _number_from_text(value) for key, value in self.kwargs.items()}
        try:
            spec.resolve_kwargs(self.kwargs)
        except ValueError as err:
            raise ConfigError(f"loss.kwargs: {err}") from None
        for key, reason in spec.check_values(self.kwargs).items():
            raise ConfigError(f"loss.kwargs.{key}: {reason}")

    def resolve(self) -> LossSetting:
        """The loss spec, its hyperparameters and mean-or-sum, as train, eval and export use."""
        from mmdpo.losses import resolve_loss

        try:
            return resolve_loss(self.name, self.kwargs, self.length_normalized)
        except ValueError as err:
            raise ConfigError(f"loss: {err}") from None


@dataclass
class ReferenceSettings:
    mode: str = "adapter_off"
    """adapter_off (LoRA switched off, no second copy), model (a separate frozen model),
    precomputed (one pass before training into a cache), none (reference-free losses)."""
    model: str | None = None
    """The separate reference model for ``mode: model`` (default: the policy's base)."""
    quantization: str = "none"
    """Quantization of the separate reference model."""
    cache_dir: str | None = None
    """Where ``precomputed`` keeps its cache (default: <output_dir>/reference_cache)."""

    def validate(self) -> None:
        _choice("reference.mode", self.mode, REFERENCE_MODES)
        _choice("reference.quantization", self.quantization, QUANTIZATION_MODES)


@dataclass
class TrainSettings:
    output_dir: str = "runs/mmdpo"
    """The run folder: checkpoints, metrics.jsonl, plots, config, calibration."""
    learning_rate: float = 5e-6
    """Peak learning rate."""
    epochs: float = 1.0
    """Passes over the training pairs (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Optimizer steps; overrides epochs."""
    batch_size: int = 2
    """Pairs per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    optimizer: str = "adamw"
    """adamw, adamw_8bit or paged_adamw_8bit (bitsandbytes; on CPU, where paging is not
    supported, bitsandbytes warns and runs it unpaged, the same as adamw_8bit)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    scheduler: str = "cosine"
    """cosine, linear or constant, after warmup."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming up linearly."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    seed: int = 42
    """Seed for data order, LoRA init and dropout."""
    mixed_precision: str = "no"
    """Autocast: no, bf16 or fp16 (bf16 works on CPU too)."""
    eval_every: int = 0
    """Evaluate on held-out pairs every N steps (0: only at the end when eval data exists)."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints to keep."""
    log_every: int = 1
    """Write metrics every N steps."""
    max_bad_steps: int = 3
    """Consecutive NaN/inf steps before the run stops (the last good checkpoint stays)."""
    trackers: list[str] = field(default_factory=lambda: ["jsonl"])
    """Metric sinks: jsonl (always), tensorboard, wandb."""
    progress: bool = True
    """Show a progress bar."""
    plots: bool = True
    """Write PNG plots of the curves into <output_dir>/plots at the end."""
    samples: int = 4
    """Held-out prompts (training prompts when there are none) answered greedily at the end
    by the trained model and its base (adapter off), into <output_dir>/samples.jsonl for the
    report; 0: none. Skipped when the weights are sharded (FSDP, ZeRO-3)."""
    report: bool = True
    """Write <output_dir>/report.html (one self-contained page; ``mmdpo report``) at the end."""
    forward_layout: str = "auto"
    """How a micro-batch's pairs meet the model (docs/layouts.md): ``two_row`` (a chosen and a
    rejected row per pair, padded), ``shared_prompt`` (one row ``prompt | chosen | rejected``
    per pair: the prompt and its images computed once), ``packed`` (shared prompts, several
    pairs per row, no padding), or ``auto``: ``packed`` where it is exact for the model
    (attention sdpa, eager or flex; no sliding window), else ``two_row``. Pairs whose rejected
    response has its own images always run as two rows. The log-probs and gradients equal the
    two-row path's to fp32 rounding."""
    layout_row_tokens: int | None = None
    """``packed``: the longest row, in tokens (default: the longest pair of the micro-batch)."""

    def validate(self) -> None:
        _choice("train.forward_layout", self.forward_layout, FORWARD_LAYOUT_SETTINGS)
        if self.layout_row_tokens is not None and self.layout_row_tokens < 1:
            raise ConfigError(
                f"train.layout_row_tokens: must be >= 1, got {self.layout_row_tokens}"
            )
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _choice("train.scheduler", self.scheduler, SCHEDULERS)
        _choice("train.mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        for name in ("batch_size", "grad_accum", "keep_last", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.samples < 0:
            raise ConfigError(f"train.samples: must be >= 0, got {self.samples}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps: must be >= 1, got {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            raise ConfigError(f"train.epochs: must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"train.learning_rate: must be positive, got {self.learning_rate}")
        for tracker in self.trackers:
            _choice("train.trackers", tracker, ("jsonl", "tensorboard", "wandb"))


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossSettings = field(default_factory=LossSettings)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    task: str | None = None
    """The task that produced this config (text, math, vision, demo), for the record."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each section's checks, then the rules that span sections."""
        for section in (self.model, self.lora, self.data, self.loss, self.reference, self.train):
            section.validate()
        if self.model.quantization != "none" and not self.lora.enabled:
            raise ConfigError(
                "model.quantization: a quantized model can only be trained with LoRA "
                "(set lora.enabled=true or model.quantization=none)"
            )
        if self.reference.mode == "adapter_off" and not self.lora.enabled:
            raise ConfigError(
                "reference.mode: adapter_off needs LoRA (lora.enabled=true); "
                "use reference.mode=model or precomputed for full fine-tuning"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(valid)}")


def _number_from_text(value: Any) -> Any:
    """``"1e-3"`` -> 0.001: YAML 1.1 reads exponents without a dot as strings."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _is_instance(value: Any, annotation: Any) -> bool:
    """A light check of YAML values against the dataclass annotations."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown key; valid keys: {', '.join(sorted(fields))}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value or {}, f"{name}.")
            continue
        if annotation is float and isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-5 as a string
            except ValueError:
                pass
        if not _is_instance(value, annotation):
            raise ConfigError(f"{name}: expected {_type_name(annotation)}, got {value!r}")
        kwargs[key] = value
    # Sections validate themselves once the whole Config exists.
    if cls is Config:
        return cls(**kwargs)
    obj = cls.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            setattr(obj, f.name, kwargs[f.name])
        elif f.default is not dataclasses.MISSING:
            setattr(obj, f.name, f.default)
        else:
            setattr(obj, f.name, f.default_factory())  # type: ignore[misc]
    return obj


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-5`` -> (["train", "lr"], 1e-5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.learning_rate=1e-5")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in a nested dict (new sub-dicts are created as needed)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data, "")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> Config:
    """defaults (e.g. a task's recipe) <- YAML file <- ``key=value`` overrides -> Config."""
    data: dict[str, Any] = _deep_merge({}, defaults or {})
    if path is not None:
        file_data = read_yaml(path)
        try:
            data = _deep_merge(data, file_data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
