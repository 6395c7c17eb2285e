"""The adapter-off reference reuses the policy's image work, and a step's numbers do not change.

``image_sharing`` decides per run: the features themselves when the adapter reaches neither the
vision tower nor the projector, the tower's states (the projector run again, adapter off) when
it reaches the projector only and the family can run its projector alone, else nothing. Every
VLM family on its sharp-attention tiny model, with a nonzero adapter (so that policy and
reference differ), the two-row and the shared-prompt layouts: loss, reference log-probs and
every LoRA gradient equal the step in which the reference encodes its own images, while the
vision tower runs once per step instead of twice. The last test shows the comparison catches
features reused where the projector differs.
"""

from __future__ import annotations

import pytest
import torch

from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.layout_forward import PairForward
from mmdpo.losses import get_loss
from mmdpo.models.families import family_of
from mmdpo.models.loading import load_policy
from mmdpo.models.lora import apply_lora, module_part
from mmdpo.objective import compute_objective
from mmdpo.reference import ReferenceModel, image_sharing
from mmdpo.tiny import VLM_FAMILIES, random_image
from mmdpo.types import PreferenceSample
from tests.mmdpo.test_layout_forward import assert_close_per_tensor, processing_pad_id

# What each family reuses with LoRA on the projector (the default); every family reuses the
# features when the projector is frozen too.
WITH_PROJECTOR_LORA = {
    "qwen2_vl": "tower",
    "qwen2_5_vl": "tower",
    "llava": "tower",
    "idefics3": "tower",
}


def _samples() -> list[PreferenceSample]:
    """One image, two images, a text pair, and a pair whose rejected side has its own image."""
    return [
        PreferenceSample("one", "What is in the image?", "A red circle.", "Blue squares.",
                         images=[random_image(1)], modality="vision"),
        PreferenceSample("two", "Describe both.", "Two shapes.", "Nothing at all here.",
                         images=[random_image(2), random_image(3, size=(84, 112))],
                         modality="vision"),
        PreferenceSample("text", "Say hi.", "Hi!", "No."),
        PreferenceSample("contrast", "Is there a circle?", "Yes.", "Yes.",
                         images=[random_image(4)], rejected_images=[random_image(5)],
                         modality="vision"),
    ]  # fmt: skip


def _policy(sharp_model_dir, family: str, freeze_projector: bool):
    model, processing, _ = load_policy(sharp_model_dir(family), quantization="none")
    policy = apply_lora(model, r=4, alpha=8, dropout=0.0, freeze_projector=freeze_projector)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a nonzero adapter, so that policy and reference differ
        for name, param in sorted(policy.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=True)
    batch = PreferenceCollator(processing_pad_id(processing))([transform(s) for s in _samples()])
    return policy, batch


def _tower_calls(policy) -> list[int]:
    """A counter of the vision tower's forwards (its top module, hooked)."""
    calls = [0]
    name = min(
        (n for n, _ in policy.named_modules() if n and module_part(n) == "vision_tower"), key=len
    )

    def count(*_):
        calls[0] += 1

    policy.get_submodule(name).register_forward_hook(count)
    return calls


def _step(policy, batch, layout: str, shares: str | None):
    """One DPO step's loss, reference log-probs and LoRA gradients."""
    forward = PairForward(layout)
    spec = get_loss("dpo")
    reference = ReferenceModel("adapter_off", policy=policy, forward=forward, shares_images=shares)
    policy.train()
    policy.zero_grad(set_to_none=True)
    result = compute_objective(policy, batch, spec, {}, reference, average=True, forward=forward)
    result.loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return result.loss.detach(), result.reference, grads


@pytest.mark.parametrize("layout", ["two_row", "shared_prompt"])
@pytest.mark.parametrize("freeze_projector", [False, True], ids=["projector-lora", "frozen"])
@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_shared_image_work_gives_the_same_step(sharp_model_dir, family, freeze_projector, layout):
    policy, batch = _policy(sharp_model_dir, family, freeze_projector)
    shares, why = image_sharing(policy)
    assert shares == ("features" if freeze_projector else WITH_PROJECTOR_LORA[family]), why
    calls = _tower_calls(policy)
    loss, ref, grads = _step(policy, batch, layout, shares)
    once = calls[0]
    loss_own, ref_own, grads_own = _step(policy, batch, layout, None)
    assert once == (1 if shares else 2) * 2  # prompt images, the rejected sides' own images
    assert calls[0] - once == 4, "the reference encodes its own images again"

    torch.testing.assert_close(loss, loss_own, rtol=1e-6, atol=1e-7)
    for side in ("chosen_sum", "rejected_sum"):
        torch.testing.assert_close(getattr(ref, side), getattr(ref_own, side), rtol=1e-6, atol=1e-5)
    assert (
        grads.keys() == grads_own.keys()
        and any(module_part(n) == "projector" for n in grads) is not freeze_projector
    )
    for name, grad in grads_own.items():
        assert_close_per_tensor(grads[name], grad, name)


def test_features_reused_past_a_projector_adapter_are_caught(sharp_model_dir):
    """The check above is not vacuous: handing the reference the policy's features although
    the projector has an adapter moves its log-probs well past the tolerance."""
    policy, batch = _policy(sharp_model_dir, "llava", freeze_projector=False)
    assert image_sharing(policy)[0] == "tower"
    _, wrong, _ = _step(policy, batch, "two_row", "features")
    _, right, _ = _step(policy, batch, "two_row", None)
    assert (wrong.chosen_sum - right.chosen_sum).abs().max() > 1e-2


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_the_projector_alone_gives_the_encoders_features(sharp_model_dir, family):
    """``VLMFamily.project`` on the states of one encode equals that encode's features, image
    by image; for Qwen2.5-VL on images whose windowed patch order is not the image order
    (an image of 2 x 2 attention windows), which the merged tokens must be put back from."""
    model, processor, _ = load_policy(sharp_model_dir(family), quantization="none")
    images = [random_image(6, size=(224, 224)), random_image(7)]
    options = {}
    if family == "qwen2_5_vl":  # up to 16 x 16 patches: 8 x 8 merged tokens, 2 x 2 windows
        options["size"] = {"longest_edge": 224 * 224, "shortest_edge": 56 * 56}
    if family == "idefics3":  # images per sample
        images = [[image] for image in images]
    inputs = dict(processor.image_processor(images=images, return_tensors="pt", **options))
    inputs = {key: value for key, value in inputs.items() if torch.is_tensor(value)}
    if family == "idefics3":  # the engine's layout: one row per image (tile)
        inputs = {key: value.flatten(0, 1) for key, value in inputs.items()}
    vlm = family_of(model)
    with torch.no_grad():
        features, encoded = vlm.encode_with_output(model, inputs)
        projected = vlm.project(model, encoded, inputs)
    assert len(projected) == len(features) >= len(images)  # Idefics3: one per tile
    for mine, theirs in zip(projected, features, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    if family == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        visual = model.model.visual
        window_index, _ = get_vision_window_index(
            inputs["image_grid_thw"], visual.spatial_merge_size, visual.window_size,
            visual.patch_size,
        )  # fmt: skip
        assert not torch.equal(window_index, torch.arange(len(window_index)))
