"""The shared-prompt and packed forwards give the two-row path's log-probs and LoRA gradients.

Every family runs on its sharp-attention tiny model (``sharp_model_dir``), where a one-token
position or mask error moves the log-probs far above fp32 noise; the negative tests at the end
show that it does.
"""

import pytest
import torch

from mmdpo import layout_attention, layouts
from mmdpo import layout_forward as layout_forward_module
from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.forward import concatenated_forward
from mmdpo.layout_attention import LAYOUT_ATTENTION, text_config, use_layout_attention
from mmdpo.layout_forward import forward_pairs, layout_forward, unsupported_reason
from mmdpo.layouts import REJECTED, build_layout
from mmdpo.models.loading import load_policy
from mmdpo.models.lora import apply_lora, module_part
from mmdpo.reference import adapter_disabled
from mmdpo.tiny import VLM_FAMILIES, random_image
from mmdpo.types import PreferenceSample
from tests.mmdpo import test_forward_parity as forward_parity

FAMILIES = ("llama", "qwen2", *VLM_FAMILIES)
# "packed" with its default row size is covered by test_rejected_images_pair_runs_as_two_rows
# and tests/mmdpo/test_layouts.py; packing every pair in one row is the harder case.
LAYOUTS = ("shared_prompt", "packed_one_row")


