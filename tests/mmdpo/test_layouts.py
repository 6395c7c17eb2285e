"""The shared-prompt and packed layouts, checked by hand on small batches (no model)."""

import pytest
import torch

from mmdpo.data.collate import PreferenceCollator
from mmdpo.layouts import (
    CHOSEN,
    PROMPT,
    REJECTED,
    allowed_attention,
    attention_mask_4d,
    build_layout,
)
from mmdpo.logprobs import rows_target_logps
from mmdpo.types import TokenizedPair

PAD = 0


def pair(name, prompt, chosen, rejected, **extra):
    return TokenizedPair(
        id=name, prompt_ids=prompt, chosen_ids=chosen, rejected_ids=rejected, **extra
    )


def collate(*pairs):
    return PreferenceCollator(PAD)(list(pairs))


def test_shared_prompt_row_positions_and_mask():
    """Pair: prompt [11 12 13], chosen [21 22], rejected [31 32 33].

    Row: 11 12 13 21 22 31 32 33, columns (= position ids) 0 1 2 3 4 3 4 5.
    Rejected token 31 (layout 5) sees 11 12 13 and itself, not 21 22.
    Targets in two-row order: 21 22 (predicted at layout 2, 3), 31 32 33 (at 2, 5, 6): the
    last prompt token (layout 2) predicts both first tokens.
    """
    batch = collate(pair("a", [11, 12, 13], [21, 22], [31, 32, 33]))
    layout = build_layout(batch, "shared_prompt")
    assert layout.input_ids.tolist() == [[11, 12, 13, 21, 22, 31, 32, 33]]
    assert layout.columns.tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]
    assert layout.branches.tolist() == [[PROMPT] * 3 + [CHOSEN] * 2 + [REJECTED] * 3]
    allowed = allowed_attention(layout)[0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 1, 0],
        [1, 1, 1, 0, 0, 1, 1, 1],
    ]
    assert layout.keep.nonzero()[:, 1].tolist() == [2, 3, 5, 6]
    kept = [2, 3, 5, 6]
    assert [kept[i] for i in layout.target_logits.tolist()] == [2, 3, 2, 5, 6]
    assert layout.target_ids.tolist() == [21, 22, 31, 32, 33]
    assert layout.target_rows.tolist() == [0, 0, 1, 1, 1]
    assert layout.shared.tolist() == [True]


def test_additive_mask_matches_boolean():
    batch = collate(pair("a", [11, 12], [21], [31]), pair("b", [11], [21, 22, 23], [31]))
    layout = build_layout(batch, "shared_prompt")
    boolean = attention_mask_4d(layout)
    additive = attention_mask_4d(layout, torch.float32)
    assert boolean.dtype == torch.bool and boolean.shape == (2, 1, 5, 5)
    assert torch.equal(additive == 0, boolean)
    assert (additive[~boolean] == torch.finfo(torch.float32).min).all()
    # Row 0 is padded by one: its padding query sees only itself, so no row is empty.
    assert boolean[0, 0, 4].tolist() == [False, False, False, False, True]


def test_different_prompts_or_own_images_fall_back_to_two_blocks():
    same = pair("same", [11, 12], [21], [31])
    contrastive = pair(
        "contrast", [11, 12], [21], [31],
        rejected_prompt_ids=[11, 13], rejected_image_inputs={"pixel_values": torch.zeros(1, 3)},
        image_inputs={"pixel_values": torch.zeros(1, 3)},
    )  # fmt: skip
    batch = collate(same, contrastive)
    layout = build_layout(batch, "shared_prompt")
    assert layout.shared.tolist() == [True, False]
    assert layout.input_ids.tolist() == [[11, 12, 21, 31], [11, 12, 21, PAD], [11, 13, 31, PAD]]
    # Rows of a fallback pair are separate blocks carrying their own prompt (and images).
    assert layout.block_rows == [0, 1, 3]
    # Same prompt tokens but the rejected side has its own images (same token count): no sharing.
    same_tokens = pair(
        "own-images", [11, 12], [21], [31], rejected_prompt_ids=[11, 12],
        image_inputs={"pixel_values": torch.zeros(1, 3)},
        rejected_image_inputs={"pixel_values": torch.ones(1, 3)},
    )  # fmt: skip
    assert build_layout(collate(same, same_tokens), "shared_prompt").shared.tolist() == [
        True,
        False,
    ]


