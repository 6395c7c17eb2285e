"""Image paths that differ by VLM family, tested on every family (``mmdpo.tiny.VLM_FAMILIES``):
two images in one prompt, the precomputed reference with images, 4-bit training.

Numbers are compared on tiny models with sharp attention (``sharp_model_dir``), where a
one-token position, mask or image-placement error moves log-probs far above fp32 noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import pytest
import torch
from safetensors.torch import load_file

from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.pipeline import drop_image_tensors, restore_images, tokenize_samples
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.forward import concatenated_forward
from mmdpo.images import open_image
from mmdpo.reference_cache import pair_key
from mmdpo.tiny import VLM_FAMILIES, random_image
from mmdpo.types import PreferenceSample
from tests.fixtures import make_config

# Two images of different sizes (the processors resize, tile or patch them differently).
FIRST, SECOND, OTHER = random_image(11), random_image(12, size=(84, 56)), random_image(13)


def two_image_sample(images=(FIRST, SECOND), sample_id="two"):
    return PreferenceSample(
        id=sample_id,
        prompt=[
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": "Left picture. "},
                    {"type": "image"},
                    {"type": "text", "text": "Right picture. Which shapes differ?"},
                ],
            }
        ],
        chosen="The left one has a circle.",
        rejected="They are the same.",
        images=list(images),
        modality="vision",
    )


def load_sharp(sharp_model_dir, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    directory = sharp_model_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32)
    return model.eval(), AutoProcessor.from_pretrained(directory)


def plain_response_logps(model, processor, transform, sample, response):
    """Summed log-probs of ``response`` after the prompt, from one unpadded row that the
    processor builds from the whole rendered text and the model scores in its own forward
    (pixel values in, the model encodes the images itself): none of the engine's code."""
    prompt_text = transform.render(sample.prompt, add_generation_prompt=True)
    full_text = prompt_text + transform.response_text(sample.prompt, prompt_text, response)
    images = [open_image(image) for image in sample.images]
    inputs = processor(text=[full_text], images=[images], return_tensors="pt")
    prompt_len = len(processor(text=[prompt_text], images=[images])["input_ids"][0])
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0].float()
    ids = inputs["input_ids"][0]
    eos = transform.eos_token_id
    end = prompt_len + ids[prompt_len:].tolist().index(eos) + 1  # through the turn's EOS
    logps = logits[prompt_len - 1 : end - 1].log_softmax(-1)
    return logps.gather(-1, ids[prompt_len:end, None]).sum(), ids[:end].tolist()


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_two_images_in_one_prompt_match_the_plain_forward(sharp_model_dir, family):
    model, processor = load_sharp(sharp_model_dir, family)
    transform = PairTransform(processor, TransformSettings(4096), is_vlm=True)
    sample = two_image_sample()
    pair = transform(sample)
    # Each image's tokens are in the prompt, as many as the image has alone.
    image_token = model.config.image_token_id
    one_image_prompt = [{"role": "user", "content": sample.prompt[0]["content"][:2]}]
    alone = [
        transform(dataclasses.replace(sample, images=[image], prompt=one_image_prompt))
        for image in (FIRST, SECOND)
    ]
    per_image = [p.prompt_ids.count(image_token) for p in alone]
    assert all(n > 0 for n in per_image)
    assert pair.prompt_ids.count(image_token) == sum(per_image)

    batch = PreferenceCollator(processor.tokenizer.pad_token_id)([pair])
    with torch.no_grad():
        engine = concatenated_forward(model, batch)
    for response, engine_sum, engine_ids in (
        (sample.chosen, engine.chosen_sum, pair.chosen_ids),
        (sample.rejected, engine.rejected_sum, pair.rejected_ids),
    ):
        plain, plain_ids = plain_response_logps(model, processor, transform, sample, response)
        assert plain_ids == pair.prompt_ids + engine_ids  # the same tokens as the engine's
        assert torch.allclose(engine_sum[0], plain, atol=1e-4), (engine_sum, plain)

    # Both images count, in their order: another second image, or the two swapped, move the
    # log-probs by more than 10x the tolerance above (measured: 0.03 to 0.46; Idefics3's swap
    # 0.007, its images differing least after its resizing).
    for images in ((FIRST, OTHER), (SECOND, FIRST)):
        changed = transform(two_image_sample(images))
        with torch.no_grad():
            moved = concatenated_forward(model, PreferenceCollator(0)([changed])).chosen_sum
        assert (moved - engine.chosen_sum).abs().item() > 1e-3


