"""QLoRA is exact on every CPU: 4-bit LoRA gradients equal float32 on the dequantized weights.

bitsandbytes 0.49/0.50 repacks a ``Linear4bit`` weight into an inference-only layout on CPUs
with AVX512-BF16 the first time the module runs in eval mode on an input without grad; after
that no gradient flows through the base weights. Every test here first runs such an eval-mode
no-grad forward (policy and adapter-off reference), then compares the LoRA gradients with a
float32 twin that holds the same dequantized weights. On a CPU with AVX512-BF16 they fail if
the engine lets the repack happen; on any CPU they check that 4-bit training computes the
float32 gradient of the quantized model.
"""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from bitsandbytes.functional import _convert_weight_packed_for_cpu, dequantize_4bit
from PIL import Image

from mmdpo.models.loading import load_policy
from mmdpo.models.lora import apply_lora
from mmdpo.models.quantization import (
    allow_cpu_inference_layout,
    assert_4bit_trainable,
    keep_4bit_trainable,
    packed_layout_fits,
)
from mmdpo.reference import reference_context
from mmdpo.tiny import VLM_FAMILIES

FAMILIES = ("llama", *VLM_FAMILIES)


def model_inputs(family, processor):
    """One short prompt; for a VLM one 56 x 56 image in front of it."""
    if family == "llama":
        ids = processor("What is two plus three? The answer is five.", return_tensors="pt")
        return dict(ids)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a red cat"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True) + "a cat"
    image = Image.new("RGB", (56, 56), color=(200, 30, 30))
    image.paste((20, 20, 220), (0, 0, 28, 28))
    return dict(processor(text=[prompt], images=[image], return_tensors="pt"))


def set_lora_weights(policy, seed=0):
    """Nonzero LoRA A and B, so the base weights of later layers carry gradient to earlier ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(policy.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def dequantized_twin(model_dir, quantized_policy):
    """A float32 model whose every 4-bit layer holds the dequantized 4-bit weight, same LoRA."""
    twin, _, _ = load_policy(model_dir, quantization="none", prepare_for_training=False)
    quantized = 0
    for name, module in quantized_policy.base_model.model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = dequantize_4bit(module.weight.data, module.weight.quant_state)
            with torch.no_grad():
                twin.get_submodule(name.removesuffix(".base_layer")).weight.copy_(weight)
            quantized += 1
    assert quantized > 0
    twin = apply_lora(twin, r=4, alpha=8, dropout=0.0)
    twin.load_state_dict(
        {n: p for n, p in quantized_policy.state_dict().items() if "lora_" in n}, strict=False
    )
    return twin


def lora_grads(policy, inputs):
    policy.train()
    policy.zero_grad()
    logits = policy(**inputs).logits.float()
    # A loss that depends on every position, as sequence log-probs do.
    logits.log_softmax(-1)[..., :50].sum().backward()
    return {n: p.grad.clone() for n, p in policy.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("family", FAMILIES)
def test_4bit_lora_gradients_equal_float32_after_an_eval_forward(sharp_model_dir, family):
    model_dir = sharp_model_dir(family)
    model, processor, _ = load_policy(model_dir, quantization="4bit", dtype="float32")
    policy = apply_lora(model, r=4, alpha=8, dropout=0.0)
    set_lora_weights(policy)
    inputs = model_inputs(family, processor)

    # What a reference, precompute or eval pass does: eval mode, no grad, adapter on and off.
    policy.eval()
    with torch.no_grad():
        policy(**inputs)
        with reference_context(policy) as base:
            base(**inputs)
    assert_4bit_trainable(policy)

    grads = lora_grads(policy, inputs)
    expected = lora_grads(dequantized_twin(model_dir, policy), inputs)
    assert grads.keys() == expected.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    # The earliest layer's LoRA gradient reaches it only through every later base weight.
    first = [n for n in grads if ".layers.0." in n and "lora_A" in n]
    assert first and all(grads[n].abs().sum() > 0 for n in first)


@pytest.mark.parametrize("family", FAMILIES)
def test_4bit_lora_weights_move_after_a_step(sharp_model_dir, family):
    model, processor, _ = load_policy(sharp_model_dir(family), quantization="4bit")
    policy = apply_lora(model, r=4, alpha=8, dropout=0.0)
    inputs = model_inputs(family, processor)
    policy.eval()
    with torch.no_grad():
        policy(**inputs)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # two steps: B moves first, then A (B starts at zero)
        lora_grads(policy, inputs)
        optimizer.step()
    after = dict(policy.named_parameters())
    assert before and all(not torch.equal(after[n], before[n]) for n in before)


def test_keep_4bit_trainable_undoes_a_repack_on_any_cpu(tiny_llama_dir):
    """Pack one layer as bitsandbytes would (pure torch, any CPU); the engine restores it."""
    model, _, _ = load_policy(tiny_llama_dir, quantization="4bit")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    layer = next(m for m in layers if packed_layout_fits(m))
    exact = layer.weight.data.clone()
    x = torch.randn(3, layer.in_features)
    expected = layer(x)
    layer.weight.data, state = _convert_weight_packed_for_cpu(
        layer.weight.data, layer.weight.quant_state
    )
    layer.weight.quant_state = layer.quant_state = state
    layer.support_avx512bf16_for_cpu = True
    with pytest.raises(RuntimeError, match="inference-only CPU layout"):
        assert_4bit_trainable(model)
    assert keep_4bit_trainable(model) == len(layers)
    assert_4bit_trainable(model)
    assert torch.equal(layer.weight.data, exact)
    x.requires_grad_(True)
    out = layer(x)
    # The repack stored the block scales in bfloat16; undoing it cannot bring back their
    # float32 digits, which is why the engine keeps layers from ever being repacked.
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["llama", "llava", "qwen2_vl"])
def test_inference_layout_only_where_it_fits(sharp_model_dir, family):
    """Inference-only loads may take the fast packed layout; shapes it cannot hold stay exact."""
    model_dir = sharp_model_dir(family)
    fast, processor, _ = load_policy(
        model_dir, quantization="4bit", prepare_for_training=False, cpu_inference_layout=True
    )
    exact, _, _ = load_policy(model_dir, quantization="4bit", prepare_for_training=False)
    inputs = model_inputs(family, processor)
    with torch.no_grad():
        fast_logits = fast.eval()(**inputs).logits
        exact_logits = exact.eval()(**inputs).logits
    # The packed kernel computes in bfloat16; the exact layout in float32.
    torch.testing.assert_close(fast_logits, exact_logits, rtol=0.05, atol=0.05)
    for module in fast.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not packed_layout_fits(module):
            assert not module.support_avx512bf16_for_cpu
    with pytest.raises(ValueError, match="inference only"):
        load_policy(model_dir, quantization="4bit", cpu_inference_layout=True)


def test_inference_layout_is_off_without_avx512_bf16(tiny_llama_dir, monkeypatch):
    import bitsandbytes.functional as bnb_functional

    monkeypatch.setattr(bnb_functional, "has_avx512bf16", lambda: False)
    model, _, _ = load_policy(tiny_llama_dir, quantization="4bit", prepare_for_training=False)
    assert allow_cpu_inference_layout(model) == 0
