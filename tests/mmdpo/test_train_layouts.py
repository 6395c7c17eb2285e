"""train.forward_layout: the trainer's steps are the same under every layout, and auto picks one.

The layouts' own parity (log-probs and gradients of one batch, every family) is tested in
test_layouts.py / test_layout_forward.py; here the whole training loop runs three steps under
each layout (the policy, the adapter-off or precomputed reference and the optimizer all go
through the run's layout) and must end where the two-row run ends.
"""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from mmdpo.layout_forward import PairForward, choose_forward
from mmdpo.tiny import make_image
from mmdpo.trainer import train
from mmdpo.types import PreferenceSample
from tests.fixtures import arithmetic_pairs, make_config

LAYOUTS = ("two_row", "shared_prompt", "packed")


def skewed_pairs(n=8, seed=0):
    """Pairs of very different prompt and response lengths, so packing and padding matter."""
    rng = random.Random(seed)
    out = []
    for i, pair in enumerate(arithmetic_pairs(n, seed=seed)):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        filler = " and then some more words" * rng.randint(0, 12)
        out.append(
            PreferenceSample(
                id=f"s{i}",
                prompt=f"What is {a} plus {b}?{filler}",
                chosen=pair.chosen + " Indeed." * rng.randint(0, 6),
                rejected=pair.rejected,
                score_chosen=pair.score_chosen,
                score_rejected=pair.score_rejected,
                source="arith",
            )
        )
    return out


def run(model_dir, out, layout, samples, *extra):
    config = make_config(
        model_dir, out, f"train.forward_layout={layout}", "train.batch_size=4", *extra
    )
    result = train(config, samples)
    losses = [
        json.loads(line)["loss"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    return losses, load_file(str(result.final_checkpoint / "adapter_model.safetensors"))


@pytest.mark.parametrize("reference", ["adapter_off", "precomputed"])
def test_three_steps_end_where_two_rows_end(sharp_model_dir, tmp_path, reference, capsys):
    samples = skewed_pairs()
    results = {
        layout: run(
            sharp_model_dir("llama"),
            tmp_path / layout,
            layout,
            samples,
            f"reference.mode={reference}",
        )  # fmt: skip
        for layout in LAYOUTS
    }
    printed = capsys.readouterr().out
    assert "forward layout: packed (shared prompts, several pairs per row" in printed
    base_losses, base_adapter = results["two_row"]
    for layout in ("shared_prompt", "packed"):
        losses, adapter = results[layout]
        torch.testing.assert_close(losses, base_losses, rtol=1e-4, atol=1e-5)
        assert adapter.keys() == base_adapter.keys()
        for name, weight in adapter.items():
            torch.testing.assert_close(weight, base_adapter[name], rtol=1e-3, atol=1e-5, msg=name)
    # The adapters moved (a run that trains nothing would also be "equal").
    assert any(w.abs().sum() > 0 for n, w in base_adapter.items() if "lora_B" in n)


def test_a_vlm_trains_the_same_packed(sharp_model_dir, tmp_path):
    images = [make_image("white", (56 + 28 * (i % 2), 56), [("circle", "red")]) for i in range(4)]
    samples = [
        PreferenceSample(
            id=f"v{i}",
            prompt="What is in the picture?" + " Look closely." * i,
            chosen="A red circle." + " Yes." * i,
            rejected="A blue square.",
            images=[images[i]],
            score_chosen=8.0,
            score_rejected=2.0,
            modality="vision",
        )
        for i in range(4)
    ]
    model_dir = sharp_model_dir("qwen2_vl")
    two_row = run(model_dir, tmp_path / "two", "two_row", samples, "train.max_steps=2")
    packed = run(model_dir, tmp_path / "packed", "auto", samples, "train.max_steps=2")
    torch.testing.assert_close(packed[0], two_row[0], rtol=1e-4, atol=1e-5)
    for name, weight in packed[1].items():
        torch.testing.assert_close(weight, two_row[1][name], rtol=1e-3, atol=1e-5, msg=name)


def test_auto_falls_back_where_a_layout_is_not_exact(tiny_llama_dir):
    from mmdpo.models.loading import load_policy

    model, _, _ = load_policy(tiny_llama_dir)
    forward, reason = choose_forward("auto", model)
    assert forward == PairForward("packed") and reason is None
    model.config.sliding_window = 4  # as a sliding-window model's config says
    model.config.use_sliding_window = True
    forward, reason = choose_forward("auto", model)
    assert forward.layout == "two_row" and "sliding-window" in reason
    with pytest.raises(ValueError, match="train.forward_layout=shared_prompt: .*sliding"):
        choose_forward("shared_prompt", model)


def test_an_unknown_layout_is_a_config_error(tiny_llama_dir, tmp_path):
    from mmdpo.config import ConfigError

    with pytest.raises(ConfigError, match="train.forward_layout"):
        make_config(tiny_llama_dir, tmp_path / "r", "train.forward_layout=diagonal")
