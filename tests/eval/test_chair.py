"""CHAIR: object mentions (plurals, synonyms, longest phrase) and CHAIR_s / CHAIR_i by hand."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from eval.chair import CHAIR, VOCABULARIES, chair_record, plural
from eval.shapes_world import make_scenes, scene_objects_for_chair


@pytest.mark.parametrize(
    ("singular", "plural_form"),
    [
        ("circle", "circles"),
        ("red circle", "red circles"),
        ("box", "boxes"),
        ("person", "people"),
        ("knife", "knives"),
        ("baby", "babies"),
        ("toy", "toys"),
        ("sheep", "sheep"),
    ],
)
def test_plural(singular, plural_form):
    assert plural(singular) == plural_form


def test_shape_mentions_plurals_synonyms_longest_phrase():
    shapes = VOCABULARIES["shapes"]
    text = "Two red circles, a violet disc, a blue box and a triangle."
    assert shapes.mentions(text) == [
        ("red circles", "red circle"),
        ("violet disc", "purple circle"),
        ("blue box", "blue square"),
        ("triangle", "triangle"),
    ]


def test_coco_mentions_synonyms_and_compound_names():
    coco = VOCABULARIES["coco"]
    found = [
        canonical
        for _, canonical in coco.mentions("Three people eat hot dogs; a puppy and a teddy bear.")
    ]
    # "hot dogs" is food, not a dog; "teddy bear" is not a bear; "puppy" is a dog.
    assert found == ["person", "hot dog", "dog", "teddy bear"]


def test_shape_record_objects_not_present():
    """Scene: red circle, blue square. 'Two red circles' is right; the violet disc and the
    triangle are hallucinated; a bare 'circle' is right (some circle is there)."""
    objects = ["blue square", "circle", "red circle", "square"]
    record = chair_record(
        "Two red circles, a circle, a violet disc and a triangle.", objects, VOCABULARIES["shapes"]
    )
    assert record["mentioned"] == ["red circle", "circle", "purple circle", "triangle"]
    assert record["hallucinated"] == ["purple circle", "triangle"]
    assert record["covered"] == ["circle", "red circle"]


def test_chair_metrics_worked_by_hand():
    """A {dog, person}: 'Two men walk a dog past a cat.' -> person, dog, cat; cat hallucinated.
    B {car}: 'A red car next to a hot dog stand.' -> car, hot dog; hot dog hallucinated.
    C {bench}: 'A wooden bench in a park.' -> bench; nothing hallucinated.

    CHAIR_s = 2 / 3 descriptions; CHAIR_i = 2 hallucinated / 6 mentions = 1/3;
    recall = 4 covered / 4 annotated = 1; mentions per description = 6 / 3 = 2.
    """
    bench = CHAIR()
    cases = [
        (["dog", "person"], "Two men walk a dog past a cat."),
        (["car"], "A red car next to a hot dog stand."),
        (["bench"], "A wooden bench in a park."),
    ]
    records = [
        bench.score({"id": str(i), "objects": objects, "vocabulary": "coco"}, text)
        for i, (objects, text) in enumerate(cases)
    ]
    assert [r["hallucinated"] for r in records] == [["cat"], ["hot dog"], []]
    assert [r["score"] for r in records] == [1.0, 1.0, 0.0]
    metrics = bench.aggregate(records)
    expected = {"chair_s": 2 / 3, "chair_i": 1 / 3, "recall": 1.0, "mentions_per_description": 2.0}
    assert metrics == pytest.approx(expected)


def test_repeated_mentions_count_each_time():
    """'A dog. The dog sleeps near a cat.' with {dog}: mentions dog, dog, cat -> CHAIR_i 1/3."""
    bench = CHAIR()
    record = bench.score(
        {"id": "1", "objects": ["dog"], "vocabulary": "coco"}, "A dog. The dog sleeps near a cat."
    )
    assert bench.aggregate([record])["chair_i"] == pytest.approx(1 / 3)


def test_shapes_world_fallback_exact_description_has_no_hallucination(monkeypatch):
    monkeypatch.delenv("MMDPO_EVAL_DATA", raising=False)
    bench = CHAIR()
    data = bench.load(limit=20)
    assert data.generated and len(data.items) == 20
    scenes = make_scenes(20, 0)
    assert data.items[3]["objects"] == scene_objects_for_chair(scenes[3])
    records = []
    for item, world in zip(data.items, scenes, strict=True):
        description = "I see " + " and ".join(f"a {name}" for name in world.object_names) + "."
        records.append(bench.score(item, description))
    metrics = bench.aggregate(records)
    assert metrics["chair_s"] == 0.0 and metrics["chair_i"] == 0.0
    prompt = bench.build_prompt(data.items[0])
    assert prompt.images[0].getpixel((0, 0)) == (255, 255, 255)


def test_coco_annotations_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "COCO_val2014_000000000002.jpg")
    coco = {
        "images": [
            {"id": 2, "file_name": "COCO_val2014_000000000002.jpg"},
            {"id": 1, "file_name": "COCO_val2014_000000000001.jpg"},
            {"id": 3, "file_name": "unannotated.jpg"},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"image_id": 2, "category_id": 18},
            {"image_id": 2, "category_id": 1},
            {"image_id": 2, "category_id": 1},
            {"image_id": 1, "category_id": 1},
        ],
    }
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(coco))
    data = CHAIR().load(path)
    assert not data.generated
    assert [(item["id"], item["objects"]) for item in data.items] == [
        ("1", ["person"]),
        ("2", ["dog", "person"]),
    ]
    assert CHAIR().build_prompt(data.items[1]).images[0].size == (4, 4)
    assert [item["id"] for item in CHAIR().load(path, limit=1).items] == ["1"]


def test_jsonl_named_json_is_not_taken_for_coco(tmp_path):
    from eval.chair import _is_coco

    lines = tmp_path / "instances.json"
    lines.write_text('{"id": 1}\n{"id": 2}\n')
    assert not _is_coco(lines)
    coco = tmp_path / "coco.json"
    coco.write_text('{"images": [], "annotations": [], "categories": []}')
    assert _is_coco(coco)
