"""Model loading (none / 8-bit / 4-bit on CPU), LoRA targeting and training, reference modes."""

import warnings

import pytest
import torch
from PIL import Image
from torch import nn
from transformers import AutoModelForImageTextToText

import mmdpo.models.loading as loading
import mmdpo.models.quantization as quantization
from mmdpo.models import (
    apply_lora,
    check_quantization_available,
    load_policy,
    lora_target_modules,
    make_quantization_config,
)
from mmdpo.models.lora import module_part
from mmdpo.reference import freeze, reference_context
from mmdpo.tiny.text import save_tiny_causal_lm
from mmdpo.tiny.tokenizer import build_tokenizer
from mmdpo.tiny.vision import VLM_FAMILIES, save_tiny_vlm, tiny_vlm_config_and_processor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

bnb = pytest.importorskip("bitsandbytes")


# ---------------------------------------------------------------- tiny checkpoints


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory, tokenizer):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("llama"), "llama", tokenizer)


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory, tokenizer):
    return {
        family: save_tiny_vlm(tmp_path_factory.mktemp(family), family, tokenizer)
        for family in VLM_FAMILIES
    }


def text_ids(tokenizer):
    return tokenizer(["the cat sat on the mat", "two plus two is four"], return_tensors="pt")


def base_weights(model):
    """Copies of every base (non-LoRA) parameter, quantized ones included, by name."""
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if "lora_" not in name
    }


# ---------------------------------------------------------------- quantization config


