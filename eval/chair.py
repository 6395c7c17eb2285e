"""CHAIR: object hallucination in image descriptions (Rohrbach et al., 2018).

Each description is scanned for object mentions (longest phrase first, so "hot dog" is not a
dog and "red circle" is not also a bare "circle"; singular and plural forms; synonyms map to
one canonical object). A mention whose object is not in the image's annotations is
hallucinated. As in the original, every mention counts (a repeated object counts twice) and
negation is not understood ("no dog" mentions a dog).

    CHAIR_s = descriptions with >= 1 hallucinated mention / descriptions
    CHAIR_i = hallucinated mentions / all object mentions
    recall  = annotated objects mentioned at least once / annotated objects

Data: a COCO instances JSON (``images``, ``annotations``, ``categories``; images looked up
beside it or in its ``images/`` folder; ordered by image id, so ``--limit 500`` takes the
first 500), a JSONL of {image_id, image, objects}, or the demo shapes world. The id is the
image id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, mean, user_prompt
from eval.coco_objects import COCO_SYNONYMS
from eval.data import (
    ENV_VAR,
    open_image,
    read_rows,
    resolve_data,
    resolve_image,
    sha256_file,
    sha256_rows,
)
from eval.shapes_world import make_scenes, scene, scene_objects_for_chair, shape_vocabulary

PROMPT = "Please describe this image in detail."
_IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "knife": "knives", "sheep": "sheep", "calf": "calves", "ox": "oxen", "skis": "skis",
    "scissors": "scissors", "people": "people", "cattle": "cattle", "broccoli": "broccoli",
    "luggage": "luggage", "goose": "geese", "foal": "foals",
}  # fmt: skip
_WORD = re.compile(r"[a-z]+")


def plural(phrase: str) -> str:
    """English plural of a phrase's last word: "red circle" -> "red circles"."""
    *head, last = phrase.split(" ")
    if last in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


