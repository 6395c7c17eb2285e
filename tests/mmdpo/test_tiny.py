"""The tiny tokenizer, models and images that the other tests and the offline demo build on."""

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from mmdpo.tiny import (
    IMAGE_PLACEHOLDERS,
    SPECIAL_TOKENS,
    VLM_FAMILIES,
    build_tokenizer,
    make_image,
    random_image,
    tiny_causal_lm,
    tiny_reward_model,
    tiny_vlm,
)
from tests import fixtures

# Registered here by assignment, so this file runs whether or not conftest loads the plugin.
session_tokenizer = fixtures.session_tokenizer
tokenizer = fixtures.tokenizer
tiny_llama_dir = fixtures.tiny_llama_dir
tiny_qwen2_dir = fixtures.tiny_qwen2_dir
tiny_vlm_dir = fixtures.tiny_vlm_dir

TEXTS = [
    "Hello, how are you today?",
    "Solve 3x + 7 = 22. The answer is \\boxed{5}.",
    "  two spaces,\ttabs,\n\nnew lines and ünïcode: café, 数学 ∑ √2 ≤ π",
]
# Image tokens per 56 x 56 image: Qwen 4 x 4 patches merged 2 x 2; LLaVA 4 x 4 patches;
# Idefics3 upscaled to 112 px, 2 x 2 tiles + a global view, 4 tokens each.
IMAGE_TOKENS_PER_IMAGE = {"qwen2_vl": 4, "qwen2_5_vl": 4, "llava": 16, "idefics3": 20}


def test_tokenizer_is_deterministic_and_cached(tmp_path, session_tokenizer):
    trained = [build_tokenizer(use_cache=False) for _ in range(2)]
    first = build_tokenizer(cache_dir=tmp_path)
    (entry,) = tmp_path.glob("tokenizer-*")
    cached = build_tokenizer(cache_dir=tmp_path)
    serialized = {
        t.backend_tokenizer.to_str() for t in [*trained, first, cached, session_tokenizer]
    }
    assert len(serialized) == 1
    assert (entry / "tokenizer.json").exists()
    assert 512 <= len(cached) <= 2000


def test_special_tokens_have_fixed_ids(session_tokenizer):
    for index, token in enumerate(SPECIAL_TOKENS):
        assert session_tokenizer.convert_tokens_to_ids(token) == index
        assert session_tokenizer.encode(token, add_special_tokens=False) == [index]
    assert session_tokenizer.pad_token == "<|endoftext|>"
    assert session_tokenizer.bos_token == "<s>"
    assert session_tokenizer.eos_token == "<|im_end|>"


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trip(session_tokenizer, text):
    ids = session_tokenizer(text)["input_ids"]
    assert session_tokenizer.decode(ids) == text
    assert ids[0] != session_tokenizer.bos_token_id  # no BOS added, as in Qwen2


def test_chat_template_strings_and_parts(session_tokenizer):
    messages = [
        {"role": "system", "content": "You are helpful."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "What is red?"}],
        },
        {"role": "assistant", "content": "A circle."},
    ]
    rendered = session_tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\n<image>What is red?<|im_end|>\n"
        "<|im_start|>assistant\nA circle.<|im_end|>\n"
    )
    prompt = session_tokenizer.apply_chat_template(
        messages[:2], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_causal_lm_saves_reloads_and_trains(request, session_tokenizer, family):
    directory = request.getfixturevalue(f"tiny_{family}_dir")
    model = AutoModelForCausalLM.from_pretrained(directory)
    loaded_tokenizer = AutoTokenizer.from_pretrained(directory)
    # AutoTokenizer rebuilds "qwen2" tokenizers as Qwen2Tokenizer: the ids must not change.
    for text in TEXTS:
        assert loaded_tokenizer(text)["input_ids"] == session_tokenizer(text)["input_ids"]
    assert model.config.vocab_size == len(session_tokenizer)
    assert model.config.eos_token_id == session_tokenizer.eos_token_id
    assert model.config.pad_token_id == session_tokenizer.pad_token_id
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2

    batch = session_tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    output = model(**batch, labels=batch["input_ids"])
    assert output.logits.shape == (*batch["input_ids"].shape, len(session_tokenizer))
    output.loss.backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0

    in_memory = tiny_causal_lm(family, session_tokenizer, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(in_memory(**batch).logits, output.logits.detach())


def test_causal_lm_seed_is_local():
    state = torch.random.get_rng_state()
    first = tiny_causal_lm("llama", seed=1, num_hidden_layers=1)
    assert torch.equal(state, torch.random.get_rng_state())
    again = tiny_causal_lm("llama", seed=1, num_hidden_layers=1)
    other = tiny_causal_lm("llama", seed=2, num_hidden_layers=1)
    assert torch.equal(first.lm_head.weight, again.lm_head.weight)
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)
    assert first.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="llama, qwen2"):
        tiny_causal_lm("gpt2")