def samples(vision: bool) -> list[PreferenceSample]:
    """Pairs of skewed lengths; for a VLM one image, two images, and a text-only pair."""
    modality = "vision" if vision else "text"
    return [
        PreferenceSample(
            id="long",
            prompt="What is in the image? Say what you see, then count the shapes twice.",
            chosen="A red circle on a plain ground, and one more circle next to it.",
            rejected="Blue.",
            images=[random_image(1)] if vision else [],
            modality=modality,
        ),
        PreferenceSample(
            id="two",
            prompt="Describe both.",
            chosen="Two shapes.",
            rejected="Nothing at all, there is no image here to describe.",
            images=[random_image(2), random_image(3)] if vision else [],
            modality=modality,
        ),
        PreferenceSample(id="text", prompt="Say hi.", chosen="Hi!", rejected="No."),
    ]


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, sharp_model_dir):
    family = request.param
    model, processing, _ = load_policy(sharp_model_dir(family), quantization="none")
    policy = apply_lora(model, r=4, alpha=8, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a nonzero adapter, so that policy and reference differ
        for name, param in sorted(policy.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    vision = family in VLM_FAMILIES
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=vision)
    pairs = [transform(s) for s in samples(vision)]
    batch = PreferenceCollator(processing_pad_id(processing))(pairs)
    return family, policy, batch


@pytest.fixture(params=["sdpa", LAYOUT_ATTENTION])
def attention(request, setup):
    """The family's policy under SDPA with the additive float 4D mask, or under ``mmdpo_layout``."""
    config = text_config(setup[1].get_base_model())
    before = config._attn_implementation
    if request.param == LAYOUT_ATTENTION:
        assert use_layout_attention(setup[1].get_base_model()) == "sdpa"
    yield request.param
    config._attn_implementation_internal = before


def processing_pad_id(processing):
    tokenizer = getattr(processing, "tokenizer", processing)
    return tokenizer.pad_token_id


def objective(logps, weights):
    """Sums and per-token means of both responses, weighted per pair, as the losses use them."""
    return (weights[0] * logps.chosen(False) - weights[1] * logps.rejected(False)).sum() + (
        weights[2] * logps.chosen(True) - weights[3] * logps.rejected(True)
    ).sum()


def policy_pass(policy, batch, forward):
    policy.train()
    policy.zero_grad(set_to_none=True)
    logps = forward(policy, batch)
    weights = torch.linspace(0.5, 2.0, 4 * batch.num_pairs).view(4, -1)
    objective(logps, weights).backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return logps.detach(), grads


def assert_close_per_tensor(actual, expected, name):
    """Largest difference within 1e-4 of the tensor's largest entry: fp32 sums in another
    order differ by ~1e-6 relative; a mask or position error moves gradients by percents."""
    scale = expected.abs().max().item()
    difference = (actual - expected).abs().max().item()
    assert scale > 0 and difference <= 1e-4 * scale + 1e-7, f"{name}: {difference} of {scale}"


def assert_same_logps(actual, expected):
    """Per response: sums and means within 1e-5, plus one fp32 ulp of a sum (sums of 25 tokens
    reach -130, where one ulp is 1.5e-5; the per-token log-probs differ by ~1e-7)."""
    for average in (False, True):
        for side in ("chosen", "rejected"):
            torch.testing.assert_close(
                getattr(actual, side)(average),
                getattr(expected, side)(average),
                rtol=2**-23,
                atol=1e-5,
                msg=lambda m, side=side, average=average: f"{side} mean={average}: {m}",
            )
    assert torch.equal(actual.chosen_tokens, expected.chosen_tokens)
    assert torch.equal(actual.rejected_tokens, expected.rejected_tokens)


def layout_for(batch, layout):
    if layout == "packed_one_row":  # every pair in one row
        return build_layout(batch, "packed", row_tokens=int(batch.attention_mask.sum()))
    return build_layout(batch, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_policy_logps_and_lora_gradients_equal_two_rows(setup, attention, layout):
    family, policy, batch = setup
    built = layout_for(batch, layout)
    assert built.shared.all()
    if layout == "packed_one_row":
        assert built.input_ids.shape[0] == 1
    expected, expected_grads = policy_pass(policy, batch, concatenated_forward)
    actual, grads = policy_pass(policy, batch, lambda m, b: layout_forward(m, b, built))
    assert_same_logps(actual, expected)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert_close_per_tensor(grad, expected_grads[name], name)
    if family in VLM_FAMILIES:  # the projector's LoRA is trained through the merged features
        projector = [n for n in grads if module_part(n) == "projector"]
        assert projector and all(grads[n].abs().max() > 0 for n in projector)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_and_precompute_passes_equal_two_rows(setup, attention, layout):
    _, policy, batch = setup
    built = layout_for(batch, layout)
    with adapter_disabled(policy):
        expected = concatenated_forward(policy, batch)
        actual = layout_forward(policy, batch, built)
    assert_same_logps(actual, expected)
    policy.eval()  # the precompute pass: eval mode, no grad, adapter on
    with torch.no_grad():
        precomputed = layout_forward(policy, batch, built)
        assert_same_logps(precomputed, concatenated_forward(policy, batch))
    # Policy and reference differ, so the adapter really was switched off above.
    assert (actual.chosen_sum - precomputed.chosen_sum).abs().max() > 1e-3


def test_output_layer_runs_only_at_predicting_positions(setup):
    _, policy, batch = setup
    built = build_layout(batch, "shared_prompt")
    rows = []
    head = policy.get_output_embeddings()
    hook = head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape))
    try:
        with torch.no_grad():
            layout_forward(policy, batch, built)
    finally:
        hook.remove()
    n_targets = int(batch.loss_mask[:, 1:].sum())
    # One logits row per predicting position: one fewer than the targets per shared pair.
    assert rows == [torch.Size([n_targets - batch.num_pairs, head.in_features])]


def test_eager_attention_takes_the_additive_mask(sharp_model_dir):
    model, tokenizer, _ = load_policy(
        sharp_model_dir("llama"), quantization="none", attn_implementation="eager"
    )
    transform = PairTransform(tokenizer, TransformSettings(4096))
    batch = PreferenceCollator(tokenizer.pad_token_id)([transform(s) for s in samples(False)])
    model.eval()
    with torch.no_grad():
        assert_same_logps(
            layout_forward(model, batch, "packed"), concatenated_forward(model, batch)
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_batches_with_contrastive_pairs_equal_two_rows(sharp_model_dir, family):
    """The batches of test_forward_parity (images of several sizes, two images in a prompt, a
    text pair, an image-contrastive pair): the contrastive pair falls back to two blocks, the
    others share; both layouts and both attention paths equal the two-row forward."""
    model, processing, _ = load_policy(sharp_model_dir(family), quantization="none")
    vision = family in VLM_FAMILIES
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=vision)
    parity_samples = forward_parity.vision_samples() if vision else forward_parity.text_samples()
    batch = PreferenceCollator(processing_pad_id(processing))(
        [transform(s) for s in parity_samples]
    )
    shared = [s.rejected_images is None for s in parity_samples]
    model.eval()
    with torch.no_grad():
        expected = concatenated_forward(model, batch)
        for attention in ("sdpa", LAYOUT_ATTENTION):
            if attention == LAYOUT_ATTENTION:
                use_layout_attention(model)
            for layout in ("shared_prompt", "packed"):
                built = build_layout(batch, layout)
                assert built.shared.tolist() == shared
                assert_same_logps(layout_forward(model, batch, built), expected)


