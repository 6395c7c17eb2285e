"""``mmdpo pairs``: sample K responses per prompt from a model, score them, build pairs.

    mmdpo pairs problems.jsonl pairs.jsonl --model runs/math --k 8             # the paper's math
    mmdpo pairs prompts.jsonl pairs.jsonl --model M --task text --scorer reward_model \
        --reward-model RM --k 8 --temperature 0.8

Math (the paper's pipeline, datagen/math_pairs.py): each response is checked against
the gold answer with math-verify; chosen = the best-scoring correct response scoring above
``--min-chosen-score``, rejected = a lower-scoring correct one, else an incorrect one. Scores
are the rule score (10 correct, 0 not) unless ``--scorer`` names another (e.g. a reward model).
Other tasks: every response is rated by ``--scorer`` and the best is paired with the worst.
Responses are deduplicated first, so a pair never holds one response twice.

Writes OUT (the layout of ``mmdpo score``'s output) and ``OUT.report.json`` (the counts).
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path
from typing import Any

from datagen.math_pairs import MathProblem, build_math_pairs, grade_responses
from datagen.output import check_output, write_samples
from datagen.pairing import BestVsWorst, Candidate, PairReport, ResponseGroup, build_pairs
from datagen.prompts import PromptItem, read_prompts
from datagen.registry import add_scorer_options, get_scorer, verify_timeout
from datagen.scorers import MathScorer, Response
from mmdpo.types import PreferenceSample

TASK_NAMES = ("math", "text", "vision")


def sample_responses(
    loaded: Any,
    items: list[PromptItem],
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> tuple[list[list[str]], dict[str, Any]]:
    """K sampled responses per prompt (``loaded``: an ``mmdpo.inference.InferenceModel``)."""
    from eval.base import Prompt

    prompts = [Prompt(item.prompt, list(item.images)) for item in items]
    responses, stats = loaded.generate(
        prompts,
        max_new_tokens=max_new_tokens,
        num_samples=k,
        batch_size=batch_size,
        greedy=False,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        progress=progress,
        desc="sampling",
    )
    return [responses[i * k : (i + 1) * k] for i in range(len(items))], stats


# ---------------------------------------------------------------------------- pairing


def best_vs_worst(
    items: list[PromptItem],
    responses: list[list[str]],
    scores: list[list[float]],
    *,
    modality: str,
    source: str,
) -> tuple[list[PreferenceSample], PairReport]:
    """One pair per prompt: its best response (highest score, earliest on ties) against its
    worst (lowest score, earliest on ties), after dropping empty and repeated responses
    (whitespace-normalised, first copy kept) and NaN scores; no pair when they tie."""
    groups = [
        ResponseGroup(
            id=item.id,
            prompt=item.prompt,
            responses=texts,
            modality=modality if item.images or modality != "vision" else "text",
            images=list(item.images),
            meta={**item.extras(), "prompt_id": item.id},
        )
        for item, texts in zip(items, responses, strict=True)
    ]

    def rate(_: Any, candidates: list[list[Candidate]]) -> None:
        for values, distinct in zip(scores, candidates, strict=True):
            for candidate in distinct:
                candidate.score = float(values[candidate.index])

    return build_pairs(groups, rate, BestVsWorst(), source=source)


def _responses(item: PromptItem, texts: list[str]) -> list[Response]:
    return [Response(item.prompt, text, item.fields, item.where) for text in texts]


def score_all(
    scorer: Any, items: list[PromptItem], responses: list[list[str]]
) -> list[list[float]]:
    """Every response rated in one scorer call (batched), regrouped per prompt."""
    flat = [
        r for item, texts in zip(items, responses, strict=True) for r in _responses(item, texts)
    ]
    values = iter(scorer.score(flat))
    return [[next(values) for _ in texts] for texts in responses]


def gold_answers(items: list[PromptItem], gold_field: str | None) -> list[str]:
    """Each prompt's gold answer (``--gold-field``, else answer, gold or gt); a missing one
    raises ``FILE:LINE: ...: missing field``."""
    return [MathScorer(gold_field).gold(_responses(item, [""])[0]) for item in items]


def math_pairs(
    items: list[PromptItem],
    golds: list[str],
    responses: list[list[str]],
    scores: list[list[float]] | None,
    *,
    min_chosen_score: float,
    source: str,
    timeout_s: float | None,
) -> tuple[list[PreferenceSample], dict[str, Any]]:
    """The paper's math rule (datagen.math_pairs) over the sampled responses, and the counts.

    Every response is graded once, copies included (``correct_responses`` counts them all);
    the builder reuses those grades.
    """
    jobs = [(text, gold) for gold, texts in zip(golds, responses, strict=True) for text in texts]
    graded = iter(grade_responses(jobs, timeout_s=timeout_s))
    grades = [[next(graded) for _ in texts] for texts in responses]
    problems = [
        MathProblem(
            id=item.id,
            prompt=item.prompt,
            gold=gold,
            responses=texts,
            scores=None if scores is None else scores[index],
            meta=item.extras(),
        )
        for index, (item, gold, texts) in enumerate(zip(items, golds, responses, strict=True))
    ]
    result = build_math_pairs(
        problems, min_chosen_score=min_chosen_score, source=source, grades=grades
    )
    counts = result.report.counts()
    counts["correct_responses"] = sum(correct for row in grades for correct, _ in row)
    return result.samples, counts


# ---------------------------------------------------------------------------- command


def add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo pairs`` (the caller owns the parser and its help)."""
    parser.add_argument("prompts", metavar="PROMPTS", help="prompts file (JSON/JSONL/Parquet)")
    parser.add_argument("out", metavar="OUT", help="output pairs JSONL (TRL layout, with scores)")
    parser.add_argument("--model", required=True, help="model folder, hub id or mmdpo run folder")
    parser.add_argument("--adapter", help="mmdpo run (or checkpoint) whose adapter goes on --model")
    parser.add_argument("--dtype", help="policy weights dtype (default: the run's; fp32 on CPU)")
    parser.add_argument("--k", type=int, default=8, help="responses sampled per prompt (8)")
    parser.add_argument("--task", default="math", help=f"one of {', '.join(TASK_NAMES)} (math)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1.0: off)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap per response (512)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="sequences decoded at once, a prompt's K samples counting K (32); larger is "
        "faster until the KV cache (batch x (prompt + max new tokens) tokens) fills memory",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument(
        "--min-chosen-score", type=float, default=6.0, help="math: chosen must score above (6)"
    )
    parser.add_argument("--source", default="pairs", help="the pairs' source name (pairs)")
    parser.add_argument("--reward-model", help="reward_model scorer: the model to rate with")
    parser.add_argument("--reward-dtype", help="reward_model scorer: weights dtype")
    parser.add_argument(
        "--save-responses",
        action="store_true",
        help="also write every response to OUT.responses.jsonl",
    )
    add_scorer_options(parser)
    parser.set_defaults(reward_model_flag="--reward-model")


def _check_options(args: argparse.Namespace) -> Any:
    """The scorer spec (or None), after checking the options; raises ValueError."""
    if args.task not in TASK_NAMES:
        raise ValueError(f"unknown task {args.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
    if args.k < 2:
        raise ValueError(f"--k must be at least 2 to make a pair, got {args.k}")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise ValueError("--max-new-tokens and --batch-size must be at least 1")
    if args.temperature <= 0:
        raise ValueError(f"--temperature must be above 0 for sampling, got {args.temperature}")
    if args.scorer is None:
        if args.task != "math":
            raise ValueError(
                f"--task {args.task} needs --scorer (reward_model, ifeval, objects or math)"
            )
        return None
    spec = get_scorer(args.scorer)
    if spec.name == "column":
        raise ValueError("the column scorer copies existing ratings; it cannot rate new responses")
    return spec


def run_pairs(args: argparse.Namespace) -> int:
    """Run ``mmdpo pairs``. User mistakes raise ValueError / FileNotFoundError."""
    from mmdpo.inference import InferenceModel

    spec = _check_options(args)
    if not Path(args.prompts).expanduser().is_file():
        raise FileNotFoundError(f"{args.prompts}: file not found")
    outputs = [args.out, f"{args.out}.report.json"]
    if args.save_responses:
        outputs.append(f"{args.out}.responses.jsonl")
    for path in outputs:
        check_output(path, [args.prompts], overwrite=args.overwrite)
    items = read_prompts(args.prompts)
    # every gold answer before any model is loaded
    golds = gold_answers(items, args.gold_field) if args.task == "math" else None

    loaded = InferenceModel.load(args.model, args.adapter, dtype=args.dtype)
    responses, stats = sample_responses(
        loaded,
        items,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    base, adapter = loaded.base, loaded.adapter
    del loaded  # free the policy before a reward model loads
    gc.collect()

    if args.task == "math" and spec is not None and spec.name == "math":
        spec = None  # the builder's own rule score: 10 correct, 0 not
    scorer = spec.build(args) if spec is not None else None
    scores = score_all(scorer, items, responses) if scorer is not None else None
    if golds is not None:
        samples, counts = math_pairs(
            items,
            golds,
            responses,
            scores,
            min_chosen_score=args.min_chosen_score,
            source=args.source,
            timeout_s=verify_timeout(args),
        )
    else:
        samples, report = best_vs_worst(
            items, responses, scores, modality=args.task, source=args.source
        )
        counts = report.counts()
    write_samples(samples, args.out, inputs=[args.prompts], overwrite=args.overwrite)
    if args.save_responses:
        _write_responses(Path(outputs[2]), items, responses, scores)
    report = _report(args, spec, base, adapter, counts, stats)
    Path(outputs[1]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_report(counts))
    if not samples:
        print(f"note: no pair was built, so {args.out} is empty (see the counts above)")
    print(f"wrote {args.out} and {outputs[1]}")
    return 0


def _report(
    args: argparse.Namespace,
    spec: Any,
    base: str,
    adapter: str | None,
    counts: dict[str, Any],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """OUT.report.json: the settings, the counts and the generation statistics."""
    return {
        "prompts_file": str(args.prompts),
        "out": str(args.out),
        "model": str(args.model),
        "base_model": base,
        "adapter": adapter,
        "task": args.task,
        "scorer": spec.name if spec is not None else "math (rule: 10 correct, 0 not)",
        "k": args.k,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "min_chosen_score": args.min_chosen_score if args.task == "math" else None,
        "counts": counts,
        "generation": stats,
    }


def format_report(counts: dict[str, Any]) -> str:
    head = (
        f"{counts['prompts']} prompts, {counts['responses']} "
        f"responses -> {counts['pairs']} pairs ({counts['no_pair']} prompts without a pair)"
    )
    rest = ", ".join(
        f"{key}: {value}"
        for key, value in counts.items()
        if key not in ("prompts", "responses", "pairs", "no_pair")
    )
    return f"{head}\n  {rest}"


def _write_responses(
    path: Path,
    items: list[PromptItem],
    responses: list[list[str]],
    scores: list[list[float]] | None,
) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for index, (item, texts) in enumerate(zip(items, responses, strict=True)):
            row = {"id": item.id, "responses": texts}
            if scores is not None:
                row["scores"] = scores[index]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