class _OneProcess:
    """What the reference's precompute pass needs of an ``Accelerator``, one CPU process."""

    device = torch.device("cpu")
    is_main_process = True

    @staticmethod
    def wait_for_everyone():
        return None

    @staticmethod
    def autocast():
        return contextlib.nullcontext()


def reference_samples():
    def vision(sample_id, images, chosen="A red circle.", rejected="A blue cat."):
        return PreferenceSample(
            id=sample_id,
            prompt="What is in the picture?",
            chosen=chosen,
            rejected=rejected,
            images=list(images),
            modality="vision",
        )

    return [
        vision("first", [FIRST]),
        vision("same-text-other-image", [OTHER]),  # only the image differs from "first"
        two_image_sample(sample_id="two-images"),
        vision("wide", [SECOND], chosen="Shapes.", rejected="Nothing at all, it is empty."),
        PreferenceSample(id="text", prompt="Say hi.", chosen="Hi!", rejected="Go away."),
    ]


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_precomputed_reference_with_images_equals_adapter_off(sharp_model_dir, tmp_path, family):
    """The cache, filled in batches of 2 from pairs whose pixels were dropped (as training
    does), gives each pair the adapter-off log-probs of its own images, in any batch order."""
    from mmdpo.losses import get_loss
    from mmdpo.reference import ReferenceModel, build_reference, precompute_reference
    from mmdpo.setup import load_model_for_training, load_processing

    config = make_config(sharp_model_dir(family), tmp_path / "run", "reference.mode=precomputed")
    processing, is_vlm = load_processing(config)
    assert is_vlm
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=True)
    result = tokenize_samples(reference_samples(), transform, progress=False)
    assert not result.problems
    pairs = result.pairs
    keys = [pair_key(pair, "reference") for pair in pairs]
    assert keys[0] != keys[1]  # the images are part of the key
    drop_image_tensors(pairs)
    assert [pair_key(pair, "reference") for pair in pairs] == keys
    collate = PreferenceCollator(
        processing.tokenizer.pad_token_id,
        restore=functools.partial(restore_images, transform=transform),
    )
    model = load_model_for_training(config)
    with torch.no_grad():  # a non-zero adapter, so that adapter-off differs from the policy
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)
    spec = get_loss("uni_dpo")
    precomputed = precompute_reference(config, spec, model, pairs, collate, tmp_path, _OneProcess)
    cached = build_reference(config, spec, model, _OneProcess, precomputed)
    live = ReferenceModel("adapter_off", policy=model)
    for order in (pairs, pairs[::-1]):
        batch = collate(order)
        expected, from_cache = live.logps(batch), cached.logps(batch)
        assert torch.allclose(from_cache.chosen_sum, expected.chosen_sum, atol=1e-4)
        assert torch.allclose(from_cache.rejected_sum, expected.rejected_sum, atol=1e-4)
        assert torch.equal(from_cache.chosen_tokens, expected.chosen_tokens)
    batch = collate(pairs)
    from_cache = cached.logps(batch)
    # Same text, other image: another reference value (the cache holds each pair's own).
    assert (from_cache.chosen_sum[0] - from_cache.chosen_sum[1]).abs() > 1e-2
    with torch.no_grad():
        policy = concatenated_forward(model, batch)
    assert not torch.allclose(policy.chosen_sum, from_cache.chosen_sum, atol=1e-3)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_4bit_vlm_trains_a_few_steps_on_image_pairs(tiny_vlm_dir, tmp_path, family):
    from mmdpo.trainer import train

    samples = [
        PreferenceSample(
            id=f"v{i}",
            prompt="What shapes are there?",
            chosen="Some shapes.",
            rejected="A cat.",
            images=[random_image(i)],
            score_chosen=7.0,
            score_rejected=2.0,
            modality="vision",
        )
        for i in range(3)
    ] + [two_image_sample(sample_id="two")]
    config = make_config(
        tiny_vlm_dir(family), tmp_path / "run", "model.quantization=4bit", "train.max_steps=2"
    )
    result = train(config, samples)
    assert result.steps == 2 and result.skipped_steps == 0
    assert all(torch.isfinite(torch.tensor(v)) for v in result.train_metrics.values())
    weights = load_file(str(result.final_checkpoint / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values()), "LoRA B stayed zero"
