"""IFEval as a benchmark (``mmdpo eval ifeval``): prompts from Google's file, checks offline.

Data: ``input_data.jsonl`` of google-research's instruction_following_eval (``--data``,
``$MMDPO_EVAL_DATA/ifeval/input_data.jsonl``, or the hub's google/IFEval, whose kwargs
carry nulls for unused arguments and are cleaned the same way), else a few seeded generated
prompts. The id is the row's ``key``. The prompt is the row's text as one user turn, as in
the paper; the response is checked strictly and loosely (``eval.ifeval.scoring``).

Metrics are the paper's four: prompt- and instruction-level accuracy, strict and loose. The
per-instruction outcomes are in each sample's record.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, user_prompt
from eval.data import DataSource, HubSource, load_eval_data, require_fields
from eval.ifeval.data import IFEvalPrompt
from eval.ifeval.registry import get_checker
from eval.ifeval.scoring import IFEVAL_VERSION, IFEvalResult, check_response, score

METRICS = (
    "prompt_level_strict_acc",
    "inst_level_strict_acc",
    "prompt_level_loose_acc",
    "inst_level_loose_acc",
)


class IFEval(Benchmark):
    name = "ifeval"
    version = IFEVAL_VERSION
    kind = "generate"
    id_field = "key"
    max_new_tokens = 1280  # lm-evaluation-harness's ifeval.yaml
    relative_file = "ifeval/input_data.jsonl"
    hub = HubSource("google/IFEval", None, "train")

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        return load_eval_data(
            self.name,
            self.relative_file,
            data_path,
            limit,
            make_items=_items,
            generate=_generated_rows,
            hub=self.hub,
            default_generated=8,
        )

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return user_prompt(item["prompt"])

    def score(self, item: dict[str, Any], response: str) -> dict[str, Any]:
        result = check_response(_ifeval_prompt(item), response)
        return {
            "id": item["id"],
            "prompt": item["prompt"],
            "response": response,
            "extracted": None,
            "instruction_id_list": result.instruction_id_list,
            "follow_strict": result.follow_strict,
            "follow_loose": result.follow_loose,
            "prompt_strict": result.prompt_strict,
            "prompt_loose": result.prompt_loose,
            "score": float(result.prompt_strict),
        }

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        if not records:
            return {metric: float("nan") for metric in METRICS}
        results = [
            IFEvalResult(
                int(record["id"]),
                record["instruction_id_list"],
                record["follow_strict"],
                record["follow_loose"],
            )
            for record in records
        ]
        scores = score(results)
        return {metric: float(scores[metric]) for metric in METRICS}


def _ifeval_prompt(item: dict[str, Any]) -> IFEvalPrompt:
    return IFEvalPrompt(item["key"], item["prompt"], item["instruction_id_list"], item["kwargs"])


def _items(rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(rows):
        where = f"{source.source} row {index + 1}"
        require_fields(row, ("key", "prompt", "instruction_id_list", "kwargs"), where)
        # The hub copy pads every kwargs dict with nulls for the arguments it does not use.
        kwargs = [{k: v for k, v in entry.items() if v is not None} for entry in row["kwargs"]]
        try:
            prompt = IFEvalPrompt(
                int(row["key"]), row["prompt"], row["instruction_id_list"], kwargs
            )
            for instruction_id in prompt.instruction_id_list:
                get_checker(instruction_id, key=prompt.key)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None
        items.append(
            {
                "id": str(prompt.key),
                "key": prompt.key,
                "prompt": prompt.prompt,
                "instruction_id_list": list(prompt.instruction_id_list),
                "kwargs": kwargs,
            }
        )
    return items


_TOPICS = ("the moon", "a rainy day", "coffee", "trains", "a small garden", "the ocean")
# (instruction text with {placeholders}, instruction id, kwargs builder)
_INSTRUCTIONS = (
    ("Do not use any commas in your response.", "punctuation:no_comma", lambda r: {}),
    (
        "Your entire response should be in English and in all lowercase letters.",
        "change_case:english_lowercase",
        lambda r: {},
    ),
    (
        "Wrap your entire response with double quotation marks.",
        "startend:quotation",
        lambda r: {},
    ),
    (
        "Your response should contain at least {num_sentences} sentences.",
        "length_constraints:number_sentences",
        lambda r: {"num_sentences": r.randint(2, 5), "relation": "at least"},
    ),
    (
        "Include the keywords {keywords} in the response.",
        "keywords:existence",
        lambda r: {"keywords": r.sample(["blue", "quiet", "river", "morning", "simple"], 2)},
    ),
    (
        "Finish your response with this exact phrase: {end_phrase}",
        "startend:end_checker",
        lambda r: {"end_phrase": "Is there anything else I can help with?"},
    ),
)


def _generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Seeded prompts: a short writing task plus one or two verifiable instructions."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        chosen = rng.sample(_INSTRUCTIONS, rng.randint(1, 2))
        texts, ids, kwargs = [], [], []
        for text, instruction_id, make_kwargs in chosen:
            arguments = make_kwargs(rng)
            shown = {k: " and ".join(v) if isinstance(v, list) else v for k, v in arguments.items()}
            texts.append(text.format(**shown))
            ids.append(instruction_id)
            kwargs.append(arguments)
        prompt = f"Write a short note about {rng.choice(_TOPICS)}. " + " ".join(texts)
        rows.append({"key": index, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs})
    return rows
