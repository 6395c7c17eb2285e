"""Reusable session-scoped fixtures: the tiny tokenizer and tiny models saved to disk.

Register them for the whole suite with `pytest_plugins = ["tests.fixtures"]` in the root
`tests/conftest.py`. Everything is built offline from configs; the tokenizer comes from the
on-disk cache of `mmdpo.tiny.build_tokenizer` after its first build.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from mmdpo.config import load_config
from mmdpo.tiny import build_tokenizer, save_tiny_causal_lm, save_tiny_vlm
from mmdpo.types import PreferenceSample


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


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory, session_tokenizer) -> Callable[[str], Path]:
    """`sharp_model_dir(family) -> Path`: a saved tiny model with sharp attention.

    Families: "llama", "qwen2" and the VLM families. Query and key projections are scaled
    (`mmdpo.tiny.sharpen_attention`) so that a one-token position or mask error changes
    log-probs far above fp32 noise; use these for numerical parity tests.
    """
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            directory = tmp_path_factory.mktemp(f"sharp-{family}")
            if family in ("llama", "qwen2"):
                save_tiny_causal_lm(directory, family, session_tokenizer, sharp=True)
            else:
                save_tiny_vlm(directory, family, session_tokenizer, sharp=True)
            built[family] = directory
        return built[family]

    return get


# --- plain helpers for engine tests -------------------------------------------------------


def arithmetic_pairs(n, seed=0, with_scores=True, prefix="p"):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        out.append(
            PreferenceSample(
                id=f"{prefix}{i}",
                prompt=f"What is {a} plus {b}?",
                chosen=f"The answer is {a + b}.",
                rejected=f"The answer is {a + b + 1}.",
                score_chosen=rng.uniform(5, 9) if with_scores else None,
                score_rejected=rng.uniform(1, 5) if with_scores else None,
                source="arith",
            )
        )
    return out


def write_pairs(path: Path, n: int = 8) -> Path:
    """``n`` scored TRL-format arithmetic pairs (chosen right, rejected off by one) as JSONL."""
    rows = [
        {
            "prompt": f"What is {i} plus {i}?",
            "chosen": f"It is {2 * i}.",
            "rejected": f"It is {2 * i + 1}.",
            "score_chosen": 8.0,
            "score_rejected": 3.0,
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(model_dir, out_dir, *extra):
    return load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            "data.train=in-memory",
            f"train.output_dir={out_dir}",
            "model.dtype=float32",
            "train.batch_size=2",
            "train.max_steps=3",
            "train.learning_rate=1e-3",
            "train.warmup_ratio=0",
            "train.progress=false",
            "lora.r=4",
            "lora.alpha=8",
            "lora.dropout=0.0",
            "train.plots=false",
            "train.samples=0",  # generation at the end costs seconds; the report tests ask for it
            *extra,
        ],
    )


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``folder``, read back with tensorboard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }
