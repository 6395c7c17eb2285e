"""LLM-judge benchmarks: generate the responses here, judge them elsewhere.

No judge is called. Each benchmark writes its responses in the upstream format, under the
path the upstream tool reads them from, beside the results:

- ``alpaca_eval/model_outputs.json`` (AlpacaEval 2): a JSON list of
  {instruction, output, generator[, dataset]}; for ``alpaca_eval --model_outputs``.
- ``arena_hard/model_answer/<model>.jsonl`` (Arena-Hard): v0.1 questions ({question_id,
  turns: [{content}]}) give {question_id, answer_id, model_id, choices: [{index, turns:
  [{content}]}], tstamp}; v2 questions ({uid, prompt}) give {uid, ans_id, model, messages,
  tstamp, metadata}, as arena-hard-auto's ``gen_answer.py`` writes them.
- ``mt_bench/model_answer/<model>.jsonl`` (MT-Bench, FastChat llm_judge): {question_id,
  answer_id, model_id, choices: [{index, turns: [answer per turn]}], tstamp}; two turns, the
  second generated after the first answer.
- ``mmhal_bench/response.json`` (MMHal-Bench): the upstream ``response_template.json`` rows
  with ``model_answer`` filled, for its ``eval_gpt4.py --response``.

Ids: Arena-Hard ``question_id`` (or ``uid``), MT-Bench ``question_id``; AlpacaEval and
MMHal-Bench rows carry no id, so theirs is the 0-based row index.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, mean, user_prompt
from eval.data import (
    DataSource,
    HubSource,
    load_eval_data,
    open_image,
    require_fields,
    resolve_image,
)
from eval.shapes_world import make_scenes, scene

_GENERATED_INSTRUCTIONS = (
    "Give three tips for staying focused while studying.",
    "Explain what a hash table is to a beginner programmer.",
    "Write a short poem about autumn rain.",
    "Summarize the water cycle in four sentences.",
    "What are the pros and cons of remote work?",
    "Describe how to make a cup of tea.",
    "Write a polite email declining a meeting invitation.",
    "Explain the difference between weather and climate.",
)
_FOLLOW_UP = "Now rewrite your answer in at most two sentences."


def model_file_name(model: str) -> str:
    """A model name or path as a file name: its last path part, unsafe characters replaced."""
    name = Path(model.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _answer_id(model: str, question_id: Any) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"mmdpo/{model}/{question_id}").hex[:22]


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


class ExportBenchmark(Benchmark):
    """Shared parts: counts as metrics; rows kept whole in the item for the export."""

    kind = "export"
    max_new_tokens = 2048
    relative_file = ""
    hub: HubSource | None = None

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        return load_eval_data(
            self.name,
            self.relative_file,
            data_path,
            limit,
            make_items=self._items,
            generate=self._generated_rows,
            hub=self.hub,
            default_generated=len(_GENERATED_INSTRUCTIONS),
        )

    def _items(self, rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _generated_rows(self, n: int, seed: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def score(self, item: dict[str, Any], response: Any) -> dict[str, Any]:
        prompt = item["turns"][0] if "turns" in item else item["question"]
        return {
            "id": item["id"],
            "prompt": prompt,
            "response": response,
            "extracted": None,
            "score": None,
        }

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        lengths = [
            sum(len(turn) for turn in r["response"])
            if isinstance(r["response"], list)
            else len(r["response"])
            for r in records
        ]
        return {"n": float(len(records)), "mean_response_chars": mean([float(x) for x in lengths])}


class AlpacaEval(ExportBenchmark):
    name = "alpaca_eval"
    version = "1"
    id_field = "row index (0-based)"
    relative_file = "alpaca_eval/alpaca_eval.json"
    hub = HubSource("tatsu-lab/alpaca_eval", "alpaca_eval", "eval")

    def _items(self, rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
        items = []
        for index, row in enumerate(rows):
            require_fields(row, ("instruction",), f"{source.source} row {index + 1}")
            item = {"id": str(index), "turns": [row["instruction"]]}
            if "dataset" in row:
                item["dataset"] = row["dataset"]
            items.append(item)
        return items

    def _generated_rows(self, n: int, seed: int) -> list[dict[str, Any]]:
        return [
            {"instruction": _GENERATED_INSTRUCTIONS[i % len(_GENERATED_INSTRUCTIONS)]}
            for i in range(n)
        ]

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return user_prompt(item["turns"][0])

    def score(self, item: dict[str, Any], response: Any) -> dict[str, Any]:
        record = super().score(item, response)
        if "dataset" in item:
            record["dataset"] = item["dataset"]
        return record

    def artifacts(self, records: list[dict[str, Any]], model: str) -> dict[str, str]:
        outputs = []
        for record in records:
            row = {
                "instruction": record["prompt"],
                "output": record["response"],
                "generator": model,
            }
            if "dataset" in record:
                row["dataset"] = record["dataset"]
            outputs.append(row)
        text = json.dumps(outputs, indent=2, ensure_ascii=False) + "\n"
        return {"alpaca_eval/model_outputs.json": text}


class ArenaHard(ExportBenchmark):
    name = "arena_hard"
    version = "1"
    id_field = "question_id (v0.1) or uid (v2)"
    relative_file = "arena_hard/question.jsonl"

    def _items(self, rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
        items = []
        for index, row in enumerate(rows):
            where = f"{source.source} row {index + 1}"
            if "uid" in row and "prompt" in row:  # arena-hard-auto v2
                items.append({"id": str(row["uid"]), "turns": [row["prompt"]], "format": "v2"})
                continue
            require_fields(row, ("question_id", "turns"), where)
            turns = [turn["content"] if isinstance(turn, dict) else turn for turn in row["turns"]]
            items.append({"id": str(row["question_id"]), "turns": turns[:1], "format": "v0.1"})
        return items

    def _generated_rows(self, n: int, seed: int) -> list[dict[str, Any]]:
        return [
            {
                "question_id": f"generated-{i}",
                "turns": [{"content": _GENERATED_INSTRUCTIONS[i % 8]}],
            }
            for i in range(n)
        ]

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return user_prompt(item["turns"][0])

    def score(self, item: dict[str, Any], response: Any) -> dict[str, Any]:
        return {**super().score(item, response), "format": item["format"]}

    def artifacts(self, records: list[dict[str, Any]], model: str) -> dict[str, str]:
        now, rows = time.time(), []
        for record in records:
            answer_id = _answer_id(model, record["id"])
            if record.get("format") == "v2":
                messages = [
                    {"role": "user", "content": record["prompt"]},
                    {"role": "assistant", "content": {"answer": record["response"]}},
                ]
                rows.append({"uid": record["id"], "ans_id": answer_id, "model": model,
                             "messages": messages, "tstamp": now, "metadata": {}})  # fmt: skip
            else:
                choices = [{"index": 0, "turns": [{"content": record["response"]}]}]
                rows.append({"question_id": record["id"], "answer_id": answer_id, "model_id": model,
                             "choices": choices, "tstamp": now})  # fmt: skip
        return {f"arena_hard/model_answer/{model_file_name(model)}.jsonl": _jsonl(rows)}


class MTBench(ExportBenchmark):
    name = "mt_bench"
    version = "1"
    id_field = "question_id"
    relative_file = "mt_bench/question.jsonl"

    def _items(self, rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
        items = []
        for index, row in enumerate(rows):
            require_fields(row, ("question_id", "turns"), f"{source.source} row {index + 1}")
            items.append({"id": str(row["question_id"]), "turns": list(row["turns"])})
        return items

    def _generated_rows(self, n: int, seed: int) -> list[dict[str, Any]]:
        return [
            {"question_id": 1000 + i, "turns": [_GENERATED_INSTRUCTIONS[i % 8], _FOLLOW_UP]}
            for i in range(n)
        ]

    def num_turns(self, item: dict[str, Any]) -> int:
        return len(item["turns"])

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        """User turns interleaved with the model's earlier answers; the next user turn last."""
        messages = []
        for turn, answer in zip(item["turns"], previous_responses, strict=False):
            messages += [
                {"role": "user", "content": turn},
                {"role": "assistant", "content": answer},
            ]
        messages.append({"role": "user", "content": item["turns"][len(previous_responses)]})
        return Prompt(messages=messages)

    def artifacts(self, records: list[dict[str, Any]], model: str) -> dict[str, str]:
        now, rows = time.time(), []
        for record in records:
            turns = (
                record["response"] if isinstance(record["response"], list) else [record["response"]]
            )
            qid = int(record["id"]) if record["id"].isdigit() else record["id"]
            rows.append({"question_id": qid, "answer_id": _answer_id(model, qid), "model_id": model,
                         "choices": [{"index": 0, "turns": turns}], "tstamp": now})  # fmt: skip
        return {f"mt_bench/model_answer/{model_file_name(model)}.jsonl": _jsonl(rows)}


