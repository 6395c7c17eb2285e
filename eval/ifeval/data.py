"""Load IFEval prompts from Google's ``input_data.jsonl``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class IFEvalPrompt:
    """One IFEval row.

    Attributes:
        key: the sample id from the file.
        prompt: the text given to the model.
        instruction_id_list: instruction ids, e.g. ``"punctuation:no_comma"``.
        kwargs: one dict of checker arguments per instruction id, in the same order.
    """

    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.kwargs) != len(self.instruction_id_list):
            raise ValueError(
                f"sample {self.key}: {len(self.instruction_id_list)} instruction ids but "
                f"{len(self.kwargs)} kwargs dicts"
            )


_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


def _parse_row(row: object) -> IFEvalPrompt:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [name for name in _FIELDS if name not in row]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    ids, kwargs = row["instruction_id_list"], row["kwargs"]
    if not isinstance(row["prompt"], str):
        raise ValueError("'prompt' must be a string")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("'instruction_id_list' must be a list of strings")
    if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError("'kwargs' must be a list of objects")
    # The Hub copy of the file pads every kwargs dict with nulls for unused arguments.
    kwargs = [{name: value for name, value in k.items() if value is not None} for k in kwargs]
    return IFEvalPrompt(row["key"], row["prompt"], ids, kwargs)


def load_ifeval(path: str | Path) -> list[IFEvalPrompt]:
    """Read one prompt per non-blank line; a bad row raises ValueError naming ``file:line``."""
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                prompts.append(_parse_row(json.loads(line)))
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}:{line_number}: bad IFEval row: {error}") from error
    return prompts
