"""POPE: yes/no questions about objects in images ("Is there a <object> in the image?").

The answer is read the way POPE's evaluation script (and LLaVA's ``eval_pope.py``) reads it:
keep the first sentence (up to the first "."), drop commas, split on spaces; the answer is
"no" when one of the words is exactly "No", "no" or "not", and "yes" otherwise. So "Not
sure" is "no" and an empty response is "yes", as upstream. "yes" is the positive class:

    accuracy = (TP + TN) / n     precision = TP / (TP + FP)     recall = TP / (TP + FN)
    F1 = 2 P R / (P + R)         yes_ratio = (TP + FP) / n

Data: POPE's question files (JSON lines: question_id, image, text, label; images looked up
beside the file or in its ``images/`` folder), the hub's lmms-lab/POPE (question_id, question,
answer, image, category), or the demo shapes world. The id is ``question_id``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, user_prompt
from eval.data import DataSource, HubSource, load_eval_data, open_image, resolve_image
from eval.shapes_world import make_scenes, pope_questions, scene

ANSWER_HINT = "Answer the question using a single word or phrase."


def extract_yes_no(response: str) -> str:
    """POPE's rule: "no" if the first sentence has the word No/no/not, else "yes"."""
    first_sentence = response.split(".")[0] if "." in response else response
    words = first_sentence.replace(",", "").split(" ")
    return "no" if any(word in ("No", "no", "not") for word in words) else "yes"


def binary_metrics(predictions: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class "yes") and yes-ratio; NaN when undefined."""
    pairs = list(zip(predictions, labels, strict=True))
    true_pos = sum(pred == "yes" and label == "yes" for pred, label in pairs)
    false_pos = sum(pred == "yes" and label == "no" for pred, label in pairs)
    true_neg = sum(pred == "no" and label == "no" for pred, label in pairs)
    false_neg = sum(pred == "no" and label == "yes" for pred, label in pairs)
    n = len(pairs)
    nan = float("nan")
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else nan
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else nan
    if true_pos == 0:
        f1 = 0.0 if (false_pos + false_neg) else nan
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": (true_pos + true_neg) / n if n else nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (true_pos + false_pos) / n if n else nan,
    }


class POPE(Benchmark):
    name = "pope"
    version = "1"
    kind = "generate"
    id_field = "question_id"
    max_new_tokens = 16
    relative_file = "pope/coco_pope_random.json"
    hub = HubSource("lmms-lab/POPE", "default", "test")

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        return load_eval_data(
            self.name,
            self.relative_file,
            data_path,
            limit,
            make_items=_items,
            generate=_generated_rows,
            hub=self.hub,
            default_generated=200,
        )

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        if "scene" in item:
            image = scene(item["scene_seed"], item["scene"]).render()
        else:
            image = open_image(item["image"], f"pope question {item['id']}")
        return user_prompt(f"{item['question']}\n{ANSWER_HINT}", [image])

    def score(self, item: dict[str, Any], response: str) -> dict[str, Any]:
        extracted = extract_yes_no(response)
        record = {
            "id": item["id"],
            "prompt": item["question"],
            "image": item.get("image_name"),
            "response": response,
            "label": item["label"],
            "extracted": extracted,
            "score": float(extracted == item["label"]),
        }
        if item.get("category"):
            record["category"] = item["category"]
        return record

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        metrics = binary_metrics([r["extracted"] for r in records], [r["label"] for r in records])
        by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            if record.get("category"):
                by_category[record["category"]].append(record)
        if len(by_category) > 1:
            for category, group in sorted(by_category.items()):
                scores = binary_metrics(
                    [r["extracted"] for r in group], [r["label"] for r in group]
                )
                metrics[f"{category}/accuracy"] = scores["accuracy"]
                metrics[f"{category}/f1"] = scores["f1"]
        return metrics


def _generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    scene_count = max(1, n // 4)
    while len(rows) < n:
        rows = pope_questions(make_scenes(scene_count, seed), seed)
        scene_count *= 2
    # The world's images are rendered on demand: rows name the scene instead of an image file.
    return [
        {
            "question_id": row["question_id"],
            "text": row["text"],
            "label": row["label"],
            "scene": row["image"],
            "scene_seed": seed,
        }
        for row in rows[:n]
    ]


def _items(rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(rows):
        where = f"{source.source} row {index + 1}"
        question = row.get("text", row.get("question"))
        label = str(row.get("label", row.get("answer", ""))).strip().lower()
        if "question_id" not in row or question is None or label not in ("yes", "no"):
            raise ValueError(
                f"{where}: a POPE row needs question_id, text (or question) and label (or "
                f"answer) yes/no; the row has {sorted(row)}"
            )
        item = {"id": str(row["question_id"]), "question": question, "label": label}
        if row.get("category"):
            item["category"] = row["category"]
        if "scene" in row:
            item.update(scene=row["scene"], scene_seed=row["scene_seed"])
            item["image_name"] = f"shapes-world/{row['scene_seed']}/{row['scene']}"
        elif isinstance(row.get("image"), str):
            item["image"] = resolve_image(row["image"], source.path)
            item["image_name"] = row["image"]
        else:
            item["image"] = row.get("image")
            item["image_name"] = row.get("image_source")
        items.append(item)
    return items
