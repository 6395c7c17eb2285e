"""Model transform, collator and batch order on text pairs with the project's tokenizer."""

import math

import pytest
import torch

from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.pipeline import BatchOrder, split_eval, tokenize_samples
from mmdpo.data.transform import PairTransform, SampleTooLongError, TransformSettings
from mmdpo.tiny.tokenizer import build_tokenizer
from mmdpo.types import PreferenceSample


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def sample(i=0, **kw):
    base = dict(
        id=f"s{i}",
        prompt="What is two plus two?",
        chosen="It is four.",
        rejected="Five.",
        score_chosen=8.0,
        score_rejected=2.0,
    )
    base.update(kw)
    return PreferenceSample(**base)


def test_prompt_and_responses_follow_the_chat_template(tokenizer):
    pair = PairTransform(tokenizer, TransformSettings(128))(sample())
    assert tokenizer.decode(pair.prompt_ids) == (
        "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(pair.chosen_ids) == "It is four.<|im_end|>"
    assert pair.chosen_ids[-1] == tokenizer.eos_token_id
    assert pair.rejected_ids[-1] == tokenizer.eos_token_id


def test_responses_are_cut_first_and_keep_the_prompt(tokenizer):
    full = PairTransform(tokenizer, TransformSettings(512))(sample(chosen="word " * 50))
    limit = len(full.prompt_ids) + 5
    pair = PairTransform(tokenizer, TransformSettings(max_length=limit))(
        sample(chosen="word " * 50)
    )
    assert len(pair.prompt_ids) + len(pair.chosen_ids) == limit
    assert pair.prompt_ids == full.prompt_ids
    assert pair.chosen_ids == full.chosen_ids[:5]


def test_prompt_too_long_names_the_sample(tokenizer):
    transform = PairTransform(tokenizer, TransformSettings(max_length=8))
    with pytest.raises(SampleTooLongError, match="sample s7: prompt"):
        transform(sample(7))
    result = tokenize_samples(
        [sample(1), sample(7, prompt="long " * 40)],
        PairTransform(tokenizer, TransformSettings(40)),
        progress=False,
    )
    assert [p.id for p in result.pairs] == ["s1"]
    assert result.problems[0]["id"] == "s7"


def test_text_model_refuses_images(tokenizer):
    transform = PairTransform(tokenizer, TransformSettings(128))
    with pytest.raises(ValueError, match="text-only"):
        transform(sample(images=["x.png"]))


def test_collator_layout(tokenizer):
    transform = PairTransform(tokenizer, TransformSettings(128))
    a = transform(sample(0))
    b = transform(
        sample(
            1,
            prompt="Hi",
            chosen="Hello there, friend.",
            rejected="No.",
            score_chosen=None,
            score_rejected=None,
            modality="math",
        )
    )
    batch = PreferenceCollator(pad_token_id=tokenizer.pad_token_id)([a, b])
    assert batch.input_ids.shape[0] == 4
    rows = [
        (a.prompt_ids, a.chosen_ids),
        (b.prompt_ids, b.chosen_ids),
        (a.prompt_ids, a.rejected_ids),
        (b.prompt_ids, b.rejected_ids),
    ]
    for row, (prompt, response) in enumerate(rows):
        n = len(prompt) + len(response)
        assert batch.input_ids[row, :n].tolist() == prompt + response
        assert batch.attention_mask[row].sum() == n
        assert batch.loss_mask[row].nonzero().flatten().tolist() == list(range(len(prompt), n))
        assert (batch.input_ids[row, n:] == tokenizer.pad_token_id).all()
    assert batch.score_chosen[0] == 8.0 and math.isnan(batch.score_chosen[1])
    assert batch.modality == ["text", "math"]
    assert batch.image_inputs is None


def test_collator_pads_to_multiple(tokenizer):
    pair = PairTransform(tokenizer, TransformSettings(128))(sample())
    batch = PreferenceCollator(tokenizer.pad_token_id, pad_to_multiple_of=16)([pair])
    assert batch.input_ids.shape[1] % 16 == 0


def test_batch_order_two_processes_cover_one_process():
    one = BatchOrder(num_pairs=20, batch_size=4, grad_accum=2, seed=3)
    two = [
        BatchOrder(
            num_pairs=20, batch_size=2, grad_accum=2, num_processes=2, process_index=p, seed=3
        )
        for p in range(2)
    ]
    assert one.steps_per_epoch == two[0].steps_per_epoch == 2
    for step in range(2):
        single = one.step_batches(0, step)
        split = [o.step_batches(0, step) for o in two]
        for micro in range(2):
            assert sorted(single[micro]) == sorted(split[0][micro] + split[1][micro])


def test_batch_order_is_seeded_and_epochs_differ():
    order = BatchOrder(num_pairs=12, batch_size=3, grad_accum=1, seed=0)
    assert order.epoch_permutation(0) == BatchOrder(12, 3, 1, seed=0).epoch_permutation(0)
    assert order.epoch_permutation(0) != order.epoch_permutation(1)
    assert list(order.steps(2, 6)) == [(2, 0, 2), (3, 0, 3), (4, 1, 0), (5, 1, 1)]


def test_too_few_pairs_for_a_step():
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        list(BatchOrder(num_pairs=3, batch_size=4, grad_accum=1).steps(0, 1))


def test_split_eval_is_stable():
    samples = [sample(i) for i in range(10)]
    train, held = split_eval(samples, 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8
    assert {s.id for s in held} == {s.id for s in split_eval(samples, 0.2, seed=1)[1]}
    assert not {s.id for s in held} & {s.id for s in train}


def test_collate_empty_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        PreferenceCollator(0)([])


def test_scores_tensor_dtype(tokenizer):
    pair = PairTransform(tokenizer, TransformSettings(64))(sample())
    batch = PreferenceCollator(tokenizer.pad_token_id)([pair])
    assert batch.score_chosen.dtype == torch.float32


def test_vision_pairs_drop_their_pixels_and_the_collator_restores_them(session_tokenizer):
    """Pixel tensors are not held for the whole dataset; batches get them back, identical."""
    import functools

    from mmdpo.data.pipeline import drop_image_tensors, restore_images
    from mmdpo.reference_cache import pair_key
    from mmdpo.tiny import random_image, tiny_vlm

    _, processor = tiny_vlm("qwen2_vl", session_tokenizer)
    transform = PairTransform(processor, TransformSettings(4096), is_vlm=True)
    vision = PreferenceSample(
        id="v", prompt="What?", chosen="A circle.", rejected="A cat.", images=[random_image(3)]
    )
    result = tokenize_samples([vision, sample(1)], transform, progress=False)
    kept = PreferenceCollator(0)(result.pairs)
    keys = [pair_key(p, "ref") for p in result.pairs]
    drop_image_tensors(result.pairs)
    assert result.pairs[0].images_dropped and result.pairs[0].image_inputs is None
    assert not result.pairs[1].images_dropped
    assert [pair_key(p, "ref") for p in result.pairs] == keys
    with pytest.raises(ValueError, match="restore"):
        PreferenceCollator(0)(result.pairs)
    collate = PreferenceCollator(0, restore=functools.partial(restore_images, transform=transform))
    again = collate(result.pairs)
    assert torch.equal(again.input_ids, kept.input_ids)
    for key, value in kept.image_inputs.items():
        assert torch.equal(again.image_inputs[key], value)


def test_pairs_with_nothing_to_prefer_are_problems_not_pairs(tokenizer, session_tokenizer):
    """Same tokens over the same pixels (in-memory samples skip the adapters' check): refused
    at tokenization, before any model loads; a different rejected image keeps the pair."""
    from mmdpo.tiny import random_image, tiny_vlm

    _, processor = tiny_vlm("qwen2_vl", session_tokenizer)
    vlm = PairTransform(processor, TransformSettings(4096), is_vlm=True)

    def contrastive(rejected_image):
        return PreferenceSample(
            id="c", prompt="Circle?", chosen="Yes.", rejected="Yes.",
            images=[random_image(4)], rejected_images=[rejected_image],
        )  # fmt: skip

    same = tokenize_samples([contrastive(random_image(4))], vlm, progress=False)  # a new object
    assert same.pairs == [] and [p["field"] for p in same.problems] == ["rejected"]
    assert "identical to chosen after tokenization" in same.problems[0]["error"]
    other = tokenize_samples([contrastive(random_image(5))], vlm, progress=False)
    assert len(other.pairs) == 1 and other.problems == []
    # Two texts that one truncation makes equal are caught too.
    cut = sample(chosen="It is four, as anyone knows.", rejected="It is four, as we all know.")
    text = tokenize_samples([cut], PairTransform(tokenizer, TransformSettings(16)), progress=False)
    assert text.pairs == [] and "data.max_length" in text.problems[0]["error"]


def test_open_image_opens_paths_strings_and_bytes(tmp_path):
    from PIL import Image

    from mmdpo.images import open_image as load_image

    file = tmp_path / "a.png"
    Image.new("L", (3, 2), 9).save(file)
    for ref in (file, str(file), file.read_bytes(), {"bytes": file.read_bytes()}):
        image = load_image(ref)
        assert image.mode == "RGB" and image.size == (3, 2)
