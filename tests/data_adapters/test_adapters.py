"""One row per adapter, converted end to end through load_samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_adapters import ADAPTERS, load_samples
from tests.data_adapters.conftest import make_png, write_jsonl


def load_one(tmp_path: Path, row: dict, format: str, **kwargs):
    path = write_jsonl(tmp_path / "data.jsonl", [row])
    result = load_samples(path, format, **kwargs)
    assert len(result.samples) == 1 and not result.invalid
    return result.samples[0]


def test_every_registered_adapter_has_a_test_here():
    tested = {
        "trl",
        "ultrafeedback",
        "hh_rlhf",
        "unidpo_math",
        "llamafactory_ranking",
        "rlaif_v",
        "vlfeedback",
        "columns",
    }
    assert set(ADAPTERS) == tested


def test_trl_standard_explicit(tmp_path):
    sample = load_one(
        tmp_path, {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}, "trl"
    )
    assert sample.prompt == [{"role": "user", "content": "Sky colour?"}]
    assert (sample.chosen, sample.rejected) == ("Blue.", "Green.")
    assert sample.modality == "text" and sample.source == "data"  # the file stem
    assert sample.id == "data:1"
    assert sample.score_chosen is None and sample.images == []
    assert sample.meta == {"file": str(tmp_path / "data.jsonl"), "line": 1}


def test_trl_standard_implicit_prompt_cuts_at_a_word_boundary(tmp_path):
    row = {"chosen": "The sky is blue.", "rejected": "The sky is bleak."}
    sample = load_one(tmp_path, row, "trl")
    assert sample.prompt == [{"role": "user", "content": "The sky is"}]
    assert (sample.chosen, sample.rejected) == ("blue.", "bleak.")


def test_trl_conversational_explicit_with_scores(tmp_path):
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
        ],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
        "score_chosen": 9,
        "score_rejected": "2.5",
    }
    sample = load_one(tmp_path, row, "trl")
    assert [m["role"] for m in sample.prompt] == ["system", "user"]
    assert (sample.chosen, sample.rejected) == ("4", "5")
    assert (sample.score_chosen, sample.score_rejected) == (9.0, 2.5)


def test_trl_conversational_implicit_prompt(tmp_path):
    user = {"role": "user", "content": "Hi"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "Hello!"}],
        "rejected": [user, {"role": "assistant", "content": "Go away."}],
    }
    sample = load_one(tmp_path, row, "trl")
    assert sample.prompt == [user]
    assert (sample.chosen, sample.rejected) == ("Hello!", "Go away.")


def test_trl_vision_keeps_image_parts_and_resolves_paths(tmp_path, png):
    row = {
        "images": ["images/cat.png"],
        "prompt": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "What animal?"}],
            }
        ],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}],
        "rejected": [{"role": "assistant", "content": "A dog."}],
    }
    sample = load_one(tmp_path, row, "trl")
    assert sample.modality == "vision"
    assert sample.images == [str(png)]
    assert sample.prompt[0]["content"][0] == {"type": "image"}
    assert (sample.chosen, sample.rejected) == ("A cat.", "A dog.")


def test_trl_rejected_images_allow_identical_text(tmp_path):
    make_png(tmp_path / "a.png")
    make_png(tmp_path / "b.png", color=(0, 0, 255))
    row = {
        "prompt": "Describe it.",
        "images": ["a.png"],
        "rejected_images": ["b.png"],
        "chosen": "A red square.",
        "rejected": "A red square.",
    }
    sample = load_one(tmp_path, row, "trl")
    assert sample.rejected_images == [str(tmp_path / "b.png")]
    # no placeholder in the prompt: the image goes before the text
    assert sample.prompt[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Describe it."},
    ]


def test_ultrafeedback_binarized_conversation_rows(tmp_path):
    row = {
        "prompt": "Name a prime.",
        "prompt_id": "abc123",
        "chosen": [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7"},
        ],
        "rejected": [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "9"},
        ],
        "messages": [],
        "score_chosen": 8.0,
        "score_rejected": 3.5,
    }
    sample = load_one(tmp_path, row, "ultrafeedback")
    assert sample.id == "abc123"
    assert sample.prompt == [{"role": "user", "content": "Name a prime."}]
    assert (sample.chosen, sample.rejected) == ("7", "9")
    assert (sample.score_chosen, sample.score_rejected) == (8.0, 3.5)
    assert sample.modality == "text" and sample.source == "data"


def test_ultrafeedback_keeps_a_system_turn_from_the_conversation(tmp_path):
    system = {"role": "system", "content": "You are terse."}
    user = {"role": "user", "content": "Hi"}
    row = {
        "prompt": "Hi",
        "chosen": [system, user, {"role": "assistant", "content": "Hello."}],
        "rejected": [system, user, {"role": "assistant", "content": "Hey there, friend!"}],
        "score_chosen": 5,
        "score_rejected": 4,
    }
    sample = load_one(tmp_path, row, "ultrafeedback")
    assert sample.prompt == [system, user]


def test_ultrafeedback_plain_string_responses(tmp_path):
    row = {
        "prompt": "Q",
        "chosen": "good",
        "rejected": "bad",
        "score_chosen": 2,
        "score_rejected": 1,
    }
    sample = load_one(tmp_path, row, "ultrafeedback")
    assert (sample.chosen, sample.rejected) == ("good", "bad")


def test_hh_rlhf_multi_turn_prompt_is_the_shared_prefix(tmp_path):
    shared = "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke."
    row = {
        "chosen": shared + "\n\nAssistant: Why did the chicken cross the road?",
        "rejected": shared + "\n\nAssistant: No.",
    }
    sample = load_one(tmp_path, row, "hh_rlhf")
    assert sample.prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert sample.chosen == "Why did the chicken cross the road?"
    assert sample.rejected == "No."
    assert sample.modality == "text"


def test_unidpo_math_keeps_correctness_in_meta(tmp_path):
    row = {
        "prompt": "What is 3*4?",
        "chosen": "3*4 = 12. \\boxed{12}",
        "rejected": "3*4 = 7. \\boxed{7}",
        "score_chosen": 9.1,
        "score_rejected": 2.0,
        "score_margin": 7.1,
        "correct_chosen": True,
        "correct_rejected": False,
    }
    sample = load_one(tmp_path, row, "unidpo_math")
    assert sample.modality == "math" and sample.source == "data"
    assert sample.prompt == [{"role": "user", "content": "What is 3*4?"}]
    assert (sample.score_chosen, sample.score_rejected) == (9.1, 2.0)
    assert sample.meta["correct_chosen"] is True
    assert sample.meta["correct_rejected"] is False
    assert sample.meta["score_margin"] == 7.1


def test_llamafactory_alpaca_placeholders_become_image_parts_in_order(tmp_path):
    make_png(tmp_path / "a.png")
    make_png(tmp_path / "b.png")
    row = {
        "instruction": "Compare <image> with <image>: which is brighter?",
        "input": "Answer briefly.",
        "chosen": "The first.",
        "rejected": "They are the same.",
        "score_chosen": "4.5",
        "score_rejected": "1.0",
        "images": ["a.png", "b.png"],
    }
    sample = load_one(tmp_path, row, "llamafactory_ranking")
    assert sample.modality == "vision"
    assert sample.images == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert sample.prompt == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image"},
                {"type": "text", "text": " with "},
                {"type": "image"},
                {"type": "text", "text": ": which is brighter?\nAnswer briefly."},
            ],
        }
    ]
    assert (sample.score_chosen, sample.score_rejected) == (4.5, 1.0)


def test_llamafactory_uni_dpo_release_row(tmp_path, png):
    row = {
        "instruction": "<image>Here is the question",
        "chosen": "Better",
        "rejected": "Worse",
        "score_chosen": 3.0,
        "score_rejected": 1.0,
        "images": [str(png)],  # the release uses absolute paths
    }
    sample = load_one(tmp_path, row, "llamafactory_ranking")
    assert sample.prompt[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Here is the question"},
    ]
    assert sample.images == [str(png)]


def test_llamafactory_sharegpt_style(tmp_path, png):
    row = {
        "conversations": [
            {"from": "human", "value": "<image>What is this?"},
            {"from": "gpt", "value": "A square."},
            {"from": "human", "value": "What colour?"},
        ],
        "system": "You see images.",
        "chosen": {"from": "gpt", "value": "Red."},
        "rejected": {"from": "gpt", "value": "Blue."},
        "images": ["images/cat.png"],
    }
    sample = load_one(tmp_path, row, "llamafactory_ranking")
    assert [m["role"] for m in sample.prompt] == ["system", "user", "assistant", "user"]
    assert sample.prompt[1]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "What is this?"},
    ]
    assert sample.prompt[3]["content"] == "What colour?"
    assert (sample.chosen, sample.rejected) == ("Red.", "Blue.")


def test_llamafactory_text_only_row_is_text(tmp_path):
    row = {"instruction": "Say hi", "chosen": "Hi!", "rejected": "No."}
    sample = load_one(tmp_path, row, "llamafactory_ranking")
    assert sample.modality == "text" and sample.images == []
    assert sample.prompt == [{"role": "user", "content": "Say hi"}]


def test_rlaif_v_with_embedded_image_bytes(tmp_path, png):
    row = {
        "ds_name": "RLAIF-V",
        "image": {"bytes": None, "path": "images/cat.png"},
        "question": "What is shown?",
        "chosen": "A red rectangle.",
        "rejected": "A cat on a sofa.",
        "origin_dataset": "COCO",
        "idx": 17,
    }
    sample = load_one(tmp_path, row, "rlaif_v")
    assert sample.id == "17"
    assert sample.modality == "vision" and sample.source == "data"
    assert sample.images == [str(png)]
    assert sample.prompt[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "What is shown?"},
    ]
    assert sample.meta["origin_dataset"] == "COCO"


def _completion(model: str, response: str, *ratings):
    aspects = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
    pairs = zip(aspects, ratings, strict=True)
    annotations = {a: {"Rating": str(r), "Rationale": "..."} for a, r in pairs}
    return {"model": model, "response": response, "annotations": annotations}


def test_vlfeedback_best_vs_worst_mean_rating(tmp_path, png):
    row = {
        "id": "vlf-1",
        "prompt": "Describe the image.",
        "img_path": "images/cat.png",
        "completions": [
            _completion("m1", "Red box.", 4, 5, 4),  # mean 13/3
            _completion("m2", "A cat.", 1, 5, 1),  # mean 7/3, the worst
            _completion("m3", "A red box on white.", 5, 5, 5),  # mean 5, the best
            _completion("m4", "Unclear.", 2, 5, 2),  # mean 3
        ],
    }
    sample = load_one(tmp_path, row, "vlfeedback")
    assert sample.id == "vlf-1" and sample.modality == "vision"
    assert (sample.chosen, sample.rejected) == ("A red box on white.", "A cat.")
    assert sample.score_chosen == pytest.approx(5.0)
    assert sample.score_rejected == pytest.approx(7 / 3)
    assert sample.meta["chosen_model"] == "m3" and sample.meta["rejected_model"] == "m2"
    assert len(sample.meta["ratings"]) == 4
    assert sample.images == [str(png)]


def test_vlfeedback_ties_pick_the_first_listed(tmp_path, png):
    row = {
        "prompt": "Describe.",
        "image": "images/cat.png",
        "completions": [
            _completion("a", "low one", 1, 1, 1),
            _completion("b", "high one", 5, 5, 5),
            _completion("c", "high two", 5, 5, 5),
            _completion("d", "low two", 1, 1, 1),
        ],
    }
    sample = load_one(tmp_path, row, "vlfeedback")
    assert (sample.chosen, sample.rejected) == ("high one", "low one")


def test_vlfeedback_columnar_completions_and_na_ratings(tmp_path, png):
    # Hub-loaded rows can hold a sequence of structs as a dict of lists
    row = {
        "prompt": "Describe.",
        "img_path": "images/cat.png",
        "completions": {
            "model": ["a", "b"],
            "response": ["good", "bad"],
            "annotations": [
                {"Helpfulness": {"Rating": "4"}, "Visual Faithfulness": {"Rating": "N/A"}},
                {"Helpfulness": {"Rating": "2"}, "Visual Faithfulness": {"Rating": "2"}},
            ],
        },
    }
    sample = load_one(tmp_path, row, "vlfeedback")
    assert (sample.chosen, sample.rejected) == ("good", "bad")
    assert (sample.score_chosen, sample.score_rejected) == (4.0, 2.0)


def test_columns_mapping_reads_any_layout(tmp_path, png):
    row = {
        "uid": "q-9",
        "question": "Best fruit?",
        "good": "Mango.",
        "bad": "Rocks.",
        "s": {"good": 0.9, "bad": 0.1},
        "pics": ["images/cat.png"],
    }
    columns = {
        "id": "uid",
        "prompt": "question",
        "chosen": "good",
        "rejected": "bad",
        "score_chosen": "s.good",
        "score_rejected": "s.bad",
        "images": "pics",
    }
    sample = load_one(tmp_path, row, "columns", columns=columns, source_name="fruit")
    assert sample.id == "q-9" and sample.source == "fruit"
    assert sample.prompt[0]["content"][1] == {"type": "text", "text": "Best fruit?"}
    assert (sample.chosen, sample.rejected) == ("Mango.", "Rocks.")
    assert (sample.score_chosen, sample.score_rejected) == (0.9, 0.1)
    assert sample.modality == "vision" and sample.images == [str(png)]


def test_columns_renaming_in_front_of_another_adapter(tmp_path):
    row = {"q": "Q?", "chosen": "a", "rejected": "b", "sc": 2, "sr": 1}
    columns = {"prompt": "q", "score_chosen": "sc", "score_rejected": "sr"}
    sample = load_one(tmp_path, row, "ultrafeedback", columns=columns)
    assert sample.prompt == [{"role": "user", "content": "Q?"}]
    assert (sample.score_chosen, sample.score_rejected) == (2.0, 1.0)


def test_modality_override_applies_to_every_sample(tmp_path):
    row = {"prompt": "1+1?", "chosen": "2", "rejected": "3"}
    sample = load_one(tmp_path, row, "trl", modality="math")
    assert sample.modality == "math"


def test_trl_rows_may_name_their_modality():
    from data_adapters import load_samples

    rows = [
        {"prompt": "1+1?", "chosen": "2", "rejected": "3", "modality": "math"},
        {"prompt": "hi", "chosen": "hello", "rejected": "go"},
    ]
    samples = load_samples(rows, "trl").samples
    assert [s.modality for s in samples] == ["math", "text"]
    bad = [{"prompt": "x", "chosen": "a", "rejected": "b", "modality": "audio"}]
    result = load_samples(bad, "trl", skip_invalid=True)
    assert "modality: 'audio' is not one of text, math, vision" in str(result.problems[0])
