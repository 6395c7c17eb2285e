"""Image-contrastive pairs (``rejected_images``) train on every VLM family.

The forward's numbers are checked against plain forwards in ``test_forward_parity.py``; here
the whole run: tokenizing both image sets, dropping and restoring their tensors, the
precomputed reference (its cache key covers both sets) and one optimizer step.
"""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from mmdpo.tiny import VLM_FAMILIES, random_image
from mmdpo.trainer import train
from mmdpo.types import PreferenceSample
from tests.fixtures import make_config


def contrastive_pairs(n: int) -> list[PreferenceSample]:
    """Same answer, different images: the rejected image lacks what the answer describes."""
    return [
        PreferenceSample(
            id=f"c{i}",
            prompt="Describe the image.",
            chosen="Some shapes on a plain background.",
            rejected="Some shapes on a plain background.",
            images=[random_image(i)],
            rejected_images=[random_image(100 + i, size=(84, 84))],
            score_chosen=7.0,
            score_rejected=2.0,
            modality="vision",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_contrastive_pairs_train(tiny_vlm_dir, tmp_path, family):
    config = make_config(
        tiny_vlm_dir(family),
        tmp_path / "run",
        "train.max_steps=1",
        "reference.mode=precomputed",
        "train.learning_rate=1e-2",
    )
    result = train(config, contrastive_pairs(2))
    assert result.steps == 1 and result.skipped_steps == 0
    metrics = result.train_metrics
    assert math.isfinite(metrics["loss"])
    # Identical texts: only the images differ, so a non-zero log-prob gap comes from them.
    assert metrics["logps/chosen"] != metrics["logps/rejected"]
    weights = load_file(str(result.final_checkpoint / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
