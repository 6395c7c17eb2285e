"""The table of VLM families: one entry per tiny family, and a clear error for the others."""

import pytest
import torch

from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.models.families import FAMILIES, UnknownFamilyError, family_of, get_family, image_count
from mmdpo.tiny import VLM_FAMILIES, random_image, tiny_vlm_config_and_processor
from mmdpo.types import PreferenceSample


def test_every_tiny_family_has_an_entry_and_every_entry_a_tiny_model():
    assert set(FAMILIES) == set(VLM_FAMILIES)
    assert all(name == family.name for name, family in FAMILIES.items())


def test_an_unknown_family_is_an_error_that_lists_the_known_ones():
    with pytest.raises(
        UnknownFamilyError, match="'mystery'.*qwen2_vl, qwen2_5_vl, llava, idefics3"
    ):
        get_family("mystery")


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_entries_read_their_family_config(family, session_tokenizer):
    config, processor = tiny_vlm_config_and_processor(family, session_tokenizer)
    entry = family_of(config)
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert entry.name == family and entry.image_token_id(config) == image_token
    assert entry.image_token_ids(config)[0] == image_token


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_image_count_is_one_per_encoded_feature(family, session_tokenizer):
    """The collator's count (which pair owns each feature) equals the encoder's output count."""
    from mmdpo.forward import encode_images
    from mmdpo.tiny import tiny_vlm

    model, processor = tiny_vlm(family, session_tokenizer)
    transform = PairTransform(processor, TransformSettings(4096), is_vlm=True)
    sample = PreferenceSample(
        "two", "Describe.", "Shapes.", "No.", images=[random_image(1), random_image(2, (84, 56))]
    )
    pair = transform(sample)
    batch = PreferenceCollator(session_tokenizer.pad_token_id)([pair])
    with torch.no_grad():
        features = encode_images(model.eval(), batch.image_inputs)
    assert image_count(pair.image_inputs) == len(features) == len(batch.image_pairs)


def test_images_for_a_family_without_an_entry_are_refused_before_loading(
    tiny_vlm_dir, tmp_path, monkeypatch
):
    from mmdpo.losses import get_loss
    from mmdpo.setup import SetupError, check_run
    from tests.fixtures import make_config

    monkeypatch.delitem(FAMILIES, "llava")
    config = make_config(tiny_vlm_dir("llava"), tmp_path / "run")
    sample = PreferenceSample("v", "What?", "A.", "B.", images=[random_image(0)])
    with pytest.raises(SetupError, match="'llava': supported families are qwen2_vl, qwen2_5_vl"):
        check_run(config, get_loss("uni_dpo"), [sample])
    check_run(config, get_loss("uni_dpo"), [PreferenceSample("t", "What?", "A.", "B.")])
