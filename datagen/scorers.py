"""The scorers behind ``mmdpo score`` and ``mmdpo pairs``: each rates one response at a time.

reward_model (a sequence-classification model), math (math-verify against a gold answer),
ifeval (share of instructions followed), objects (hallucinated object mentions), column (an
existing rating). Rule scores use the 0-10 scale of the paper's judge and PRM x 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmdpo.messages import content_text
from mmdpo.types import Message

SCORE_SCALE = 10.0  # rule scores live on the 0-10 scale of the paper's judge and PRM x 10
DEFAULT_GOLD_FIELDS = ("answer", "gold", "gt")


@dataclass
class Response:
    """One response to rate, and what the rule scorers read beside it.

    Attributes:
        prompt: the chat messages before the response.
        text: the response.
        fields: the source row's columns (the data file's row, its nested ``meta`` and the
            sample's meta, the row winning), where rule scorers find gold answers, instruction
            ids or known objects.
        where: ``FILE:LINE`` of the source row, for error messages.
        side: ``chosen`` or ``rejected`` for an existing pair, ``response`` for a new one.
    """

    prompt: list[Message]
    text: str
    fields: dict[str, Any]
    where: str
    side: str = "response"


def lookup(fields: dict[str, Any], name: str, where: str, option: str) -> Any:
    """``fields[name]``, a dotted name reading nested objects; a missing one raises
    ``WHERE: NAME: missing field (OPTION)``."""
    value: Any = fields
    for part in name.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            raise ValueError(f"{where}: {name}: missing field (set {option})")
        value = value[part]
    return value


def prompt_text(prompt: list[Message]) -> str:
    """The text of the last user turn (image parts left out)."""
    users = [message["content"] for message in prompt if message.get("role") == "user"]
    return content_text(users[-1]) if users else ""


# ---------------------------------------------------------------------------- scorers


class RewardModelScorer:
    """A sequence-classification reward model: the single logit of prompt + response.

    The model runs through ``mmdpo.inference.reward_scores``: the conversation rendered with
    the model's chat template (the engine's plain ``User: ... Assistant:`` fallback when it
    has none), right-padded in batches (so the positions match an unpadded forward) and
    truncated from the left to ``max_length`` tokens (the model reads its score at the last
    token, so the response's end is kept). Images in the prompt are not seen: a text reward
    model gets the text parts only.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        max_length: int = 2048,
        progress: bool = True,
    ) -> None:
        labels = getattr(model.config, "num_labels", 1)
        if labels != 1:
            raise ValueError(
                f"the reward model has {labels} output labels; a reward model scores with one"
            )
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # where the model reads its score
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.progress = progress

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> RewardModelScorer:
        """Load the model and its tokenizer (``mmdpo.inference.load_reward_model``)."""
        from mmdpo.inference import load_reward_model

        model, tokenizer = load_reward_model(
            name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
        return cls(model, tokenizer, **kwargs)

    @staticmethod
    def conversation(response: Response) -> list[Message]:
        """The prompt's text parts, then the response as the assistant's turn."""
        messages = [
            {"role": message["role"], "content": content_text(message["content"])}
            for message in response.prompt
        ]
        return [*messages, {"role": "assistant", "content": response.text}]

    def score(self, responses: Sequence[Response]) -> list[float]:
        from mmdpo.inference import reward_scores

        return reward_scores(
            self.model,
            self.tokenizer,
            [self.conversation(response) for response in responses],
            batch_size=self.batch_size,
            max_length=self.max_length,
            progress=self.progress,
        )


class MathScorer:
    """10 when the response's final answer equals the gold answer, else 0: math-verify reads
    the response (``mmdpo.answers.grade_math_response``; last box, else last number, only
    where it finds nothing). The gold answer is the ``gold_field`` column (default:
    the first of ``answer``, ``gold``, ``gt``); a GSM8K ``... #### 42`` solution works too."""

    def __init__(self, gold_field: str | None = None, timeout_s: float | None = 5.0) -> None:
        self.gold_field = gold_field
        self.timeout_s = timeout_s

    def gold(self, response: Response) -> str:
        names = [self.gold_field] if self.gold_field else list(DEFAULT_GOLD_FIELDS)
        for name in names:
            try:
                value = lookup(response.fields, name, response.where, "--gold-field")
            except ValueError:
                continue
            return str(value)
        raise ValueError(
            f"{response.where}: {'/'.join(names)}: missing field: no gold answer "
            "(set --gold-field to the column holding it)"
        )

    def score(self, responses: Sequence[Response]) -> list[float]:
        from datagen.math_pairs import grade_responses

        jobs = [(response.text, self.gold(response)) for response in responses]
        grades = grade_responses(jobs, timeout_s=self.timeout_s)
        return [SCORE_SCALE if correct else 0.0 for correct, _ in grades]


class IFEvalScorer:
    """10 x the share of the row's IFEval instructions the response follows (strict, or
    loose with ``loose``). The row holds ``instruction_id_list`` and ``kwargs`` (one dict of
    checker arguments per instruction, as in Google's IFEval file)."""

    def __init__(
        self, ids_field: str = "instruction_id_list", kwargs_field: str = "kwargs", loose=False
    ) -> None:
        self.ids_field = ids_field
        self.kwargs_field = kwargs_field
        self.loose = loose

    def instructions(self, response: Response) -> Any:
        from eval.ifeval import IFEvalPrompt

        where = response.where
        ids = lookup(response.fields, self.ids_field, where, "--instructions-field")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{where}: {self.ids_field}: expected a non-empty list of ids")
        try:
            kwargs = lookup(response.fields, self.kwargs_field, where, "--kwargs-field")
        except ValueError:
            kwargs = [{} for _ in ids]  # instructions without arguments need none
        if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
            raise ValueError(f"{where}: {self.kwargs_field}: expected a list of objects")
        if len(kwargs) != len(ids):
            raise ValueError(
                f"{where}: {self.kwargs_field}: {len(kwargs)} kwargs objects for {len(ids)} ids"
            )
        kwargs = [{k: v for k, v in item.items() if v is not None} for item in kwargs]
        return IFEvalPrompt(where, prompt_text(response.prompt), ids, kwargs)

    def score(self, responses: Sequence[Response]) -> list[float]:
        from eval.ifeval import check_response

        scores = []
        for response in responses:
            try:
                result = check_response(self.instructions(response), response.text)
            except ValueError as error:
                message = str(error)
                raise ValueError(
                    message if message.startswith(response.where) else f"{response.where}: {error}"
                ) from None
            followed = result.follow_loose if self.loose else result.follow_strict
            scores.append(SCORE_SCALE * sum(followed) / len(followed))
        return scores


class ObjectsScorer:
    """10 x (1 - hallucinated mentions / object mentions), CHAIR_i per response: object
    mentions found as eval/chair.py finds them, checked against the row's known objects
    (canonical names of the vocabulary). A response that mentions no object scores 10,
    as CHAIR_s counts it (nothing hallucinated)."""

    def __init__(self, objects_field: str = "objects", vocabulary: str = "coco") -> None:
        from eval.chair import VOCABULARIES

        if vocabulary not in VOCABULARIES:
            valid = ", ".join(VOCABULARIES)
            raise ValueError(f"unknown object vocabulary {vocabulary!r}; valid: {valid}")
        self.objects_field = objects_field
        self.vocabulary = VOCABULARIES[vocabulary]

    def score(self, responses: Sequence[Response]) -> list[float]:
        from eval.chair import chair_record

        scores = []
        for response in responses:
            where = response.where
            objects = lookup(response.fields, self.objects_field, where, "--objects-field")
            if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
                raise ValueError(f"{where}: {self.objects_field}: expected a list of object names")
            record = chair_record(response.text, objects, self.vocabulary)
            mentions, hallucinated = len(record["mentioned"]), len(record["hallucinated"])
            scores.append(SCORE_SCALE * (1 - hallucinated / mentions) if mentions else SCORE_SCALE)
        return scores


class ColumnScorer:
    """An existing rating: the chosen side's score from ``chosen_field``, the rejected
    side's from ``rejected_field`` (numbers or numeric strings, used as given)."""

    def __init__(self, chosen_field: str | None, rejected_field: str | None) -> None:
        if not chosen_field or not rejected_field:
            raise ValueError("the column scorer needs --chosen-field and --rejected-field")
        self.fields = {"chosen": chosen_field, "rejected": rejected_field}

    def score(self, responses: Sequence[Response]) -> list[float]:
        from data_adapters.fields import to_score

        scores = []
        for response in responses:
            if response.side not in self.fields:
                raise ValueError(
                    "the column scorer copies existing ratings of chosen and rejected "
                    "responses; it cannot rate new ones (use reward_model, math, ifeval or "
                    "objects)"
                )
            name = self.fields[response.side]
            option = f"--{response.side}-field"
            value = lookup(response.fields, name, response.where, option)
            try:
                scores.append(to_score(value, name))
            except ValueError as error:
                raise ValueError(f"{response.where}: {error}") from None
        return scores
