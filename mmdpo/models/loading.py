"""Load a policy (causal LM or VLM) with its tokenizer or processor, safetensors weights only."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
)

from mmdpo.models.families import image_token_id, image_token_ids, is_vlm_config
from mmdpo.models.quantization import (
    allow_cpu_inference_layout,
    keep_4bit_trainable,
    make_quantization_config,
    resolve_dtype,
)

KINDS = ("auto", "causal_lm", "vlm")
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a loaded policy.

    Attributes:
        name_or_path: what was loaded.
        family: the config's ``model_type`` (``mmdpo.models.families`` lists the VLM ones).
        is_vlm: loaded as an image-text-to-text model with a processor.
        quantization: ``none``, ``8bit`` or ``4bit``.
        dtype: dtype of the weights that are not quantized.
        image_token_id: the token the processor expands into image features, None for text.
        image_token_ids: every image-related special token id (image, video, vision start
            and end); empty for text models.
        pad_token_id: the tokenizer's pad id (its EOS when it has no pad token).
        eos_token_ids: every id that ends generation (tokenizer and generation config).
    """

    name_or_path: str
    family: str
    is_vlm: bool
    quantization: str
    dtype: torch.dtype
    image_token_id: int | None
    image_token_ids: tuple[int, ...]
    pad_token_id: int | None
    eos_token_ids: tuple[int, ...]


def _quiet_int8_cast_warning() -> None:
    """bitsandbytes logs "inputs will be cast to float16" on every 8-bit forward; keep it once.

    prepare_model_for_kbit_training upcasts activations to fp32, so the cast is expected.
    """
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if any(getattr(f, "_mmdpo", False) for f in logger.filters):
        return
    seen: list[bool] = []

    def once(record: logging.LogRecord) -> bool:
        if "will be cast from" not in record.getMessage():
            return True
        first = not seen
        seen.append(True)
        return first

    once._mmdpo = True  # type: ignore[attr-defined]
    logger.addFilter(once)


