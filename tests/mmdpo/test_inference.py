"""The inference interface on tiny models: generation (left padding, stop strings, VLMs,
several samples per prompt), loading runs, the margin settings, pair log-likelihoods."""

from __future__ import annotations

import re

import pytest
import torch

from eval.base import user_prompt
from eval.registry import get_benchmark
from mmdpo.generation import cut_at_stop, render_prompt
from mmdpo.generation import encode_batch as _encode_batch
from mmdpo.inference import InferenceModel, margin_settings
from mmdpo.models.loading import load_policy
from mmdpo.tiny import VLM_FAMILIES

PROMPTS = [
    "What is 2 plus 3?",
    "Tell me a long story about a cat and a dog who are friends and live near a river.",
    "Hi",
    "Name three colors.",
]


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    model, tokenizer, _ = load_policy(tiny_llama_dir, prepare_for_training=False)
    return model, tokenizer


def generate(model, processing, prompts, *, is_vlm=False, **settings):
    """The interface's generate on an already loaded model."""
    return InferenceModel(model, processing, is_vlm=is_vlm).generate(prompts, **settings)


def test_cut_at_stop_cuts_at_the_earliest_stop_string():
    assert cut_at_stop("a ## b Q: c", ["Q:", "##"]) == "a "
    assert cut_at_stop("no stop here", ["Q:"]) == "no stop here"
    assert cut_at_stop("text", []) == "text"


def test_batches_are_left_padded(tiny_llama):
    _, tokenizer = tiny_llama
    prompts = [user_prompt(text) for text in PROMPTS[:3]]
    texts = [render_prompt(tokenizer, prompt, is_vlm=False) for prompt in prompts]
    assert texts[0].endswith("<|im_start|>assistant\n")  # the generation prompt is there
    inputs = _encode_batch(tokenizer, texts, prompts, is_vlm=False)
    mask = inputs["attention_mask"]
    assert (mask[:, -1] == 1).all(), "every prompt must end at the last column"
    short = int(mask[2].sum())  # "Hi": padding first, then its tokens
    assert short < int(mask[1].sum())
    assert (mask[2, :-short] == 0).all() and (mask[2, -short:] == 1).all()
    assert tokenizer.padding_side == "right", "the tokenizer's padding side is restored"


def test_batched_greedy_generation_equals_one_prompt_at_a_time(tiny_llama):
    model, tokenizer = tiny_llama
    prompts = [user_prompt(text) for text in PROMPTS]
    batched, stats = generate(
        model, tokenizer, prompts, max_new_tokens=10, batch_size=4, progress=False
    )
    alone = [
        generate(model, tokenizer, [prompt], max_new_tokens=10, batch_size=1, progress=False)[0][0]
        for prompt in prompts
    ]
    assert batched == alone
    assert len(set(batched)) > 1, "different prompts should give different responses"
    assert stats["n"] == 4 and stats["samples_per_s"] > 0 and 0 < stats["new_tokens"] <= 40


def test_stop_strings_cut_the_response(tiny_llama):
    model, tokenizer = tiny_llama
    prompts = [user_prompt(PROMPTS[1])]
    (full,), full_stats = generate(model, tokenizer, prompts, max_new_tokens=16, progress=False)
    # Two ASCII letters after the start: the random model also writes partial UTF-8 bytes
    # ("\ufffd" once decoded), which no token contains, so they cannot stop generation.
    found = re.search(r"[A-Za-z]{2}", full[2:])
    assert found, full
    stop = found.group()
    (cut,), cut_stats = generate(
        model, tokenizer, prompts, max_new_tokens=16, stop=[stop], progress=False
    )
    assert cut == full[: full.find(stop)].strip()
    assert cut_stats["new_tokens"] < full_stats["new_tokens"], "generation stopped early"


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_vlm_generates_for_pope_items_with_images(tiny_vlm_dir, family):
    model, processor, info = load_policy(tiny_vlm_dir(family), prepare_for_training=False)
    assert info.is_vlm
    pope = get_benchmark("pope")
    prompts = [pope.build_prompt(item) for item in pope.load(None, 3).items]
    assert all(len(prompt.images) == 1 for prompt in prompts)
    batched, _ = generate(
        model, processor, prompts, max_new_tokens=5, batch_size=3, is_vlm=True, progress=False
    )
    alone = generate(model, processor, prompts[:1], max_new_tokens=5, is_vlm=True, progress=False)
    assert len(batched) == 3 and all(isinstance(text, str) for text in batched)
    assert batched[0] == alone[0][0]


