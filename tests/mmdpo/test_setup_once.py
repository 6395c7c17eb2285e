"""A training run reads its model's config once and loads its processor once."""

import sys
from collections import Counter

import pytest
from transformers import AutoConfig, AutoProcessor, AutoTokenizer

from mmdpo.tiny import random_image
from mmdpo.trainer import train
from mmdpo.types import PreferenceSample
from tests.fixtures import arithmetic_pairs, make_config


@pytest.fixture
def reads(monkeypatch):
    """Calls made by mmdpo's own modules (not transformers' internal ones), by name."""
    counts = Counter()
    for cls, name in ((AutoConfig, "config"), (AutoProcessor, "processor"),
                      (AutoTokenizer, "tokenizer")):  # fmt: skip
        original = cls.from_pretrained

        def counting(*args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("mmdpo"):
                counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", counting)
    return counts


def test_a_vision_run_reads_config_and_processor_once(tiny_vlm_dir, tmp_path, reads):
    samples = [
        PreferenceSample(f"v{i}", "What is there?", "Shapes.", "A cat.",
                         images=[random_image(i)], modality="vision")
        for i in range(2)
    ]  # fmt: skip
    train(make_config(tiny_vlm_dir("qwen2_vl"), tmp_path / "run", "train.max_steps=1"), samples)
    assert reads == {"config": 1, "processor": 1}


def test_a_text_run_reads_config_and_tokenizer_once(tiny_llama_dir, tmp_path, reads):
    train(make_config(tiny_llama_dir, tmp_path / "run", "train.max_steps=1"), arithmetic_pairs(2))
    assert reads == {"config": 1, "tokenizer": 1}
