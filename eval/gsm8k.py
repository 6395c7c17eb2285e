"""GSM8K: grade-school math word problems, scored like lm-evaluation-harness's ``gsm8k`` task.

Two extractions, as in lm-evaluation-harness (``lm_eval/tasks/gsm8k/gsm8k.yaml``, v3):
``strict-match`` takes the first ``#### N``; ``flexible-extract`` takes the last number in the
response. Both the extracted answer and the reference are normalized the same way before an
exact match: commas, ``$``, everything up to ``#### `` and one trailing period are removed,
then case is ignored. So ``$1,234.`` matches ``1234``, but ``18.00`` does not match ``18``.

The prompt is zero-shot chat with an instruction to end with ``#### N`` (the harness's
default is 5-shot completion; chat models answer an instruction instead).
The id is the 0-based line index in ``test.jsonl`` (equal to the hub split's row index).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.base import Benchmark, EvalData, Prompt, mean, user_prompt
from eval.data import DataSource, HubSource, load_eval_data, require_fields
from eval.generated import word_problems
from mmdpo.answers import extract_gsm8k_strict, extract_last_number

INSTRUCTION = (
    "Solve the problem step by step. Write the final answer as a number on the last line "
    "in the form '#### <number>'."
)
# lm-evaluation-harness gsm8k.yaml, metric_list.regexes_to_ignore, applied in this order.
_IGNORED = tuple(re.compile(pattern) for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"))


def normalize_for_match(text: str | None) -> str | None:
    """The harness's exact-match normalization (regexes_to_ignore, then ignore_case)."""
    if text is None:
        return None
    for pattern in _IGNORED:
        text = pattern.sub("", text)
    return text.lower()


def exact_match(prediction: str | None, reference: str) -> bool:
    return prediction is not None and normalize_for_match(prediction) == normalize_for_match(
        reference
    )


class GSM8K(Benchmark):
    name = "gsm8k"
    version = "1"
    kind = "generate"
    id_field = "line index (0-based) in test.jsonl"
    max_new_tokens = 512
    hub = HubSource("openai/gsm8k", "main", "test")
    relative_file = "gsm8k/test.jsonl"

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        return load_eval_data(
            self.name,
            self.relative_file,
            data_path,
            limit,
            make_items=_items,
            generate=_generated_rows,
            hub=self.hub,
        )

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        return user_prompt(f"{item['question']}\n\n{INSTRUCTION}")

    def score(self, item: dict[str, Any], response: str) -> dict[str, Any]:
        strict = extract_gsm8k_strict(response)
        flexible = extract_last_number(response)
        strict_ok, flexible_ok = (
            exact_match(strict, item["answer"]),
            exact_match(flexible, item["answer"]),
        )
        return {
            "id": item["id"],
            "prompt": self.build_prompt(item).text,
            "response": response,
            "gold": normalize_for_match(item["answer"]),
            "extracted": strict,
            "extracted_flexible": flexible,
            "exact_match_strict": float(strict_ok),
            "exact_match_flexible": float(flexible_ok),
            "score": float(strict_ok),
        }

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "exact_match_strict": mean([record["exact_match_strict"] for record in records]),
            "exact_match_flexible": mean([record["exact_match_flexible"] for record in records]),
        }


def _items(rows: list[dict[str, Any]], source: DataSource) -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(rows):
        require_fields(row, ("question", "answer"), f"{source.source} row {index + 1}")
        items.append({"id": str(index), "question": row["question"], "answer": row["answer"]})
    return items


def _generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"question": p.question, "answer": p.solution} for p in word_problems(n, seed)]