# --- the tests above catch a one-token error ---------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_a_position_off_by_one_is_caught(sharp_model_dir, family, monkeypatch):
    _, policy, batch = _eval_setup(sharp_model_dir, family)
    original = layout_forward_module.layout_position_ids

    def shifted(model, batch, layout, rows=None):
        positions = original(model, batch, layout, rows).clone()
        positions[..., layout.branches == REJECTED] += 1
        return positions

    with torch.no_grad():
        expected = concatenated_forward(policy, batch)
        monkeypatch.setattr(layout_forward_module, "layout_position_ids", shifted)
        wrong = layout_forward(policy, batch, "shared_prompt")
    assert (wrong.rejected_sum - expected.rejected_sum).abs().max() > 1e-2
    torch.testing.assert_close(wrong.chosen_sum, expected.chosen_sum, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_a_rejected_token_seeing_the_chosen_one_is_caught(sharp_model_dir, family, monkeypatch):
    _, policy, batch = _eval_setup(sharp_model_dir, family)
    original = layouts.allowed_attention

    def leaky(layout):
        allowed = original(layout).clone()
        # each rejected token also sees the last chosen token (one key more)
        for row in range(allowed.shape[0]):
            chosen = (layout.branches[row] == layouts.CHOSEN).nonzero()
            allowed[row, layout.branches[row] == REJECTED, chosen[-1]] = True
        return allowed

    with torch.no_grad():
        expected = concatenated_forward(policy, batch)
        monkeypatch.setattr(layouts, "allowed_attention", leaky)
        wrong = layout_forward(policy, batch, "shared_prompt")
    assert (wrong.rejected_sum - expected.rejected_sum).abs().max() > 1e-2


def _eval_setup(sharp_model_dir, family, **load):
    model, processing, _ = load_policy(sharp_model_dir(family), quantization="none", **load)
    vision = family in VLM_FAMILIES
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=vision)
    batch = PreferenceCollator(processing_pad_id(processing))(
        [transform(s) for s in samples(vision)]
    )
    return family, model.eval(), batch


def test_a_rejected_token_seeing_one_more_key_in_block_attention_is_caught(
    sharp_model_dir, monkeypatch
):
    """The block-wise path: a rejected query that also sees the next rejected key."""
    _, policy, batch = _eval_setup(sharp_model_dir, "llama")
    use_layout_attention(policy)
    original = layout_attention._attend

    def one_ahead(query, key, value, *, dropout, scaling, mask=None):
        if mask is not None:
            mask = mask | torch.ones_like(mask).tril(diagonal=mask.shape[1] - mask.shape[0] + 1)
        return original(query, key, value, dropout=dropout, scaling=scaling, mask=mask)

    with torch.no_grad():
        expected = concatenated_forward(policy, batch)
        assert_same_logps(layout_forward(policy, batch, "packed"), expected)
        monkeypatch.setattr(layout_attention, "_attend", one_ahead)
        wrong = layout_forward(policy, batch, "packed")
    assert (wrong.rejected_sum - expected.rejected_sum).abs().max() > 1e-2


