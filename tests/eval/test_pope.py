"""POPE: upstream yes/no reading of responses, binary metrics by hand, data sources."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from eval.pope import POPE, binary_metrics, extract_yes_no


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("Yes.", "yes"),
        ("Yes, there is a red circle in the image.", "yes"),
        ("No, there is not.", "no"),  # "No," loses its comma, then "No" is a word
        ("No.", "no"),
        ("no", "no"),
        ("There is no red circle in the image.", "no"),
        ("There is not a triangle.", "no"),
        ("I am not sure.", "no"),  # "not" anywhere in the first sentence means no
        # Only the first sentence counts: the "no" in the second is ignored.
        ("Yes. There is no blue square though.", "yes"),
        # Upstream quirks, kept so numbers match published ones:
        ("", "yes"),  # an empty response reads as yes
        ("NO", "yes"),  # only "No", "no", "not" match exactly
        ("Nope", "yes"),
    ],
)
def test_extract_yes_no_follows_the_upstream_rule(response, answer):
    assert extract_yes_no(response) == answer


def test_binary_metrics_worked_by_hand():
    """(pred, label): (y,y) (y,n) (n,n) (n,y) (y,y) (n,n) -> TP 2, FP 1, TN 2, FN 1.

    accuracy (2+2)/6 = 2/3, precision 2/3, recall 2/3, F1 2/3, yes_ratio (2+1)/6 = 1/2.
    """
    predictions = ["yes", "yes", "no", "no", "yes", "no"]
    labels = ["yes", "no", "no", "yes", "yes", "no"]
    metrics = binary_metrics(predictions, labels)
    expected = {
        "accuracy": 2 / 3,
        "precision": 2 / 3,
        "recall": 2 / 3,
        "f1": 2 / 3,
        "yes_ratio": 0.5,
    }
    assert metrics == pytest.approx(expected)


def test_binary_metrics_when_the_model_never_says_yes():
    """TP 0, FP 0, TN 1, FN 1: precision undefined (NaN), recall 0, F1 0, yes_ratio 0."""
    metrics = binary_metrics(["no", "no"], ["yes", "no"])
    assert metrics["precision"] != metrics["precision"]  # NaN
    assert (metrics["recall"], metrics["f1"], metrics["yes_ratio"], metrics["accuracy"]) == (
        0.0,
        0.0,
        0.0,
        0.5,
    )


def test_score_and_aggregate_per_category():
    bench = POPE()
    items = [
        {"id": "1", "question": "Is there a dog?", "label": "yes", "category": "random"},
        {"id": "2", "question": "Is there a cat?", "label": "no", "category": "random"},
        {"id": "3", "question": "Is there a car?", "label": "no", "category": "adversarial"},
    ]
    responses = ["Yes, there is.", "No, there is not.", "Yes."]
    records = [bench.score(item, response) for item, response in zip(items, responses, strict=True)]
    assert [record["extracted"] for record in records] == ["yes", "no", "yes"]
    assert [record["score"] for record in records] == [1.0, 1.0, 0.0]
    metrics = bench.aggregate(records)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["random/accuracy"] == 1.0 and metrics["adversarial/accuracy"] == 0.0


def test_shapes_world_fallback_is_balanced_and_renders(monkeypatch):
    monkeypatch.delenv("MMDPO_EVAL_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = POPE()
    data = bench.load()
    assert data.generated and "hub unavailable" in data.note
    labels = [item["label"] for item in data.items]
    assert len(labels) == 200 and abs(labels.count("yes") - labels.count("no")) <= 3
    assert data.sha256 == bench.load().sha256  # seeded
    prompt = bench.build_prompt(data.items[0])
    assert len(prompt.images) == 1 and prompt.images[0].size == (224, 224)
    assert prompt.messages[0]["content"][0] == {"type": "image"}
    # The world's ground truth: answering from the known objects is always right.
    records = [bench.score(item, item["label"].capitalize() + ".") for item in data.items]
    assert bench.aggregate(records)["accuracy"] == 1.0


def test_upstream_question_file_and_images_beside_it(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "images" / "COCO_1.jpg")
    rows = [
        {"question_id": 1, "image": "COCO_1.jpg", "text": "Is there a dog?", "label": "yes"},
        {"question_id": 2, "image": "COCO_1.jpg", "text": "Is there a cat?", "label": "no"},
    ]
    path = tmp_path / "coco_pope_random.json"  # JSON lines under a .json name, as upstream
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = POPE().load(path)
    assert [item["id"] for item in data.items] == ["1", "2"] and not data.generated
    prompt = POPE().build_prompt(data.items[0])
    assert prompt.images[0].size == (8, 8)


def test_missing_image_and_bad_rows_are_named(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": 5, "image": "gone.jpg", "text": "?", "label": "no"}))
    item = POPE().load(path).items[0]
    with pytest.raises(FileNotFoundError, match="pope question 5: image .*gone.jpg"):
        POPE().build_prompt(item)
    path.write_text(json.dumps({"question_id": 5, "text": "?", "label": "maybe"}))
    with pytest.raises(ValueError, match="row 1: a POPE row needs"):
        POPE().load(path)