class ObjectVocabulary:
    """Maps word sequences to canonical objects; finds mentions longest phrase first."""

    def __init__(self, synonyms: dict[str, Sequence[str]]) -> None:
        self.phrase_to_object: dict[tuple[str, ...], str] = {}
        for canonical, phrases in synonyms.items():
            for phrase in phrases:
                for form in (phrase, plural(phrase)):
                    self.phrase_to_object.setdefault(tuple(form.split(" ")), canonical)
        self.longest = max(len(words) for words in self.phrase_to_object)

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(phrase as written, canonical object) for each mention, in order."""
        words = _WORD.findall(text.lower())
        found, position = [], 0
        while position < len(words):
            for size in range(min(self.longest, len(words) - position), 0, -1):
                key = tuple(words[position : position + size])
                if key in self.phrase_to_object:
                    found.append((" ".join(key), self.phrase_to_object[key]))
                    position += size
                    break
            else:
                position += 1
        return found


VOCABULARIES = {
    "coco": ObjectVocabulary(COCO_SYNONYMS),
    "shapes": ObjectVocabulary(shape_vocabulary()),
}


def chair_record(description: str, objects: Sequence[str], vocabulary: ObjectVocabulary) -> dict:
    """Mentions of one description split into correct and hallucinated (canonical names)."""
    present = set(objects)
    mentioned = [canonical for _, canonical in vocabulary.mentions(description)]
    hallucinated = [canonical for canonical in mentioned if canonical not in present]
    return {
        "mentioned": mentioned,
        "hallucinated": hallucinated,
        "covered": sorted(present & set(mentioned)),
        "ground_truth": sorted(present),
    }


class CHAIR(Benchmark):
    name = "chair"
    version = "1"
    kind = "generate"
    id_field = "image_id"
    max_new_tokens = 512
    relative_file = "chair/instances.json"

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        path = resolve_data(self.name, self.relative_file, data_path)
        if path is None:
            why = f"no --data and no ${ENV_VAR}/{self.relative_file}"
            seed = 0
            scenes = make_scenes(limit or 100, seed)
            items = [_scene_item(s.image_id, seed, scene_objects_for_chair(s)) for s in scenes]
            source = f"generated:{self.name}:seed={seed}"
            return EvalData(items, source, sha256_rows(items), generated=True, note=why)
        items = _coco_items(path) if _is_coco(path) else _jsonl_items(path)
        return EvalData(items[:limit] if limit is not None else items, str(path), sha256_file(path))

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        if "scene" in item:
            image = scene(item["scene_seed"], item["scene"]).render()
        else:
            image = open_image(item["image"], f"chair image {item['id']}")
        return user_prompt(PROMPT, [image])

    def score(self, item: dict[str, Any], response: str) -> dict[str, Any]:
        result = chair_record(response, item["objects"], VOCABULARIES[item["vocabulary"]])
        return {
            "id": item["id"],
            "prompt": PROMPT,
            "image": item.get("image_name"),
            "response": response,
            "extracted": result["mentioned"],
            **result,
            "score": float(bool(result["hallucinated"])),
        }

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        mentions = sum(len(record["mentioned"]) for record in records)
        hallucinated = sum(len(record["hallucinated"]) for record in records)
        ground_truth = sum(len(record["ground_truth"]) for record in records)
        covered = sum(len(record["covered"]) for record in records)
        nan = float("nan")
        return {
            "chair_s": mean([float(bool(record["hallucinated"])) for record in records]),
            "chair_i": hallucinated / mentions if mentions else nan,
            "recall": covered / ground_truth if ground_truth else nan,
            "mentions_per_description": mentions / len(records) if records else nan,
        }


def _scene_item(image_id: int, seed: int, objects: list[str]) -> dict[str, Any]:
    return {
        "id": str(image_id),
        "scene": image_id,
        "scene_seed": seed,
        "image_name": f"shapes-world/{seed}/{image_id}",
        "objects": objects,
        "vocabulary": "shapes",
    }


def _is_coco(path: Path) -> bool:
    """A COCO annotation file is one JSON object with "images"; JSON Lines named .json is not."""
    if path.suffix != ".json":
        return False
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError:
            return False  # several objects, one per line
    return isinstance(data, dict) and "images" in data


def _coco_items(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        coco = json.load(handle)
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise ValueError(f"{path}: not a COCO instances file (no {key!r})")
    names = {category["id"]: category["name"] for category in coco["categories"]}
    unknown = sorted(set(names.values()) - set(COCO_SYNONYMS))
    if unknown:
        raise ValueError(f"{path}: categories outside the COCO vocabulary: {unknown[:5]}")
    objects: dict[int, set[str]] = {}
    for annotation in coco["annotations"]:
        objects.setdefault(annotation["image_id"], set()).add(names[annotation["category_id"]])
    items = []
    for image in sorted(coco["images"], key=lambda image: image["id"]):
        if image["id"] not in objects:
            continue  # CHAIR evaluates annotated images only
        items.append(
            {
                "id": str(image["id"]),
                "image": resolve_image(image["file_name"], path),
                "image_name": image["file_name"],
                "objects": sorted(objects[image["id"]]),
                "vocabulary": "coco",
            }
        )
    return items


def _jsonl_items(path: Path) -> list[dict[str, Any]]:
    """Rows {image_id, image, objects: [COCO category names]} (optional vocabulary: shapes)."""
    items = []
    for index, row in enumerate(read_rows(path)):
        if not {"image_id", "image", "objects"} <= set(row):
            raise ValueError(f"{path} row {index + 1}: a CHAIR row needs image_id, image, objects")
        vocabulary = row.get("vocabulary", "coco")
        if vocabulary not in VOCABULARIES:
            raise ValueError(
                f"{path} row {index + 1}: vocabulary must be one of {sorted(VOCABULARIES)}"
            )
        items.append(
            {
                "id": str(row["image_id"]),
                "image": resolve_image(row["image"], path),
                "image_name": row["image"],
                "objects": list(row["objects"]),
                "vocabulary": vocabulary,
            }
        )
    return items