class MMHalBench(ExportBenchmark):
    name = "mmhal_bench"
    version = "1"
    id_field = "row index (0-based) in response_template.json"
    max_new_tokens = 512
    relative_file = "mmhal_bench/response_template.json"

    def _items(self, rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
        items = []
        for index, row in enumerate(rows):
            require_fields(row, ("question", "image_src"), f"{source.source} row {index + 1}")
            item = {"id": str(index), "question": row["question"], "row": row}
            if "scene" in row:
                item.update(scene=row["scene"], scene_seed=row["scene_seed"])
            else:
                item["image"] = resolve_image(Path(row["image_src"]).name, source.path)
            items.append(item)
        return items

    def _generated_rows(self, n: int, seed: int) -> list[dict[str, Any]]:
        rows = []
        for world in make_scenes(n, seed):
            names = world.object_names
            rows.append({
                "question_type": "counting", "question_topic": "shapes",
                "image_id": str(world.image_id),
                "image_src": f"shapes-world/{seed}/{world.image_id}",
                "image_content": names, "question": "How many shapes are in this image?",
                "gt_answer": f"There are {len(names)} shapes: {', '.join(names)}.",
                "model_answer": "", "scene": world.image_id, "scene_seed": seed,
            })  # fmt: skip
        return rows

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        if "scene" in item:
            image = scene(item["scene_seed"], item["scene"]).render()
        else:
            image = open_image(item["image"], f"mmhal_bench row {item['id']}")
        return user_prompt(item["question"], [image])

    def score(self, item: dict[str, Any], response: Any) -> dict[str, Any]:
        return {**super().score(item, response), "row": item["row"]}

    def artifacts(self, records: list[dict[str, Any]], model: str) -> dict[str, str]:
        rows = []
        for record in records:
            row = {k: v for k, v in record["row"].items() if k not in ("scene", "scene_seed")}
            rows.append({**row, "model_answer": record["response"]})
        return {"mmhal_bench/response.json": json.dumps(rows, indent=2, ensure_ascii=False) + "\n"}