def require_safetensors(name_or_path: str | os.PathLike) -> None:
    """Refuse a local checkpoint folder that holds pickle weights but no safetensors.

    Pickle files can run arbitrary code when loaded; ``from_pretrained`` is also called with
    ``use_safetensors=True``, so a hub repository without safetensors fails there.
    """
    path = Path(name_or_path)
    if not path.is_dir():
        return
    files = [p.name for p in path.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return
    pickles = sorted(name for name in files if name.endswith(PICKLE_WEIGHT_SUFFIXES))
    found = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weight files"
    raise ValueError(
        f"{str(path)!r} holds {found}. mmdpo loads safetensors weights only, because pickle "
        "files can run code when loaded. Convert once from a source you trust, e.g. "
        "`AutoModel.from_pretrained(path).save_pretrained(out, safe_serialization=True)`."
    )


def _default_device_map(quantization: BitsAndBytesConfig | None) -> Any:
    if quantization is None:
        return None  # load on CPU; the training loop moves the model
    if torch.cuda.is_available():
        return {"": torch.cuda.current_device()}  # one full copy per process (DDP)
    return "cpu"  # bitsandbytes on CPU needs an explicit device map


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _model_info(
    name_or_path: str,
    model: PreTrainedModel,
    tokenizer: Any,
    *,
    is_vlm: bool,
    quantization: str,
    dtype: torch.dtype,
) -> ModelInfo:
    config = model.config
    eos = list(_token_ids(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    for value in _token_ids(getattr(generation_config, "eos_token_id", None)):
        if value not in eos:
            eos.append(value)
    return ModelInfo(
        name_or_path=str(name_or_path),
        family=config.model_type,
        is_vlm=is_vlm,
        quantization=quantization,
        dtype=dtype,
        image_token_id=image_token_id(config) if is_vlm else None,
        image_token_ids=image_token_ids(config) if is_vlm else (),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_ids=tuple(eos),
    )


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant activation checkpointing (LoRA needs no input-grad hook with it)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def processing_from_pretrained(
    name_or_path: str | os.PathLike, *, is_vlm: bool, trust_remote_code: bool = False
) -> Any:
    """The processor (VLM) or tokenizer (text) of a model, without its weights; a tokenizer
    without a pad token gets its EOS token as pad token."""
    if is_vlm:
        processing = AutoProcessor.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
        tokenizer = processing.tokenizer
    else:
        processing = tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processing


def _quantization(
    quantization: str | BitsAndBytesConfig | None,
    quant_type: str,
    double_quant: bool,
    torch_dtype: torch.dtype,
) -> tuple[str, BitsAndBytesConfig | None]:
    """(``none`` / ``8bit`` / ``4bit``, the bitsandbytes config or None)."""
    if isinstance(quantization, BitsAndBytesConfig):
        return ("8bit" if quantization.load_in_8bit else "4bit"), quantization
    mode = quantization or "none"
    return mode, make_quantization_config(
        mode, quant_type=quant_type, double_quant=double_quant, compute_dtype=torch_dtype
    )


def _is_vlm(name_or_path: str | os.PathLike, config: Any, kind: str) -> bool:
    """``kind``, or for ``auto`` whether the config has a vision config."""
    if kind == "vlm" and not is_vlm_config(config):
        raise ValueError(
            f"{str(name_or_path)!r} ({config.model_type}) has no vision_config; "
            "it is not a vision-language model (use kind: causal_lm or auto)"
        )
    return is_vlm_config(config) if kind == "auto" else kind == "vlm"


def _from_pretrained(
    name_or_path: str | os.PathLike, model_class: Any, load_kwargs: dict[str, Any]
) -> PreTrainedModel:
    try:
        return model_class.from_pretrained(name_or_path, **load_kwargs)
    except OSError as error:
        if "safetensors" not in str(error):
            raise
        raise OSError(
            f"{str(name_or_path)!r}: no safetensors weights found ({error}). mmdpo "
            "loads safetensors only, because pickle files can run code when loaded."
        ) from error


def _after_load(
    model: PreTrainedModel,
    mode: str,
    bnb_config: BitsAndBytesConfig | None,
    *,
    prepare_for_training: bool,
    gradient_checkpointing: bool,
    cpu_inference_layout: bool,
) -> PreTrainedModel:
    """Quantized layers kept exact (or inference-fast), k-bit training prep, checkpointing."""
    if mode == "8bit":
        _quiet_int8_cast_warning()
    if mode == "4bit":
        if cpu_inference_layout:
            allow_cpu_inference_layout(model)
        else:
            keep_4bit_trainable(model)
    if bnb_config is not None and prepare_for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def load_policy(
    model_name_or_path: str | os.PathLike,
    *,
    kind: str = "auto",
    quantization: str | BitsAndBytesConfig | None = "none",
    quant_type: str = "nf4",
    double_quant: bool = True,
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    device_map: Any = None,
    attn_implementation: str | None = None,
    prepare_for_training: bool = True,
    gradient_checkpointing: bool = False,
    cpu_inference_layout: bool = False,
    model_config: Any = None,
    processing: Any = None,
) -> tuple[PreTrainedModel, Any, ModelInfo]:
    """Load a model and its tokenizer (text) or processor (VLM).

    Args:
        model_name_or_path: hub id or local folder; its weights must be safetensors.
        kind: ``causal_lm`` (AutoModelForCausalLM + AutoTokenizer), ``vlm``
            (AutoModelForImageTextToText + AutoProcessor), or ``auto``: ``vlm`` when the
            config has a ``vision_config``.
        quantization: ``none``, ``8bit``, ``4bit`` (with ``quant_type``, ``double_quant``;
            4-bit matmuls run in ``dtype``) or a ready ``BitsAndBytesConfig``.
        dtype: dtype of the weights that are not quantized.
        trust_remote_code: run model code shipped with the checkpoint; off by default.
        device_map: passed to ``from_pretrained``; by default None without quantization,
            and for a quantized model the current CUDA device, or ``"cpu"`` without CUDA.
        attn_implementation: ``sdpa``, ``eager``, ... or None for the transformers default.
        prepare_for_training: for a quantized model, peft's ``prepare_model_for_kbit_training``
            (freezes the base, upcasts the other layers to fp32); False for inference.
        gradient_checkpointing: enable non-reentrant activation checkpointing.
        cpu_inference_layout: for a 4-bit model in an inference-only process, let
            bitsandbytes repack weights into its faster bfloat16 CPU layout. Off by default:
            every 4-bit layer keeps the exact layout that has a backward, on every CPU
            (:func:`mmdpo.models.quantization.keep_4bit_trainable`).
        model_config, processing: the config and tokenizer or processor when the caller has
            them already (a run reads each once); else read from the folder.

    Returns:
        ``(model, tokenizer or processor, ModelInfo)``. A tokenizer without a pad token gets
        its EOS token as pad token.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")
    if cpu_inference_layout and prepare_for_training:
        raise ValueError("cpu_inference_layout is for inference only (prepare_for_training=False)")
    require_safetensors(model_name_or_path)  # before any file of the folder is read
    torch_dtype = resolve_dtype(dtype)
    mode, bnb_config = _quantization(quantization, quant_type, double_quant, torch_dtype)
    config = model_config or AutoConfig.from_pretrained(
        model_name_or_path, trust_remote_code=trust_remote_code
    )
    is_vlm = _is_vlm(model_name_or_path, config, kind)
    load_kwargs: dict[str, Any] = {
        # a copy: from_pretrained records the quantization and more on the config it is given
        "config": copy.deepcopy(config),
        "dtype": torch_dtype,
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
        "device_map": device_map if device_map is not None else _default_device_map(bnb_config),
        **({"quantization_config": bnb_config} if bnb_config is not None else {}),
        **({"attn_implementation": attn_implementation} if attn_implementation else {}),
    }
    model_class = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = _from_pretrained(model_name_or_path, model_class, load_kwargs)
    if processing is None:
        processing = processing_from_pretrained(
            model_name_or_path, is_vlm=is_vlm, trust_remote_code=trust_remote_code
        )
    model = _after_load(
        model, mode, bnb_config, prepare_for_training=prepare_for_training,
        gradient_checkpointing=gradient_checkpointing, cpu_inference_layout=cpu_inference_layout,
    )  # fmt: skip
    tokenizer = processing.tokenizer if is_vlm else processing
    name = str(model_name_or_path)
    info = _model_info(name, model, tokenizer, is_vlm=is_vlm, quantization=mode, dtype=torch_dtype)
    return model, processing, info
