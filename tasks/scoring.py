"""``mmdpo score``: attach ``score_chosen`` / ``score_rejected`` to preference pairs.

    mmdpo score pairs.jsonl scored.jsonl --scorer reward_model --model RM --batch-size 16
    mmdpo score math.jsonl scored.jsonl --scorer math --gold-field answer
    mmdpo score if.jsonl scored.jsonl --scorer ifeval
    mmdpo score captions.jsonl scored.jsonl --scorer objects --vocabulary coco
    mmdpo score rated.jsonl scored.jsonl --scorer column --chosen-field r1 --rejected-field r2

The input is read with any data adapter (``--format``, default ``trl``); the output is JSONL in
the TRL layout the ``trl`` adapter reads back (docs/scoring.md). The input is never
overwritten. The scorers rate one response at a time (:class:`Response`), so ``mmdpo pairs``
(tasks/pairs.py) uses the same ones to rate freshly sampled responses.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmdpo.types import Message, PreferenceSample

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


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


# ---------------------------------------------------------------------------- scorers


class RewardModelScorer:
    """A sequence-classification reward model: the single logit of prompt + response.

    The conversation is rendered with the model's chat template (the engine's plain
    ``User: ... Assistant:`` fallback when it has none), right-padded in batches (so the
    positions match an unpadded forward) and truncated from the left to ``max_length`` tokens
    (the model reads its score at the last token, so the response's end is kept). Images in
    the prompt are not seen: a text reward model gets the text parts only.
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
        """Load an ``AutoModelForSequenceClassification`` (safetensors only) and its tokenizer."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from mmdpo.models.loading import require_safetensors
        from mmdpo.models.quantization import resolve_dtype

        require_safetensors(name_or_path)
        cuda = torch.cuda.is_available()
        torch_dtype = resolve_dtype(dtype or ("bfloat16" if cuda else "float32"))
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return cls(model.to("cuda") if cuda else model, tokenizer, **kwargs)

    def render(self, response: Response) -> str:
        from mmdpo.data.transform import FALLBACK_CHAT_TEMPLATE

        messages = [
            {"role": message["role"], "content": content_text(message["content"])}
            for message in response.prompt
        ]
        messages.append({"role": "assistant", "content": response.text})
        kwargs: dict[str, Any] = {"tokenize": False}
        if getattr(self.tokenizer, "chat_template", None) is None:
            kwargs["chat_template"] = FALLBACK_CHAT_TEMPLATE
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def score(self, responses: Sequence[Response]) -> list[float]:
        import torch
        from tqdm.auto import tqdm

        texts = [self.render(response) for response in responses]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # less padding
        scores = [math.nan] * len(texts)
        device = next(self.model.parameters()).device
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        tokenizer = self.tokenizer
        sides = tokenizer.padding_side, tokenizer.truncation_side
        tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
        bar = tqdm(
            total=len(texts), desc="reward model", unit="response", disable=not self.progress
        )
        try:
            for first in range(0, len(order), self.batch_size):
                batch = order[first : first + self.batch_size]
                inputs = tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=not has_template,  # a template writes its own BOS
                    return_tensors="pt",
                ).to(device)
                with torch.inference_mode():
                    logits = self.model(**inputs).logits[:, 0].float().tolist()
                for index, value in zip(batch, logits, strict=True):
                    scores[index] = value
                bar.update(len(batch))
        finally:
            tokenizer.padding_side, tokenizer.truncation_side = sides
            bar.close()
        return scores


class MathScorer:
    """10 when the response's final answer (last box, else last number) equals the gold
    answer by math-verify, else 0. The gold answer is the ``gold_field`` column (default:
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
        from mmdpo.answers import grade_math_response

        jobs = [(response.text, self.gold(response)) for response in responses]

        def grade(job: tuple[str, str]) -> float:
            correct, _ = grade_math_response(*job, timeout_s=self.timeout_s)
            return SCORE_SCALE if correct else 0.0

        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            return list(pool.map(grade, jobs))


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


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer by name: how to build it from command-line options, and what it reads.

    Attributes:
        build: options -> a scorer (an object with ``score(responses) -> list[float]``).
        needs_fields: it reads the source row's columns (gold answer, instructions, objects).
        summary: one line for help texts.
    """

    name: str
    build: Callable[[argparse.Namespace], Any]
    needs_fields: bool
    summary: str


def _reward_model(args: argparse.Namespace) -> RewardModelScorer:
    name = getattr(args, "reward_model", None)
    if not name:
        flag = getattr(args, "reward_model_flag", "--model")
        raise ValueError(f"the reward_model scorer needs {flag} (a sequence-classification model)")
    return RewardModelScorer.from_pretrained(
        name,
        dtype=getattr(args, "reward_dtype", None),
        trust_remote_code=getattr(args, "trust_remote_code", False),
        batch_size=getattr(args, "batch_size", 8),
        max_length=getattr(args, "max_length", 2048),
        progress=not getattr(args, "no_progress", False),
    )


def _timeout(args: argparse.Namespace) -> float | None:
    timeout = getattr(args, "verify_timeout", 5.0)
    return None if timeout is not None and timeout <= 0 else timeout


SCORERS: dict[str, ScorerSpec] = {
    "reward_model": ScorerSpec(
        "reward_model", _reward_model, False, "a sequence-classification reward model's logit"
    ),
    "math": ScorerSpec(
        "math",
        lambda args: MathScorer(getattr(args, "gold_field", None), _timeout(args)),
        True,
        "10 if the final answer equals the gold answer (math-verify), else 0",
    ),
    "ifeval": ScorerSpec(
        "ifeval",
        lambda args: IFEvalScorer(
            getattr(args, "instructions_field", "instruction_id_list"),
            getattr(args, "kwargs_field", "kwargs"),
            getattr(args, "loose", False),
        ),
        True,
        "10 x the share of IFEval instructions followed",
    ),
    "objects": ScorerSpec(
        "objects",
        lambda args: ObjectsScorer(
            getattr(args, "objects_field", "objects"), getattr(args, "vocabulary", "coco")
        ),
        True,
        "10 x (1 - hallucinated object mentions / mentions) against known objects",
    ),
    "column": ScorerSpec(
        "column",
        lambda args: ColumnScorer(
            getattr(args, "chosen_field", None), getattr(args, "rejected_field", None)
        ),
        True,
        "copy existing ratings from two columns",
    ),
}


def get_scorer(name: str) -> ScorerSpec:
    """The scorer called ``name``; an unknown name raises a ValueError listing the valid ones."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; valid scorers: {', '.join(SCORERS)}") from None


def score_samples(
    samples: Sequence[PreferenceSample], scorer: Any, fields: Sequence[dict[str, Any]]
) -> list[PreferenceSample]:
    """Copies of ``samples`` with both scores from ``scorer`` (one call for all responses)."""
    responses = []
    for sample, row in zip(samples, fields, strict=True):
        where = f"{sample.meta.get('file', '<memory>')}:{sample.meta.get('line', '?')}"
        for side in ("chosen", "rejected"):
            text = getattr(sample, side)
            responses.append(Response(sample.prompt, text, row, where, side))
    scores = scorer.score(responses)
    for response, value in zip(responses, scores, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"{response.where}: {response.side}: the scorer gave {value}")
    return [
        replace(sample, score_chosen=scores[2 * i], score_rejected=scores[2 * i + 1])
        for i, sample in enumerate(samples)
    ]


def row_fields(source: Any, samples: Sequence[PreferenceSample]) -> list[dict[str, Any]]:
    """Each sample's source-row columns, found by its line: the raw row over its nested
    ``meta`` over the sample's meta."""
    from data_adapters import read_rows

    rows = {line: row for line, row in read_rows(source) if isinstance(row, dict)}
    fields = []
    for sample in samples:
        row = rows.get(sample.meta.get("line"), {})
        nested = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        fields.append({**sample.meta, **nested, **row})
    return fields


# ---------------------------------------------------------------------------- output


def check_output(out: str | os.PathLike, inputs: Sequence[Any], *, overwrite: bool) -> Path:
    """The output path, refused when it is one of ``inputs`` (always) or exists (unless
    ``overwrite``)."""
    path = Path(out).expanduser()
    for source in inputs:
        given = Path(os.fspath(source)).expanduser()
        same = path.resolve() == given.resolve()
        if not same and path.exists() and given.exists():
            same = os.path.samefile(path, given)
        if same:
            raise ValueError(f"{out}: is the input file {source}; choose another output file")
    if path.is_dir():
        raise ValueError(f"{out}: is a folder; the output is one JSONL file")
    if path.exists() and not overwrite:
        raise ValueError(f"{out}: exists; pass --overwrite to replace it")
    return path


def sample_row(sample: PreferenceSample, image_dir: Path, out_dir: Path) -> dict[str, Any]:
    """One output line in the TRL layout (images as paths; bytes and PIL images are saved
    under ``image_dir``, named relative to the output file's folder)."""
    row: dict[str, Any] = {
        "id": sample.id,
        "prompt": sample.prompt,
        "chosen": sample.chosen,
        "rejected": sample.rejected,
    }
    if sample.images:
        row["images"] = [
            _image_path(image, image_dir, out_dir, f"{sample.id}-{k}")
            for k, image in enumerate(sample.images)
        ]
    if sample.rejected_images is not None:
        row["rejected_images"] = [
            _image_path(image, image_dir, out_dir, f"{sample.id}-rejected-{k}")
            for k, image in enumerate(sample.rejected_images)
        ]
    row.update(
        score_chosen=sample.score_chosen,
        score_rejected=sample.score_rejected,
        modality=sample.modality,
        source=sample.source,
        meta=sample.meta,
    )
    return row


def _image_path(image: Any, image_dir: Path, out_dir: Path, stem: str) -> str:
    if isinstance(image, str):
        return image
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    suffix = (picture.format or "png").lower()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem)
    image_dir.mkdir(parents=True, exist_ok=True)
    path = image_dir / f"{safe}.{suffix}"
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        picture.save(path)
    return os.path.relpath(path, out_dir)