def test_reward_model_scores_the_last_real_token(session_tokenizer):
    model = tiny_reward_model(session_tokenizer)
    batch = session_tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    rewards = model(**batch).logits
    assert rewards.shape == (2, 1)
    rewards.sum().backward()
    alone = session_tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**alone).logits[0], rewards[0].detach())


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_vlm_saves_reloads_and_trains(tiny_vlm_dir, session_tokenizer, family):
    directory = tiny_vlm_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(directory)
    processor = AutoProcessor.from_pretrained(directory)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert IMAGE_PLACEHOLDERS[family] in prompt
    image = make_image("white", shapes=[("circle", "red"), ("square", "blue")])
    inputs = processor(
        text=[prompt, prompt + "A red circle."],
        images=[[image], [image]],
        return_tensors="pt",
        padding=True,
    )
    image_mask = inputs["input_ids"] == model.config.image_token_id
    assert image_mask.sum(dim=1).tolist() == [IMAGE_TOKENS_PER_IMAGE[family]] * 2
    assert "pixel_values" in inputs
    if family.startswith("qwen"):
        assert {"image_grid_thw", "mm_token_type_ids"} <= set(inputs)
        assert torch.equal(inputs["mm_token_type_ids"].bool(), image_mask)

    output = model(**inputs, labels=inputs["input_ids"])
    assert output.logits.shape == (*inputs["input_ids"].shape, len(session_tokenizer))
    output.loss.backward()
    # Any vision weight: LLaVA-1.5 reads the penultimate layer, so the last one gets no grad.
    vision_grads = [
        p.grad for name, p in model.named_parameters() if "vision" in name or "visual" in name
    ]
    assert any(g is not None and g.abs().sum() > 0 for g in vision_grads)

    in_memory, _ = tiny_vlm(family, session_tokenizer, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(in_memory(**inputs).logits, output.logits.detach())
    _check_features_scatter_into_image_tokens(model, inputs, image_mask, output.logits, family)


def _check_features_scatter_into_image_tokens(model, inputs, image_mask, logits, family):
    """The engine's contract: features in order at `image_token_id` give the same logits."""
    image_inputs = {
        key: value
        for key, value in inputs.items()
        if key not in ("input_ids", "attention_mask", "mm_token_type_ids")
    }
    with torch.no_grad():
        features = model.model.get_image_features(**image_inputs).pooler_output
        features = torch.cat(list(features))
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1).expand_as(embeds), features)
        extra = {}
        if family.startswith("qwen"):
            extra["position_ids"] = model.model.compute_3d_position_ids(
                input_ids=inputs["input_ids"],
                inputs_embeds=embeds,
                image_grid_thw=inputs["image_grid_thw"],
                video_grid_thw=None,
                attention_mask=inputs["attention_mask"],
                cache=None,
                mm_token_type_ids=inputs["mm_token_type_ids"],
            )
        scattered = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **extra)
    torch.testing.assert_close(scattered.logits, logits.detach())


def test_tokenizer_fixture_is_a_private_copy(tokenizer, session_tokenizer):
    tokenizer.padding_side = "left"
    assert session_tokenizer.padding_side == "right"


def test_images_are_deterministic():
    shapes = [("circle", "red"), ("triangle", "green", (4, 4, 30, 30))]
    first = make_image("white", (56, 40), shapes)
    assert first.size == (56, 40) and first.mode == "RGB"
    assert first.tobytes() == make_image("white", (56, 40), shapes).tobytes()
    assert first.tobytes() != make_image("white", (56, 40)).tobytes()
    assert random_image(3).tobytes() == random_image(3).tobytes()
    assert random_image(3).tobytes() != random_image(4).tobytes()
    with pytest.raises(ValueError, match="circle"):
        make_image(shapes=[("hexagon", "red")])