def test_packing_fills_rows_without_padding():
    """Blocks of 9, 4, 4 and 3 tokens pack first-fit into rows of 9: [9], [4 4], [3]... or
    with room for 12: [9 3], [4 4]; no row is longer than its capacity, no token is lost."""
    long = pair("long", [1, 2, 3, 4, 5], [6, 7], [8, 9])
    short = [pair(f"s{i}", [1, 2], [3], [4]) for i in range(2)]
    tiny = pair("tiny", [1], [2], [3])
    batch = collate(long, *short, tiny)
    packed = build_layout(batch, "packed")
    assert packed.input_ids.shape == (3, 9)
    assert packed.segments.tolist()[1] == [1, 1, 1, 1, 2, 2, 2, 2, -1]
    wide = build_layout(batch, "packed", row_tokens=12)
    assert wide.input_ids.shape == (2, 12)
    assert (wide.source >= 0).sum() == (packed.source >= 0).sum() == 9 + 4 + 4 + 3
    # Blocks never see each other.
    allowed = allowed_attention(wide)
    seg = wide.segments
    crossing = (seg[:, :, None] != seg[:, None, :]) & (seg[:, :, None] >= 0)
    assert not (allowed & crossing).any()
    # Each block's columns restart at 0.
    assert wide.columns[0].tolist()[:9] == list(range(7)) + [5, 6]
    assert wide.columns[0].tolist()[9:] == [0, 1, 1]


def test_unknown_layout_is_refused():
    batch = collate(pair("a", [1], [2], [3]))
    with pytest.raises(ValueError, match="shared_prompt, packed"):
        build_layout(batch, "diagonal")


def test_chunked_logps_gradient_adds_for_a_row_named_twice():
    logits = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 1, 1, 2])
    targets = torch.tensor([3, 4, 5, 6])
    weights = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    (rows_target_logps(logits, rows, targets, chunk_size=2) * weights).sum().backward()
    expected_input = logits.detach().clone().requires_grad_(True)
    log_probs = expected_input.log_softmax(-1)[rows, targets]
    (log_probs * weights).sum().backward()
    torch.testing.assert_close(logits.grad, expected_input.grad)


@pytest.mark.parametrize("layout", ["shared_prompt", "packed"])
def test_block_attention_equals_sdpa_with_the_dense_mask(layout):
    """``mmdpo_layout`` attention against SDPA with the layout's boolean mask, on random
    queries, keys and values (grouped: 4 query heads, 2 key heads), for shared pairs, an
    empty prompt, a pair that falls back to two blocks, and packing."""
    from mmdpo.layout_attention import layout_attention_forward, plan_mask

    fallback = pair(
        "own-images", [11, 12], [21, 22], [31], rejected_prompt_ids=[11, 13],
        image_inputs={"pixel_values": torch.zeros(1, 3)},
        rejected_image_inputs={"pixel_values": torch.ones(1, 3)},
    )  # fmt: skip
    batch = collate(
        pair("a", [1, 2, 3, 4, 5], [6, 7, 8], [9, 10]),
        pair("empty-prompt", [], [6, 7], [8, 9, 10]),
        fallback,
        pair("b", [1, 2], [3], [4, 5, 6, 7]),
    )
    built = build_layout(batch, layout)
    rows, width = built.input_ids.shape
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(rows, 4, width, 8, generator=generator, dtype=torch.float64)
    key = torch.randn(rows, 2, width, 8, generator=generator, dtype=torch.float64)
    value = torch.randn(rows, 2, width, 8, generator=generator, dtype=torch.float64)
    out, _ = layout_attention_forward(None, query, key, value, plan_mask(built), scaling=0.3)
    dense = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1),
        attn_mask=attention_mask_4d(built), scale=0.3,
    ).transpose(1, 2)  # fmt: skip
    real = built.segments >= 0
    torch.testing.assert_close(out[real], dense[real])
    if layout == "packed":
        assert rows < len(built.block_rows)