def test_quantization_configs():
    assert make_quantization_config("none") is None
    assert make_quantization_config("8bit").load_in_8bit
    config = make_quantization_config("4bit", quant_type="fp4", double_quant=False)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "fp4"
    assert not config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="8bit, 4bit"):
        make_quantization_config("2bit")
    with pytest.raises(ValueError, match="nf4, fp4"):
        make_quantization_config("4bit", quant_type="int4")


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    real_find_spec = quantization.importlib.util.find_spec
    monkeypatch.setattr(
        quantization.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    check_quantization_available("none")  # needs nothing
    for mode in ("8bit", "4bit"):
        with pytest.raises(quantization.QuantizationUnavailableError, match="pip install"):
            check_quantization_available(mode)


# ---------------------------------------------------------------- text loading


@pytest.mark.parametrize(
    ("mode", "linear_type"),
    [("none", nn.Linear), ("8bit", bnb.nn.Linear8bitLt), ("4bit", bnb.nn.Linear4bit)],
)
def test_load_text_model_and_forward(text_dir, tokenizer, mode, linear_type):
    model, loaded_tokenizer, info = load_policy(text_dir, quantization=mode)
    assert type(model.model.layers[0].self_attn.q_proj) is linear_type
    assert info.family == "llama" and not info.is_vlm and info.quantization == mode
    assert info.pad_token_id == tokenizer.pad_token_id
    assert info.eos_token_ids == (tokenizer.eos_token_id,)
    assert info.image_token_id is None and info.image_token_ids == ()
    if mode != "none":  # prepare_model_for_kbit_training froze the base
        assert not any(p.requires_grad for p in model.parameters())
    batch = text_ids(loaded_tokenizer)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_trust_remote_code_is_off_by_default(text_dir, monkeypatch):
    seen = []
    for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"):
        auto_class = getattr(loading, name)

        def recording(path, _load=auto_class.from_pretrained, _name=name, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", "missing")))
            return _load(path, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", recording)
    load_policy(text_dir)
    assert {name for name, _ in seen} == {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}
    assert all(value is False for _, value in seen), seen


def test_pickle_only_checkpoint_is_refused(text_dir, tmp_path):
    (tmp_path / "config.json").write_text((text_dir / "config.json").read_text())
    torch.save({"weight": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors"):
        load_policy(tmp_path)


def test_vlm_kind_on_a_text_model_is_refused(text_dir):
    with pytest.raises(ValueError, match="no vision_config"):
        load_policy(text_dir, kind="vlm")


# ---------------------------------------------------------------- LoRA on 4-bit + reference


def test_lora_on_4bit_trains_adapters_only_and_adapter_off_is_the_base(text_dir, tokenizer):
    model, _, _ = load_policy(text_dir, quantization="4bit")
    batch = text_ids(tokenizer)
    with torch.no_grad():
        base_logits = model(**batch).logits
    policy = apply_lora(model, r=4, alpha=8, dropout=0.0)
    assert not any("lm_head" in name for name, _ in policy.named_parameters() if "lora_" in name)

    def reference_logits(policy, batch):
        with reference_context(policy) as base:
            return base(**batch).logits

    # Before training LoRA B is zero: policy and reference both equal the base model.
    torch.testing.assert_close(reference_logits(policy, batch), base_logits)
    before = base_weights(policy)
    lora_before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert lora_before and all("lora_" in name for name in lora_before)

    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    policy.train()
    policy(**batch).logits.float().logsumexp(-1).mean().backward()
    optimizer.step()

    # At step 0 only B has a gradient (A's is B^T-weighted, and B = 0); no weight decay.
    params = dict(policy.named_parameters())
    lora_b = [name for name in lora_before if "lora_B" in name]
    assert lora_b and all(not torch.equal(params[n], lora_before[n]) for n in lora_b)
    for name, weight in base_weights(policy).items():
        assert torch.equal(weight, before[name]), name
    assert policy.training  # the reference forward restored the mode
    with torch.no_grad():
        trained_logits = policy(**batch).logits
    assert (trained_logits - base_logits).abs().max() > 1e-3
    torch.testing.assert_close(reference_logits(policy, batch), base_logits)
    assert policy.training


def test_gradient_checkpointing_with_lora(text_dir, tokenizer):
    model, _, _ = load_policy(text_dir, quantization="4bit")
    policy = apply_lora(model, r=4, gradient_checkpointing=True)
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    assert model.config.use_cache is False
    policy.train()
    policy(**text_ids(tokenizer)).logits.sum().backward()
    grads = [p.grad for n, p in policy.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_separate_reference_is_frozen_and_adapter_off_needs_peft(text_dir, tokenizer):
    batch = text_ids(tokenizer)
    reference, _, _ = load_policy(text_dir, quantization="8bit", prepare_for_training=False)
    reference = freeze(reference)
    assert not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    plain, _, _ = load_policy(text_dir, quantization="8bit", prepare_for_training=False)
    with torch.no_grad():
        torch.testing.assert_close(reference(**batch).logits, plain(**batch).logits)
    with pytest.raises(TypeError, match="needs a peft model"):
        with reference_context(plain):
            pass


# ---------------------------------------------------------------- VLMs


def image_batch(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "cat"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (56, 56), color=(200, 30, 30))
    return processor(text=[prompt], images=[image], return_tensors="pt")


@pytest.mark.parametrize(
    ("family", "mode"),
    [(family, mode) for family in VLM_FAMILIES for mode in ("none", "4bit")],
)
def test_vlm_loads_and_lora_targets_the_language_model(vlm_dirs, family, mode):
    model, processor, info = load_policy(vlm_dirs[family], quantization=mode)
    assert info.is_vlm and info.family == family
    assert info.image_token_id == processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert info.image_token_id in info.image_token_ids
    inputs = image_batch(processor)
    assert (inputs["input_ids"] == info.image_token_id).any()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()

    language_only = lora_target_modules(model, freeze_projector=True)
    assert language_only and all(module_part(n) == "language" for n in language_only)
    language_prefix = "model.text_model." if family == "idefics3" else "model.language_model."
    assert all(n.startswith(language_prefix) for n in language_only)
    with_projector = lora_target_modules(model)
    assert {module_part(n) for n in with_projector} == {"language", "projector"}
    everything = lora_target_modules(model, freeze_vision_tower=False)
    assert {module_part(n) for n in everything} == {"language", "projector", "vision_tower"}
    assert not any(n.endswith("lm_head") for n in everything)

    policy = apply_lora(model, r=4, freeze_projector=True)
    adapted = {n.split(".lora_A")[0] for n, _ in policy.named_parameters() if ".lora_A" in n}
    assert adapted == {"base_model.model." + n for n in language_only}


def test_explicit_names_do_not_leak_into_a_clip_tower(tokenizer):
    """LLaVA's CLIP tower has q_proj layers too; with the tower frozen none gets LoRA."""
    config, _ = tiny_vlm_config_and_processor("llava", tokenizer)
    model = AutoModelForImageTextToText.from_config(config)
    targets = lora_target_modules(model, ["q_proj", "v_proj"])
    assert targets and all(n.startswith("model.language_model.") for n in targets)
    assert len(targets) == 2 * config.text_config.num_hidden_layers
    with_tower = lora_target_modules(model, "q_proj", freeze_vision_tower=False)
    assert any(n.startswith("model.vision_tower.") for n in with_tower)
    with pytest.raises(ValueError, match="no linear layer matches"):
        lora_target_modules(model, ["not_a_layer"])


@pytest.mark.parametrize(
    ("family", "tower", "projector", "language"),
    [
        ("qwen2_vl", "model.visual.", "model.visual.merger.", "model.language_model."),
        ("qwen2_5_vl", "model.visual.", "model.visual.merger.", "model.language_model."),
        ("llava", "model.vision_tower.", "model.multi_modal_projector.", "model.language_model."),
        ("idefics3", "model.vision_model.", "model.connector.", "model.text_model."),
    ],
)
def test_module_parts_per_family(tokenizer, family, tower, projector, language):
    config, _ = tiny_vlm_config_and_processor(family, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForImageTextToText.from_config(config)
    expected_prefix = {"vision_tower": tower, "projector": projector, "language": language}
    names = lora_target_modules(model, freeze_vision_tower=False)
    assert {module_part(n) for n in names} == set(expected_prefix)
    for name in names:
        assert name.startswith(expected_prefix[module_part(name)]), name
