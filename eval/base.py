"""The benchmark interface: a small declarative unit a generation runner can drive.

A benchmark says where its data comes from (``load``), how an item becomes a chat prompt
(``build_prompt``), how long and where to stop generating (``max_new_tokens``, ``stop``), how
one response is scored (``score``) and how the per-sample records become metrics
(``aggregate``). The runner owns the model; a benchmark never touches one.

How a runner drives a benchmark::

    data = bench.load(data_path, limit)                       # EvalData
    for item in data.items:
        responses = []
        for _ in range(bench.num_turns(item)):                # 1 except for multi-turn exports
            prompt = bench.build_prompt(item, responses)      # Prompt(messages, images)
            responses.append(generate(prompt, bench.max_new_tokens, bench.stop))
        records.append(bench.score(item, responses[0] if len(responses) == 1 else responses))
    metrics = bench.aggregate(records)

``kind == "loglikelihood"`` benchmarks (``preference``) take no generation: the runner
computes what ``response_field`` names (the implicit reward margin) and passes it to ``score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from mmdpo.types import Message

Kind = Literal["generate", "loglikelihood", "export"]


@dataclass
class Prompt:
    """What the model is asked: chat messages and the images they refer to.

    Attributes:
        messages: chat messages as transformers' chat templates expect them. A message with an
            image carries list content: ``[{"type": "image"}, {"type": "text", "text": ...}]``,
            one ``{"type": "image"}`` per entry of ``images``, in order.
        images: PIL images or file paths, in the order of the image placeholders.
    """

    messages: list[Message]
    images: list[Any] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text of all messages, joined; what a per-sample record shows as the prompt."""
        parts = []
        for message in self.messages:
            content = message["content"]
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(part["text"] for part in content if part.get("type") == "text")
        return "\n\n".join(parts)


@dataclass
class EvalData:
    """The items of one benchmark run and where they came from.

    Attributes:
        items: one dict per sample; every item has a string ``id``, the benchmark's own id
            (the one ``--predictions`` files join on).
        source: a file path, ``hub:<dataset>/<config>/<split>``, or ``generated:<seed>``.
        sha256: sha256 of the source file (of the canonical JSON rows for hub and generated
            data), so two results can be checked to come from the same data.
        generated: True for the seeded stand-in sample used when no real data is available;
            a number on it is a smoke test, never a benchmark number.
        note: why this source was chosen, when it was a fallback.
    """

    items: list[dict[str, Any]]
    source: str
    sha256: str
    generated: bool = False
    note: str = ""


def user_prompt(text: str, images: list[Any] | None = None) -> Prompt:
    """One user turn; with images, one image placeholder per image before the text."""
    if not images:
        return Prompt(messages=[{"role": "user", "content": text}])
    content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
    content.append({"type": "text", "text": text})
    return Prompt(messages=[{"role": "user", "content": content}], images=list(images))


class Benchmark:
    """Base of every benchmark; subclasses set the class attributes and override the methods.

    Class attributes:
        name: the registry name (``mmdpo eval NAME``).
        version: bumped whenever the prompt, extraction or metric changes, so results from
            different definitions are never compared unknowingly.
        kind: ``generate`` (sample a response), ``loglikelihood`` (the runner computes
            ``response_field`` from log-probs) or ``export`` (responses are written in an
            upstream judge's format; no metric beyond counts).
        id_field: the name of the benchmark's own id in its upstream data, as documented for
            ``--predictions`` files (whose ``id`` column carries it).
        response_field: the key of a predictions row that holds the response.
        max_new_tokens, stop: generation settings (greedy decoding unless the runner says).
        relative_file: where the data file sits in an $MMDPO_EVAL_DATA folder (also looked
            up inside a ``--data`` folder), e.g. ``gsm8k/test.jsonl``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    kind: ClassVar[Kind] = "generate"
    id_field: ClassVar[str] = "id"
    response_field: ClassVar[str] = "response"
    max_new_tokens: ClassVar[int] = 512
    stop: ClassVar[tuple[str, ...]] = ()
    relative_file: ClassVar[str] = ""

    def load(self, data_path: str | Path | None = None, limit: int | None = None) -> EvalData:
        raise NotImplementedError

    def num_turns(self, item: dict[str, Any]) -> int:
        """How many responses the item needs (MT-Bench: 2); each turn sees the earlier ones."""
        return 1

    def build_prompt(self, item: dict[str, Any], previous_responses: Sequence[str] = ()) -> Prompt:
        raise NotImplementedError

    def score(self, item: dict[str, Any], response: Any) -> dict[str, Any]:
        """One per-sample record: at least id, prompt, response, extracted and score."""
        raise NotImplementedError

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError

    def artifacts(self, records: list[dict[str, Any]], model: str) -> dict[str, str]:
        """Extra files to write beside the results (file name -> text); exports use it."""
        return {}


def mean(values: list[float]) -> float:
    """Arithmetic mean; NaN for no values (an empty run has no accuracy, not 0)."""
    return sum(values) / len(values) if values else float("nan")
