"""The image-once forward equals the naive forward that encodes every image per row."""

import pytest
import torch

from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.forward import encode_images, forward_logits
from mmdpo.tiny import VLM_FAMILIES, random_image, tiny_vlm
from mmdpo.types import PreferenceSample
from tests.oracles import naive_forward_logits, pair_logps

FAMILIES = list(VLM_FAMILIES)


def samples():
    return [
        PreferenceSample(
            id="one-image",
            prompt="What is in the image?",
            chosen="A red circle.",
            rejected="A blue square.",
            images=[random_image(1)],
            modality="vision",
        ),
        PreferenceSample(
            id="two-images",
            prompt="Describe both.",
            chosen="Two shapes.",
            rejected="Nothing at all.",
            images=[random_image(2), random_image(3)],
            modality="vision",
        ),
        PreferenceSample(id="text", prompt="Say hi.", chosen="Hi!", rejected="No."),
    ]


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request, session_tokenizer):
    model, processor = tiny_vlm(request.param, session_tokenizer)
    return model.eval(), processor


def test_image_once_matches_naive_forward(vlm, session_tokenizer):
    model, processor = vlm
    transform = PairTransform(processor, TransformSettings(4096), is_vlm=True)
    batch = PreferenceCollator(session_tokenizer.pad_token_id)([transform(s) for s in samples()])
    # Each image is held once in the batch, owned by its pair.
    assert batch.image_pairs.tolist()[0] == 0 and set(batch.image_pairs.tolist()) == {0, 1}
    with torch.no_grad():
        once = forward_logits(model, batch)
        naive = naive_forward_logits(model, batch)
    real = batch.attention_mask.bool()
    assert (once - naive)[real].abs().max() < 1e-5
    once_logps, naive_logps = pair_logps(once, batch), pair_logps(naive, batch)
    assert torch.allclose(once_logps.chosen_sum, naive_logps.chosen_sum, atol=1e-5)
    assert torch.allclose(once_logps.rejected_sum, naive_logps.rejected_sum, atol=1e-5)


def test_vision_encoder_runs_once_per_image(vlm, session_tokenizer, monkeypatch):
    model, processor = vlm
    transform = PairTransform(processor, TransformSettings(4096), is_vlm=True)
    batch = PreferenceCollator(session_tokenizer.pad_token_id)([transform(s) for s in samples()])
    calls = []
    original = type(model).get_image_features

    def counting(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(len(out.pooler_output))
        return out

    monkeypatch.setattr(type(model), "get_image_features", counting)
    with torch.no_grad():
        forward_logits(model, batch)
    # one call, one feature tensor per image held by the batch (3 images; Idefics3 tiles count)
    assert len(calls) == 1
    assert calls[0] == len(batch.image_pairs)


def test_rejected_images_are_encoded_separately(session_tokenizer):
    model, processor = tiny_vlm("qwen2_vl", session_tokenizer)
    model.eval()
    transform = PairTransform(processor, TransformSettings(4096), is_vlm=True)
    contrastive = PreferenceSample(
        id="contrast",
        prompt="Is there a circle?",
        chosen="Yes.",
        rejected="Yes.",
        images=[random_image(5)],
        rejected_images=[random_image(6, size=(84, 84))],
        modality="vision",
    )
    pair = transform(contrastive)
    assert pair.rejected_prompt_ids is not None
    batch = PreferenceCollator(session_tokenizer.pad_token_id)([pair])
    with torch.no_grad():
        logps = pair_logps(forward_logits(model, batch), batch)
        # the rejected row alone, as its own sample with the rejected image as the prompt's
        alone = transform(
            PreferenceSample(
                id="r",
                prompt="Is there a circle?",
                chosen="Yes.",
                rejected="No.",
                images=[random_image(6, size=(84, 84))],
                modality="vision",
            )
        )
        ref_batch = PreferenceCollator(session_tokenizer.pad_token_id)([alone])
        ref = pair_logps(naive_forward_logits(model, ref_batch), ref_batch)
    assert torch.allclose(logps.rejected_sum, ref.chosen_sum, atol=1e-5)
    assert not torch.allclose(logps.chosen_sum, logps.rejected_sum)


def test_unknown_family_is_refused():
    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "mystery"})()

    with pytest.raises(ValueError, match="supported families"):
        encode_images(Fake(), {"pixel_values": torch.zeros(1)})


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_response_only_logits_equal_full_logits(family, session_tokenizer):
    """The engine scores only response positions; sums and gradients equal the full path."""
    from mmdpo.forward import concatenated_forward
    from mmdpo.tiny import tiny_causal_lm

    if family == "llama":
        model, processing, is_vlm = tiny_causal_lm(tokenizer=session_tokenizer), None, False
        processing = session_tokenizer
    else:
        model, processing = tiny_vlm(family, session_tokenizer)
        is_vlm = True
    transform = PairTransform(processing, TransformSettings(4096), is_vlm=is_vlm)
    chosen = [s for s in samples() if is_vlm or not s.images]
    batch = PreferenceCollator(session_tokenizer.pad_token_id)([transform(s) for s in chosen])
    model.train()
    torch.manual_seed(0)
    fast = concatenated_forward(model, batch)
    (fast.chosen_sum.sum() - 0.5 * fast.rejected_sum.sum()).backward()
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(0)
    full = pair_logps(forward_logits(model, batch), batch)
    (full.chosen_sum.sum() - 0.5 * full.rejected_sum.sum()).backward()
    assert torch.allclose(fast.chosen_sum, full.chosen_sum, atol=1e-4)
    assert torch.allclose(fast.rejected_sum, full.rejected_sum, atol=1e-4)
    assert torch.equal(fast.chosen_tokens, full.chosen_tokens)
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.allclose(fast_grads[name], param.grad, atol=1e-5), name
