"""The adapter registry: format name -> how to turn one of its rows into a PreferenceSample."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data_adapters.columns import convert_columns
from data_adapters.fields import RowContext
from data_adapters.hh_rlhf import convert_hh_rlhf
from data_adapters.llamafactory import convert_llamafactory
from data_adapters.trl import convert_trl
from data_adapters.ultrafeedback import convert_ultrafeedback
from data_adapters.unidpo_math import convert_unidpo_math
from data_adapters.vision import convert_rlaif_v, convert_vlfeedback
from mmdpo.types import PreferenceSample


@dataclass(frozen=True)
class Adapter:
    """A source format.

    Attributes:
        name: the format name used in configs and on the command line.
        convert: one row (plus its context) -> a sample; raises FieldError on bad input.
        modality: the modality its samples get by default (``text`` formats turn ``vision``
            for rows with images).
        summary: one line for help texts (`mmdpo data formats`).
    """

    name: str
    convert: Callable[[dict[str, Any], RowContext], PreferenceSample]
    modality: str
    summary: str


ADAPTERS: dict[str, Adapter] = {
    "trl": Adapter(
        "trl", convert_trl, "text", "TRL standard/conversational, explicit/implicit prompt, images"
    ),
    "ultrafeedback": Adapter(
        "ultrafeedback", convert_ultrafeedback, "text", "binarized rows with both scores"
    ),
    "hh_rlhf": Adapter("hh_rlhf", convert_hh_rlhf, "text", "Human:/Assistant: transcripts"),
    "unidpo_math": Adapter(
        "unidpo_math", convert_unidpo_math, "math", "Uni-DPO math pairs with scores and correctness"
    ),
    "llamafactory_ranking": Adapter(
        "llamafactory_ranking",
        convert_llamafactory,
        "vision",
        "LLaMA-Factory ranking rows (alpaca or sharegpt) with <image> placeholders",
    ),
    "rlaif_v": Adapter("rlaif_v", convert_rlaif_v, "vision", "image, question, chosen, rejected"),
    "vlfeedback": Adapter(
        "vlfeedback", convert_vlfeedback, "vision", "rated completions: best vs worst mean rating"
    ),
    "columns": Adapter(
        "columns", convert_columns, "text", "any layout, through a columns mapping in the config"
    ),
}


class UnknownFormatError(KeyError):
    """An adapter name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_adapter(name: str) -> Adapter:
    """The adapter called ``name``; an unknown name raises UnknownFormatError (a KeyError)
    listing the valid ones."""
    try:
        return ADAPTERS[name]
    except KeyError:
        valid = ", ".join(ADAPTERS)
        raise UnknownFormatError(f"unknown data format {name!r}; valid formats: {valid}") from None
