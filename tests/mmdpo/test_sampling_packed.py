"""Packed MKL weights for the sampler's decode steps (``mmdpo.sampling.packed``).

The layers must compute what ``F.linear`` computes (compared here on inputs of many rows,
the ones that take the packed kernel), only plain float32 ``nn.Linear`` layers are touched,
their forward comes back afterwards, and a kept packed copy never serves a weight that
changed or is another tensor. The sampler must give the same tokens with and without
packing on batches wide enough to use it (the other sampling tests decode a few rows, where
the layers keep ``F.linear``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmdpo.sampling import packed, sample
from mmdpo.tiny import VLM_FAMILIES
from tests.mmdpo.test_sampling import (
    PROMPTS,
    image_prompts,
    load_model,
    reference_generate,
    user_prompt,
)

pytestmark = pytest.mark.skipif(
    not packed.packing_works(), reason="this PyTorch has no MKL packed GEMM"
)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(40, 24)
        self.up = torch.nn.Linear(24, 48)
        self.down = torch.nn.Linear(48, 24, bias=False)
        self.head = torch.nn.Linear(24, 40, bias=False)
        self.head.weight = self.embed.weight  # tied, as many LMs' heads
        self.bf16 = torch.nn.Linear(24, 24).to(torch.bfloat16)

        class Wrapped(torch.nn.Linear):  # stands for bitsandbytes' and PEFT's subclasses
            pass

        self.wrapped = Wrapped(24, 24)

    def forward(self, x):
        h = self.down(F.silu(self.up(x)))
        return self.head(h + self.wrapped(h)), self.bf16(h.to(torch.bfloat16))


def test_packed_layers_compute_what_f_linear_computes_and_give_their_forward_back():
    torch.manual_seed(0)
    model = Tiny()
    packs = packed.PackedLinears(model)
    assert {id(m) for m in packs.modules} == {id(model.up), id(model.down), id(model.head)}
    for rows in (1, packed.MIN_ROWS - 1, packed.MIN_ROWS, 37, 130):
        x = torch.randn(rows, 24)
        with torch.inference_mode():
            plain = model(x)
            with packs.using():
                fast = model(x)
        torch.testing.assert_close(fast[0], plain[0], rtol=1e-6, atol=1e-6)
        assert torch.equal(fast[1], plain[1])
        if rows < packed.MIN_ROWS:  # few rows: F.linear itself
            assert torch.equal(fast[0], plain[0])
    # with a gradient wanted, F.linear (MKL's packed op is for inference)
    x = torch.randn(packed.MIN_ROWS, 24, requires_grad=True)
    with packs.using():
        model(x)[0].sum().backward()
    assert x.grad is not None and model.up.weight.grad is not None
    packs.release()
    assert packs.modules == []
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_kept_packs_serve_only_the_same_unchanged_weight(monkeypatch):
    """The next run reuses the packed copy of a weight it saw; a weight changed in place
    (an optimizer step), or another tensor at the same address with the same version, is
    packed again."""
    packed.drop_packed_weights()
    calls = []
    real = packed._pack
    monkeypatch.setattr(packed, "_pack", lambda weight: calls.append(weight) or real(weight))
    layer = torch.nn.Linear(8, 12)
    x = torch.randn(packed.MIN_ROWS + 2, 8)

    def run():
        packs = packed.PackedLinears(layer)
        with torch.inference_mode(), packs.using():
            out = layer(x)
        packs.release()
        return out

    run()
    run()
    assert len(calls) == 1, "an unchanged weight is packed once"
    with torch.no_grad():
        layer.weight.mul_(2)
    torch.testing.assert_close(run(), F.linear(x, layer.weight, layer.bias))
    assert len(calls) == 2
    layer.weight = torch.nn.Parameter(layer.weight.detach())  # same storage and version
    run()
    assert len(calls) == 3
    packed.drop_packed_weights()
    run()
    assert len(calls) == 4


def test_models_over_the_limit_or_off_cpu_are_left_alone():
    model = Tiny()
    assert packed.PackedLinears(model, max_bytes=100).modules == []
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert packed.PackedLinears(model.to(torch.float64)).modules == []


def wide_prompts(info):
    """Enough prompts that a decode step has MIN_ROWS rows and more."""
    if info.is_vlm:
        return [*image_prompts(6), user_prompt("Name three colors.")]
    return [user_prompt(text) for text in PROMPTS]


@pytest.mark.parametrize("family", ["llama", "qwen2", *VLM_FAMILIES])
def test_sampling_with_packed_weights_gives_the_same_tokens(sharp_model_dir, family):
    """Seeded samples (n = 4: 20-28 rows per step) and greedy answers with packed weights are
    the tokens without; greedy ones are also today's path's (transformers' generate)."""
    model, processing, info = load_model(sharp_model_dir(family))
    if next(model.parameters()).device.type != "cpu":
        pytest.skip("packing is for CPU")
    prompts = wide_prompts(info)
    options = {"max_new_tokens": 12, "is_vlm": info.is_vlm, "batch_size": 32}
    sampled = {"n": 4, "greedy": False, "temperature": 0.9, "seed": 3}
    on = sample(model, processing, prompts, **options, **sampled)
    off = sample(model, processing, prompts, **options, **sampled, pack_weights=False)
    assert on.stats.packed_linears > 0 and off.stats.packed_linears == 0
    assert on.stats.decode_rows / on.stats.decode_steps >= packed.MIN_ROWS
    ids_on = [[c.token_ids for c in samples] for samples in on.completions]
    assert ids_on == [[c.token_ids for c in samples] for samples in off.completions]
    assert len({tuple(ids) for samples in ids_on for ids in samples}) > len(prompts)
    # greedy: repeat the prompts so that the batch is wide enough
    many = prompts * -(-packed.MIN_ROWS // len(prompts))
    greedy = sample(model, processing, many, **options)
    assert greedy.stats.packed_linears > 0
    _, ids = reference_generate(
        model, processing, many, max_new_tokens=12, batch_size=len(many), is_vlm=info.is_vlm
    )
    assert [c[0].token_ids for c in greedy.completions] == ids
    assert all("forward" not in m.__dict__ for m in model.modules())
    narrow = sample(model, processing, many, **{**options, "batch_size": packed.MIN_ROWS - 1})
    assert narrow.stats.packed_linears == 0, "no batch wide enough: nothing packed"
    assert [c[0].token_ids for c in narrow.completions] == ids
