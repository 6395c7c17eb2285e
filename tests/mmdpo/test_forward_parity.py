"""The engine's batched forward against one plain, unpadded forward per (prompt, response).

Sharp-attention tiny models (``sharp_model_dir``), fp32: a one-token position, mask or
image-placement error changes a sequence log-prob far above the 1e-5 tolerance. Every family:
the two text families and the four VLM families, image-contrastive pairs included.
"""

from __future__ import annotations

import pytest
import torch

from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.forward import concatenated_forward
from mmdpo.models.loading import load_policy
from mmdpo.tiny import CAUSAL_LM_FAMILIES, VLM_FAMILIES, random_image
from mmdpo.types import PreferenceSample
from tests.oracles import plain_response_logp

TOLERANCE = 1e-5
# Plus a relative 1e-6: the engine sums in fp32, whose spacing near -184 (a 28-token response)
# is 1.5e-5; a one-token position or mask error moves a sum by whole units.
RELATIVE = 1e-6


def _user(text: str, n_images: int = 0) -> list[dict]:
    if not n_images:
        return [{"role": "user", "content": text}]
    parts = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def text_samples() -> list[PreferenceSample]:
    """Three pairs of different prompt and response lengths (the batch pads all but one)."""
    return [
        PreferenceSample("short", _user("Hi"), "Hello there, friend.", "No."),
        PreferenceSample(
            "long",
            _user("Tell me a long story about a cat and a dog who live near a river."),
            "Once upon a time a cat and a dog lived by the river.",
            "The end.",
        ),
        PreferenceSample("system", [{"role": "system", "content": "Be brief."}, *_user("2+3?")],
                         "5", "It is five, I think, or maybe six."),
    ]  # fmt: skip


def vision_samples() -> list[PreferenceSample]:
    """Images of different sizes, two images in one prompt, a text pair, a contrastive pair."""
    return [
        PreferenceSample("one-image", _user("What is in the image?", 1), "A red circle.",
                         "A blue square on a green field.", images=[random_image(1)],
                         modality="vision"),
        PreferenceSample("two-images", _user("Describe both pictures.", 2), "Two shapes.",
                         "Nothing.", images=[random_image(2, size=(112, 84)), random_image(3)],
                         modality="vision"),
        PreferenceSample("text", _user("Say hi."), "Hi!", "No, I will not say that."),
        PreferenceSample("contrast", _user("Is there a circle?", 1), "Yes, at the top.",
                         "Yes, at the top.", images=[random_image(4, size=(84, 84))],
                         rejected_images=[random_image(5, size=(112, 112))], modality="vision"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sharp(sharp_model_dir):
    """(model, processing, is_vlm) of each family's sharp model in fp32, loaded once."""
    loaded = {}

    def get(family):
        if family not in loaded:
            model, processing, info = load_policy(
                sharp_model_dir(family), dtype="float32", prepare_for_training=False
            )
            loaded[family] = (model.eval(), processing, info.is_vlm)
        return loaded[family]

    return get


def _render(processing, messages) -> str:
    return processing.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _plain(model, processing, pair_prompt_ids, messages, response_ids, images):
    logp, prompt_ids = plain_response_logp(
        model, processing, _render(processing, messages), response_ids, images
    )
    assert prompt_ids == pair_prompt_ids, "the oracle must score the tokens the engine scored"
    return logp


def batched_and_plain(model, processing, is_vlm, samples):
    """Engine sums (chosen, rejected) of one padded batch, and the plain sums of each row."""
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=is_vlm)
    pairs = [transform(sample) for sample in samples]
    pad = transform.tokenizer.pad_token_id
    batch = PreferenceCollator(pad)(pairs)
    assert batch.attention_mask.sum(1).unique().numel() > 1, "rows of different lengths"
    with torch.no_grad():
        out = concatenated_forward(model, batch)
    plain_chosen, plain_rejected = [], []
    for sample, pair in zip(samples, pairs, strict=True):
        plain_chosen.append(
            _plain(model, processing, pair.prompt_ids, sample.prompt, pair.chosen_ids,
                   sample.images)
        )  # fmt: skip
        own = sample.rejected_images is not None
        plain_rejected.append(
            _plain(model, processing,
                   pair.rejected_prompt_ids if own else pair.prompt_ids, sample.prompt,
                   pair.rejected_ids, sample.rejected_images if own else sample.images)
        )  # fmt: skip
    engine = (out.chosen_sum.double(), out.rejected_sum.double())
    plain = (torch.tensor(plain_chosen).double(), torch.tensor(plain_rejected).double())
    return engine, plain


@pytest.mark.parametrize("family", [*CAUSAL_LM_FAMILIES, *VLM_FAMILIES])
def test_batched_forward_equals_one_plain_row_per_response(sharp, family):
    model, processing, is_vlm = sharp(family)
    samples = vision_samples() if is_vlm else text_samples()
    (chosen, rejected), (plain_chosen, plain_rejected) = batched_and_plain(
        model, processing, is_vlm, samples
    )
    close = {"atol": TOLERANCE, "rtol": RELATIVE}
    assert torch.allclose(chosen, plain_chosen, **close), chosen - plain_chosen
    assert torch.allclose(rejected, plain_rejected, **close), rejected - plain_rejected


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_contrastive_rejected_logps_come_from_the_rejected_images(sharp, family):
    """The rejected response of an image-contrastive pair is scored on its own images: equal
    to a plain forward with them, and different from one with the prompt's images."""
    model, processing, _ = sharp(family)
    contrast = vision_samples()[-1]
    (_, rejected), (_, plain_rejected) = batched_and_plain(
        model, processing, True, [contrast, vision_samples()[0]]
    )
    assert abs(float(rejected[0] - plain_rejected[0])) < TOLERANCE
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=True)
    pair = transform(contrast)
    with_prompt_images = _plain(
        model, processing, pair.prompt_ids, contrast.prompt, pair.rejected_ids, contrast.images
    )
    assert abs(float(rejected[0]) - with_prompt_images) > 100 * TOLERANCE, (
        "the rejected images changed nothing: the test could not tell them apart"
    )