@pytest.mark.slow  # transformers compiles the two-row path's flex mask (~15 s here)
@pytest.mark.parametrize("family", ["llama", "llava", "idefics3"])
# Qwen2-VL and Qwen2.5-VL refuse flex attention in transformers 5.24
def test_flex_attention_block_mask_equals_two_rows(sharp_model_dir, family, monkeypatch):
    """The ``BlockMask`` path, on flex attention's eager (unfused) CPU implementation: torch
    2.14 has no flex backward on CPU, and inductor's CPU flex template fails to compile on
    one of these shapes; on GPU transformers runs the compiled kernel with the same mask."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as transformers_flex

    def eager(query, key, value, training=False, **kwargs):
        return flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(transformers_flex, "compile_friendly_flex_attention", eager)
    _, model, batch = _eval_setup(sharp_model_dir, family, attn_implementation="flex_attention")
    with torch.no_grad():
        expected = concatenated_forward(model, batch)
        assert_same_logps(layout_forward(model, batch, "packed"), expected)
        assert_same_logps(layout_forward(model, batch, "shared_prompt"), expected)


@pytest.mark.parametrize(
    ("family", "quantization"),
    [
        ("llama", "4bit"),
        ("qwen2_vl", "none"),
        pytest.param("idefics3", "none", marks=pytest.mark.slow),
    ],
)
def test_gradient_checkpointing_and_4bit_keep_the_gradients(sharp_model_dir, family, quantization):
    """Checkpointed layers rerun in the backward with the layout (it is their mask input);
    a 4-bit policy takes the same path."""
    model, processing, _ = load_policy(
        sharp_model_dir(family), quantization=quantization, dtype="float32"
    )
    policy = apply_lora(model, r=4, alpha=8, dropout=0.0, gradient_checkpointing=True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in sorted(policy.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    vision = family in VLM_FAMILIES
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=vision)
    batch = PreferenceCollator(processing_pad_id(processing))(
        [transform(s) for s in samples(vision)]
    )
    assert policy.get_base_model().is_gradient_checkpointing
    expected, expected_grads = policy_pass(policy, batch, concatenated_forward)
    for attention in ("sdpa", LAYOUT_ATTENTION):
        if attention == LAYOUT_ATTENTION:
            use_layout_attention(policy.get_base_model())
        actual, grads = policy_pass(policy, batch, lambda m, b: layout_forward(m, b, "packed"))
        assert_same_logps(actual, expected)
        assert grads.keys() == expected_grads.keys()
        for name, grad in grads.items():
            assert_close_per_tensor(grad, expected_grads[name], f"{attention} {name}")


def test_kernels_without_a_4d_mask_and_sliding_windows_are_refused(sharp_model_dir):
    _, model, batch = _eval_setup(sharp_model_dir, "qwen2")
    config = text_config(model)
    assert "sliding_attention" not in config.layer_types  # Qwen2's default: full attention
    assert unsupported_reason(model) is None
    with torch.no_grad():
        assert_same_logps(forward_pairs(model, batch, "shared_prompt"), forward_pairs(model, batch))
    with pytest.raises(ValueError, match="two_row, shared_prompt, packed"):
        forward_pairs(model, batch, "shared")
    config._attn_implementation_internal = "flash_attention_2"
    assert "flash_attention_2" in unsupported_reason(model)
    with pytest.raises(ValueError, match="need attention sdpa, eager or flex_attention"):
        layout_forward(model, batch)
    config._attn_implementation_internal = "sdpa"
    config.layer_types = ["sliding_attention"] * len(config.layer_types)
    with pytest.raises(ValueError, match="sliding-window"):
        layout_forward(model, batch)


def test_layout_attention_leaves_ordinary_forwards_and_generation_alone(sharp_model_dir):
    """A model switched to ``mmdpo_layout`` runs the two-row forward (padded rows) and greedy
    generation (with a cache) exactly as under SDPA."""
    _, model, batch = _eval_setup(sharp_model_dir, "llama")
    prompt = batch.input_ids[:2, :6]
    with torch.no_grad():
        expected = concatenated_forward(model, batch)
        expected_text = model.generate(prompt, max_new_tokens=6, do_sample=False)
        assert use_layout_attention(model) == "sdpa"
        assert_same_logps(concatenated_forward(model, batch), expected)
        assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), expected_text)
