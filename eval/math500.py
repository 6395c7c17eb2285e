"""MATH-500 (the PRM800K test split of MATH) and ``math_jsonl`` for any problem/answer file.

math-verify reads the response with its own extraction config and checks it against the gold
answer, gold parsed first (``mmdpo.answers.grade_math_response``): an unclosed box counts,
several boxes are one set of answers, "the probability is 1/4." is 1/4. Only where it finds no
answer at all is the last closed ``\\boxed{}`` (else the last number) checked instead.
Version 2: version 1 passed only that extraction of ours to math-verify.
The MATH-500 id is ``unique_id`` ("test/precalculus/807.json"); ``math_jsonl`` uses a row's
``id`` or ``unique_id`` when present, else its 0-based row index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, mean, user_prompt
from eval.data import DataSource, HubSource, load_eval_data, require_fields
from eval.generated import word_problems
from mmdpo.answers import grade_math_response

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class Math500(Benchmark):
    name = "math500"
    version = "2"
    kind = "generate"
    id_field = "unique_id"
    max_new_tokens = 2048
    relative_file = "math500/test.jsonl"
    hub: HubSource | None = HubSource("HuggingFaceH4/MATH-500", None, "test")

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        return load_eval_data(
            self.name,
            self.relative_file,
            data_path,
            limit,
            make_items=_items,
            generate=_generated_rows,
            hub=self.hub,
            seed=1,
        )

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return user_prompt(f"{item['problem']}\n\n{INSTRUCTION}")

    def score(self, item: dict[str, Any], response: str) -> dict[str, Any]:
        correct, extracted = grade_math_response(response, item["answer"])
        record = {
            "id": item["id"],
            "prompt": self.build_prompt(item).text,
            "response": response,
            "gold": item["answer"],
            "extracted": extracted,
            "score": float(correct),
        }
        if "level" in item:
            record["level"] = item["level"]
        return record

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        metrics = {"accuracy": mean([record["score"] for record in records])}
        by_level: dict[Any, list[float]] = defaultdict(list)
        for record in records:
            if record.get("level") is not None:
                by_level[record["level"]].append(record["score"])
        for level in sorted(by_level, key=str):
            metrics[f"accuracy_level_{level}"] = mean(by_level[level])
        return metrics


class MathJsonl(Math500):
    """Any JSONL (or JSON list) with ``problem`` and ``answer`` fields; ``--data`` is required."""

    name = "math_jsonl"
    id_field = "id (or unique_id), else the 0-based row index"
    hub = None

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        if data_path is None:
            raise ValueError("math_jsonl needs --data PATH: a JSONL with problem and answer fields")
        return super().load(data_path, limit)


def _items(rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(rows):
        require_fields(row, ("problem", "answer"), f"{source.source} row {index + 1}")
        item_id = row.get("unique_id", row.get("id", index))
        item = {"id": str(item_id), "problem": row["problem"], "answer": str(row["answer"])}
        if "level" in row:
            item["level"] = row["level"]
        items.append(item)
    return items


def _generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [
        {"problem": problem.question, "answer": str(problem.answer), "unique_id": f"generated/{i}"}
        for i, problem in enumerate(word_problems(n, seed))
    ]
