"""Reusable session-scoped fixtures: the tiny tokenizer and tiny models saved to disk.

Register them for the whole suite with `pytest_plugins = ["tests.fixtures"]` in the root
`tests/conftest.py`. Everything is built offline from configs; the tokenizer comes from the
on-disk cache of `mmdpo.tiny.build_tokenizer` after its first build.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from mmdpo.tiny import build_tokenizer, save_tiny_causal_lm, save_tiny_vlm


@pytest.fixture(scope="session")
def session_tokenizer():
    """The tiny tokenizer, shared by the whole session: never mutate it (use `tokenizer`)."""
    return build_tokenizer()


@pytest.fixture
def tokenizer(session_tokenizer):
    """A private copy of the tiny tokenizer, free to mutate (padding side, template, ...)."""
    return copy.deepcopy(session_tokenizer)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, session_tokenizer) -> Path:
    """A folder holding a tiny Llama and its tokenizer, loadable with the Auto classes."""
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), "llama", session_tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, session_tokenizer) -> Path:
    """A folder holding a tiny Qwen2 and its tokenizer, loadable with the Auto classes."""
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", session_tokenizer)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory, session_tokenizer) -> Callable[[str], Path]:
    """`tiny_vlm_dir(family) -> Path`: a saved tiny VLM and processor, built once per family.

    Families: "qwen2_vl", "qwen2_5_vl", "llava", "idefics3". Load with
    `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained`.
    """
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            directory = tmp_path_factory.mktemp(f"tiny-{family}")
            built[family] = save_tiny_vlm(directory, family, session_tokenizer)
        return built[family]

    return get