def test_margin_settings_follow_the_run_loss():
    assert margin_settings({}) == (2.0, True, "uni_dpo")  # the default loss, mean log-probs
    beta, average, name = margin_settings({"loss": {"name": "dpo", "kwargs": {"beta": 0.3}}})
    assert (beta, average, name) == (0.3, False, "dpo")
    forced = margin_settings({"loss": {"name": "dpo", "length_normalized": True}})
    assert forced[1] is True


def test_samples_come_back_prompt_by_prompt(tiny_llama):
    """Greedy copies of a prompt are identical and equal its single response; sampling with
    a seed is reproducible and gives several different responses."""
    model, tokenizer = tiny_llama
    prompts = [user_prompt(text) for text in PROMPTS[:2]]
    single, _ = generate(model, tokenizer, prompts, max_new_tokens=6, progress=False)
    copies, stats = generate(
        model, tokenizer, prompts, max_new_tokens=6, num_samples=3, progress=False
    )
    assert copies == [single[0]] * 3 + [single[1]] * 3 and stats["n"] == 6
    settings = {"max_new_tokens": 6, "num_samples": 4, "greedy": False, "progress": False}
    first, _ = generate(model, tokenizer, prompts, seed=3, **settings)
    again, _ = generate(model, tokenizer, prompts, seed=3, **settings)
    assert first == again and len(set(first[:4])) > 1


def test_generation_goes_through_the_one_seam(tiny_llama, monkeypatch):
    """``generate_texts`` is the one place that picks the implementation."""
    import mmdpo.inference

    seen = []

    def fake(model, processing, prompts, **settings):
        seen.append(settings)
        return ["x"] * len(prompts) * settings["num_samples"], {"n": 0}

    monkeypatch.setattr(mmdpo.inference, "generate_texts", fake)
    model, tokenizer = tiny_llama
    responses, _ = generate(model, tokenizer, [user_prompt("Hi")], max_new_tokens=2, num_samples=2)
    assert responses == ["x", "x"] and seen[0]["is_vlm"] is False and seen[0]["max_new_tokens"] == 2