def write_samples(
    samples: Sequence[PreferenceSample],
    out: str | os.PathLike,
    *,
    inputs: Sequence[Any] = (),
    overwrite: bool = False,
) -> Path:
    """Write ``samples`` as JSONL in the TRL layout, atomically; never over an input."""
    path = check_output(out, inputs, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    out_dir = path.resolve().parent
    image_dir = out_dir / f"{path.name}.images"
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=out_dir, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            for sample in samples:
                row = sample_row(sample, image_dir, out_dir)
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------- command


def add_scorer_options(parser: argparse.ArgumentParser) -> None:
    """Options every scorer reads (shared by ``mmdpo score`` and ``mmdpo pairs``)."""
    parser.add_argument("--scorer", help=f"one of: {', '.join(SCORERS)}")
    parser.add_argument(
        "--max-length", type=int, default=2048, help="reward model: token cap (default 2048)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="reward model: run code it ships"
    )
    parser.add_argument(
        "--gold-field", help="math: the gold answer's column (default: answer, gold or gt)"
    )
    parser.add_argument(
        "--verify-timeout",
        type=float,
        default=5.0,
        help="math: seconds per answer check; 0 checks in-process without a limit (default 5)",
    )
    parser.add_argument(
        "--instructions-field",
        default="instruction_id_list",
        help="ifeval: the instruction ids' column (default instruction_id_list)",
    )
    parser.add_argument(
        "--kwargs-field", default="kwargs", help="ifeval: the checker arguments' column"
    )
    parser.add_argument("--loose", action="store_true", help="ifeval: loose instead of strict")
    parser.add_argument(
        "--objects-field", default="objects", help="objects: the known objects' column"
    )
    parser.add_argument(
        "--vocabulary", default="coco", help="objects: coco (default) or shapes (the demo world)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (never the input)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo score`` (the caller owns the parser and its help)."""
    parser.add_argument("input", metavar="IN", help="preference pairs (JSON/JSONL/Parquet)")
    parser.add_argument("out", metavar="OUT", help="output JSONL (TRL layout, with scores)")
    parser.add_argument("--format", default="trl", help="IN's adapter (default trl)")
    parser.add_argument("--columns", nargs="*", help="field=column pairs for --format columns")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="leave out invalid rows instead of failing"
    )
    parser.add_argument(
        "--model", dest="reward_model", help="reward_model: a sequence-classification model"
    )
    parser.add_argument("--dtype", dest="reward_dtype", help="reward_model: weights dtype")
    parser.add_argument("--batch-size", type=int, default=8, help="responses per batch (8)")
    parser.add_argument("--chosen-field", help="column: the chosen response's rating")
    parser.add_argument("--rejected-field", help="column: the rejected response's rating")
    add_scorer_options(parser)
    parser.set_defaults(reward_model_flag="--model")


def parse_columns(pairs: Sequence[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise ValueError(f"--columns: expected field=column pairs, got {' '.join(bad)}")
    return dict(pair.split("=", 1) for pair in pairs)


def run_score(args: argparse.Namespace) -> int:
    """Run ``mmdpo score``. User mistakes raise ValueError / FileNotFoundError."""
    from data_adapters import load_samples
    from data_adapters.loaders import is_hub_name

    if not args.scorer:
        raise ValueError(f"--scorer is required; valid scorers: {', '.join(SCORERS)}")
    spec = get_scorer(args.scorer)
    if not Path(args.input).expanduser().exists() and not is_hub_name(str(args.input)):
        raise FileNotFoundError(f"{args.input}: file not found")
    check_output(args.out, [args.input], overwrite=args.overwrite)
    result = load_samples(
        args.input,
        args.format,
        columns=parse_columns(args.columns),
        skip_invalid=args.skip_invalid,
    )
    samples = result.samples
    if not samples:
        raise ValueError(f"{args.input}: no valid pairs to score")
    scorer = spec.build(args)
    fields = row_fields(args.input, samples) if spec.needs_fields else [{} for _ in samples]
    scored = score_samples(samples, scorer, fields)
    out = write_samples(scored, args.out, inputs=[args.input], overwrite=args.overwrite)
    print(summarize(scored, spec.name, skipped=len(result.invalid)))
    print(f"wrote {out}")
    return 0


def summarize(samples: Sequence[PreferenceSample], scorer: str, skipped: int = 0) -> str:
    chosen = [s.score_chosen for s in samples]
    rejected = [s.score_rejected for s in samples]
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    ties = sum(c == r for c, r in zip(chosen, rejected, strict=True))
    text = (
        f"scored {len(samples)} pairs with {scorer}: mean chosen {statistics.fmean(chosen):.3f}, "
        f"mean rejected {statistics.fmean(rejected):.3f}; chosen > rejected in {wins} "
        f"({wins / len(samples):.1%}), ties {ties}"
    )
    if skipped:
        text += f"; {skipped} invalid rows left out"
    return text