def test_the_seam_samples_with_the_engine_where_it_can(sharp_model_dir, tokenizer):
    """A full-attention model goes through ``mmdpo.sampling`` (its stats carry the engine's
    prefill counts; the same seed gives the same samples, None is seed 0; greedy texts are
    ``generate``'s); a sliding-window model goes through ``mmdpo.generation.generate``, seeded
    with ``set_seed`` as before."""
    from transformers import MistralConfig, MistralForCausalLM, set_seed

    from mmdpo import sampling
    from mmdpo.generation import generate as todays_generate
    from mmdpo.inference import generate_texts

    prompts = [user_prompt(text) for text in PROMPTS]
    greedy = {"is_vlm": False, "max_new_tokens": 8, "batch_size": 3, "progress": False}
    sampled = {**greedy, "num_samples": 3, "greedy": False, "temperature": 0.9}

    model, sharp_tokenizer, _ = load_policy(sharp_model_dir("llama"), prepare_for_training=False)
    assert sampling.supports(model)
    texts, stats = generate_texts(model, sharp_tokenizer, prompts, **greedy)
    assert stats["prefill_forwards"] >= 1 and stats["n"] == len(prompts)
    assert texts == todays_generate(model, sharp_tokenizer, prompts, **greedy)[0]
    first, _ = generate_texts(model, sharp_tokenizer, prompts, seed=5, **sampled)
    engine, _ = sampling.generate_texts(model, sharp_tokenizer, prompts, seed=5, **sampled)
    assert first == engine == generate_texts(model, sharp_tokenizer, prompts, seed=5, **sampled)[0]
    assert first != generate_texts(model, sharp_tokenizer, prompts, seed=6, **sampled)[0]
    unseeded = generate_texts(model, sharp_tokenizer, prompts, **sampled)[0]
    assert unseeded == generate_texts(model, sharp_tokenizer, prompts, seed=0, **sampled)[0]

    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    torch.manual_seed(0)
    windowed = MistralForCausalLM(config).eval()
    assert not sampling.supports(windowed)
    texts, stats = generate_texts(windowed, tokenizer, prompts, **greedy)
    assert "prefill_forwards" not in stats and stats["n"] == len(prompts)
    today, today_stats = todays_generate(windowed, tokenizer, prompts, **greedy)
    assert (texts, stats["new_tokens"]) == (today, today_stats["new_tokens"])
    first, _ = generate_texts(windowed, tokenizer, prompts, seed=5, **sampled)
    set_seed(5)
    assert first == todays_generate(windowed, tokenizer, prompts, **sampled)[0]
    assert len(set(first)) > 1, "sampled, not greedy"


def test_loglikelihood_and_margins_without_an_adapter(tiny_llama):
    """The policy's pair log-likelihoods equal the engine's forward; a model without an
    adapter has no reference to compare with."""
    from eval.preference import to_sample
    from mmdpo.data.collate import PreferenceCollator
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.forward import concatenated_forward
    from mmdpo.inference import InferenceError

    model, tokenizer = tiny_llama
    loaded = InferenceModel(model, tokenizer, is_vlm=False)
    samples = [to_sample(item) for item in get_benchmark("preference").load(None, 3).items]
    logps = loaded.loglikelihood(samples, batch_size=2)
    transform = PairTransform(tokenizer, TransformSettings(1024))
    batch = PreferenceCollator(tokenizer.pad_token_id)([transform(s) for s in samples])
    with torch.no_grad():
        expected = concatenated_forward(model, batch)
    assert torch.allclose(logps.chosen_sum, expected.chosen_sum, atol=1e-5)
    assert torch.equal(logps.rejected_tokens, expected.rejected_tokens)
    with pytest.raises(InferenceError, match="adapter on and off"):
        loaded.reward_margins(samples)
    with pytest.raises(InferenceError, match="adapter on and off"):
        loaded.loglikelihood(samples, reference=True)


def test_reward_scores_without_a_chat_template_use_the_plain_fallback(tokenizer):
    """A tokenizer without a chat template: each conversation is rendered as "User: ...\\n\\n
    Assistant: ...\\n\\n" with the special tokens the tokenizer adds itself, and its score is
    the model's single logit on exactly those ids, batched (with padding) or not; the
    tokenizer's padding and truncation sides are put back."""
    from mmdpo.inference import reward_scores
    from mmdpo.tiny import tiny_reward_model

    model = tiny_reward_model(tokenizer, seed=5).eval()
    tokenizer.chat_template = None
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    conversations = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": text}]
        for text in ("one", "two three four five", "x")
    ]
    tokenizer.padding_side, tokenizer.truncation_side = "left", "right"
    batched = reward_scores(model, tokenizer, conversations, batch_size=3, progress=False)
    assert (tokenizer.padding_side, tokenizer.truncation_side) == ("left", "right")  # restored
    for conversation, score in zip(conversations, batched, strict=True):
        text = f"User: Hi\n\nAssistant: {conversation[1]['content']}\n\n"
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            assert score == pytest.approx(model(**ids).logits[0, 0].item(), abs=1e-5)
