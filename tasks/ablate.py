"""``mmdpo ablate``: train the same pairs with several loss variants over several seeds.

    mmdpo ablate --task demo|smol-text|smol-math|config FILE --seeds 5 --out runs/ablate
                 [--variants uni_dpo,no_quality,...] [--jobs N] [--threads T] [key=value ...]

The task prepares everything the variants share once (base model, pairs, evaluation data)
under ``OUT/shared``; then each (variant, seed) trains in its own process into
``OUT/runs/VARIANT/seed-S`` and is evaluated there (``result.json`` marks it complete). The
seed sets the training order and the LoRA initialisation; the pairs are the same for all.
``OUT/ablation.md`` and ``OUT/ablation.json`` hold, per variant and metric, the mean, the
standard deviation and a 95% confidence interval over seeds, and the paired difference to
DPO with its interval. Running the same command again resumes: finished runs are kept, an
unfinished one starts over.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.ablate_tasks import TASKS, AblationTask, Metric, make_task

SWEEP_FILE = "sweep.json"
RESULT_FILE = "result.json"
BASELINE = "dpo"


@dataclass(frozen=True)
class Variant:
    """One column of the paper's ablation table (Peng et al. 2025, Table 5) or a peer loss.

    Attributes:
        label: how the table names it.
        overrides: config overrides applied on top of the task's Uni-DPO recipe.
    """

    label: str
    overrides: tuple[str, ...]


VARIANTS: dict[str, Variant] = {
    "uni_dpo": Variant("Uni-DPO", ()),
    "no_quality": Variant("w/o quality weight", ("loss.kwargs.use_quality_weight=false",)),
    "no_perf": Variant("w/o performance weight", ("loss.kwargs.use_perf_weight=false",)),
    "no_nll": Variant("w/o c-NLL", ("loss.kwargs.nll_lambda=0",)),
    "no_length_norm": Variant("w/o length normalisation", ("loss.length_normalized=false",)),
    # The peers with their own defaults (README: dpo beta 0.1 on summed log-probs; simpo
    # beta 2, gamma 1 on mean log-probs); loss.kwargs={} drops the Uni-DPO hyperparameters.
    "dpo": Variant("DPO", ("loss.name=dpo", "loss.kwargs={}", "loss.length_normalized=null")),
    "simpo": Variant(
        "SimPO",
        ("loss.name=simpo", "loss.kwargs={}", "loss.length_normalized=null", "reference.mode=none"),
    ),
}


class AblationError(ValueError):
    """A user mistake in the sweep's arguments (printed as one line, exit 2)."""


def parse_variants(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise AblationError(
            f"--variants: unknown {', '.join(unknown) or '(none given)'}; valid: "
            f"{', '.join(VARIANTS)}"
        )
    return list(dict.fromkeys(names))


def parse_seeds(text: str) -> list[int]:
    """``5`` -> seeds 0..4; ``0-9`` -> 0..9; ``1,3,7`` -> those."""
    try:
        if "-" in text:
            low, high = (int(part) for part in text.split("-", 1))
            seeds = list(range(low, high + 1))
        elif "," in text:
            seeds = [int(part) for part in text.split(",")]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise AblationError(f"--seeds {text!r}: expected N, A-B or a comma list") from None
    if not seeds or any(seed < 0 for seed in seeds):
        raise AblationError(f"--seeds {text!r}: expected at least one non-negative seed")
    return seeds


# ---------------------------------------------------------------- the sweep record


def sweep_record(args: argparse.Namespace, variants: list[str], seeds: list[int]) -> dict:
    """What defines the sweep; ``demo.*`` words are the demo world's options, the rest are
    engine overrides applied to every run."""
    demo_words = [w for w in args.words if w.startswith("demo.")]
    if demo_words and args.task != "demo":
        raise AblationError(f"{demo_words[0]}: demo.* options are for --task demo")
    return {
        "task": args.task,
        "config": str(Path(args.config).resolve()) if args.config else None,
        "overrides": [w for w in args.words if not w.startswith("demo.")],
        "task_options": {"n_prompts": args.n_prompts, "k": args.k, "demo_overrides": demo_words},
        "variants": variants,
        "seeds": seeds,
    }


def open_sweep(out: Path, record: dict) -> dict:
    """Write ``sweep.json``, or check that a resumed sweep is the same experiment.

    Variants and seeds may grow on a resume; anything that changes what a run means (task,
    config, overrides, task options) may not, since old and new runs would then be mixed.
    """
    path = out / SWEEP_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        for key in ("task", "config", "overrides", "task_options"):
            if old.get(key) != record[key]:
                raise AblationError(
                    f"{path}: this folder holds a sweep with {key} = {old.get(key)!r}, not "
                    f"{record[key]!r}; use another --out (runs of different settings are "
                    "never mixed)"
                )
        record = {
            **record,
            "variants": list(dict.fromkeys(old["variants"] + record["variants"])),
            "seeds": sorted(set(old["seeds"]) | set(record["seeds"])),
        }
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    tmp.replace(path)
    return record


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / variant / f"seed-{seed}"


def read_result(folder: Path) -> dict | None:
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- one run (a worker process)


def run_one(out: Path, variant: str, seed: int, threads: int) -> dict:
    """Train one (variant, seed) and evaluate it; writes ``result.json`` last (atomically)."""
    import torch

    import mmdpo
    from mmdpo.config import load_config

    torch.set_num_threads(threads)
    record = json.loads((out / SWEEP_FILE).read_text(encoding="utf-8"))
    task = make_task(record["task"], record["config"], record["task_options"])
    folder = run_dir(out, variant, seed)
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished run (no result.json) starts over
    folder.mkdir(parents=True)
    started = time.perf_counter()
    overrides = [
        "train.samples=0",  # the sweep's own evaluation stands for each run
        *record["overrides"],
        *VARIANTS[variant].overrides,
        f"train.seed={seed}",
        f"train.output_dir={folder / 'train'}",
    ]
    config = load_config(task.base_config(out / "shared"), overrides)
    samples = task.train_samples(out / "shared")
    trained = mmdpo.train(config, samples) if samples is not None else mmdpo.train(config)
    train_s = time.perf_counter() - started
    metrics = task.evaluate(out / "shared", trained, threads=threads)
    result = {
        "variant": variant,
        "seed": seed,
        "metrics": metrics,
        "train_s": round(train_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "checkpoint": str(trained.final_checkpoint),
    }
    tmp = folder / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    tmp.replace(folder / RESULT_FILE)
    return result


# ---------------------------------------------------------------- the scheduler


def _worker_command(out: Path, variant: str, seed: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tasks.ablate",
        "--worker",
        str(out),
        variant,
        str(seed),
        str(threads),
    ]


def run_pending(out: Path, pending: list[tuple[str, int]], jobs: int, threads: int) -> list[str]:
    """Run the pending (variant, seed) pairs, ``jobs`` processes at a time; return failures."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    queue = list(pending)
    running: dict[subprocess.Popen, tuple[str, int, float, Any]] = {}
    failures: list[str] = []
    done = 0
    try:
        while queue or running:
            while queue and len(running) < jobs:
                variant, seed = queue.pop(0)
                folder = run_dir(out, variant, seed)
                folder.parent.mkdir(parents=True, exist_ok=True)
                log = open(folder.parent / f"seed-{seed}.log", "w", encoding="utf-8")  # noqa: SIM115
                process = subprocess.Popen(
                    _worker_command(out, variant, seed, threads),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                running[process] = (variant, seed, time.perf_counter(), log)
            time.sleep(0.5)
            for process in [p for p in running if p.poll() is not None]:
                variant, seed, started, log = running.pop(process)
                log.close()
                done += 1
                took = time.perf_counter() - started
                status = (
                    "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
                )
                print(
                    f"  [{done}/{len(pending)}] {variant} seed {seed}: {status} in {took:.0f} s",
                    flush=True,
                )
                if process.returncode != 0:
                    failures.append(f"{variant} seed {seed}: see {log.name}")
    except KeyboardInterrupt:
        for process in running:
            process.terminate()
        print(f"interrupted; run the same command again to resume ({out})", file=sys.stderr)
        raise
    return failures


# ---------------------------------------------------------------- the table


def collect(out: Path, variants: list[str], seeds: list[int]) -> dict[str, dict[int, dict]]:
    """{variant: {seed: metrics}} for every finished run."""
    table: dict[str, dict[int, dict]] = {}
    for variant in variants:
        for seed in seeds:
            result = read_result(run_dir(out, variant, seed))
            if result is not None:
                table.setdefault(variant, {})[seed] = result["metrics"]
    return table


def _finite(by_seed: dict[int, dict], key: str) -> dict[int, float]:
    return {
        seed: float(metrics[key])
        for seed, metrics in by_seed.items()
        if metrics.get(key) is not None and not math.isnan(float(metrics[key]))
    }


def summarize_sweep(
    results: dict[str, dict[int, dict]], metrics: list[Metric], before: dict[str, float] | None
) -> dict:
    """Per variant and metric: summary over seeds and the paired difference to DPO."""
    from dataclasses import asdict

    from eval.stats import paired_difference, summarize

    rows: dict[str, Any] = {}
    baseline = results.get(BASELINE, {})
    for variant, by_seed in results.items():
        row: dict[str, Any] = {"label": VARIANTS[variant].label, "seeds": sorted(by_seed)}
        for metric in metrics:
            # An undefined metric on a run (NaN: e.g. F1 with no positive answer) is left out
            # of that metric's seeds, which its n then shows.
            values = _finite(by_seed, metric.key)
            if not values:
                continue
            entry = {"summary": asdict(summarize(list(values.values())))}
            base = _finite(baseline, metric.key)
            if variant != BASELINE and set(values) & set(base):
                entry["vs_dpo"] = asdict(paired_difference(values, base))
            row[metric.key] = entry
        rows[variant] = row
    return {"before": before, "variants": rows}


def format_table(summary: dict, metrics: list[Metric]) -> str:
    """A markdown table: one row per variant, 'mean ± std [95% CI]' and 'Δ vs DPO [95% CI]'."""
    header = ["variant", "n"]
    for metric in metrics:
        arrow = "↑" if metric.higher_is_better else "↓"
        header += [f"{metric.label} {arrow}", "Δ vs DPO"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    before = summary.get("before") or {}
    if before:
        cells = ["before training", "-"]
        for metric in metrics:
            value = before.get(metric.key)
            cells += [f"{value:.3f}" if value is not None else "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    for row in summary["variants"].values():
        cells = [row["label"], str(len(row["seeds"]))]
        for metric in metrics:
            entry = row.get(metric.key)
            if entry is None:
                cells += ["", ""]
                continue
            s = entry["summary"]
            cell = f"{s['mean']:.3f} ± {s['std']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"
            if s["n"] != len(row["seeds"]):
                cell += f" (n={s['n']})"
            cells.append(cell)
            d = entry.get("vs_dpo")
            if d is None:
                cells.append("")
            else:
                mark = " *" if d["n"] >= 2 and (d["low"] > 0 or d["high"] < 0) else ""
                cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLE_NOTE = (
    "mean ± std over seeds [95% CI of the mean, Student t]; Δ vs DPO: paired by seed, "
    "[95% CI]; * = the interval excludes 0."
)


def write_tables(out: Path, task: AblationTask, record: dict) -> str:
    results = collect(out, record["variants"], record["seeds"])
    summary = summarize_sweep(results, task.metrics, task.before(out / "shared"))
    table = format_table(summary, task.metrics)
    (out / "ablation.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "ablation.md").write_text(f"{table}\n\n{TABLE_NOTE}\n", encoding="utf-8")
    return f"{table}\n\n{TABLE_NOTE}"


def report_table(table_markdown: str) -> dict[str, Any]:
    """The markdown table as the report's extra table (title, columns, rows, note)."""
    lines = [line for line in table_markdown.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {"title": "Ablation", "columns": cells[0], "rows": cells[2:], "note": TABLE_NOTE}


def write_sweep_report(out: Path) -> Path | None:
    """``OUT/report.html``: every run's curves overlaid, and the ablation table."""
    from mmdpo.report import write_report

    if not (out / "runs").is_dir():
        return None
    table = (out / "ablation.md").read_text(encoding="utf-8").split("\n\n")[0]
    return write_report(
        [out / "runs"], out / "report.html", title=f"mmdpo ablate: {out.name}",
        extra_tables=[report_table(table)],
    )  # fmt: skip


# ---------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", required=True, choices=sorted(TASKS), help="what to train and evaluate"
    )
    parser.add_argument("--config", help="the training config for --task config (Uni-DPO)")
    parser.add_argument("--out", default="runs/ablate", help="sweep folder (resumable)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma list (default: all): {', '.join(VARIANTS)}",
    )
    parser.add_argument("--seeds", default="3", help="N (seeds 0..N-1), A-B, or a comma list")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: cores)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--n-prompts", type=int, default=None, help="smol tasks: train prompts")
    parser.add_argument("--k", type=int, default=None, help="smol tasks: samples per prompt")
    parser.add_argument("words", nargs="*", help="dotted overrides for every run")


def run(args: argparse.Namespace) -> int:
    variants = parse_variants(args.variants)
    seeds = parse_seeds(str(args.seeds))
    if args.task == "config" and not args.config:
        raise AblationError("--task config needs --config FILE (a Uni-DPO training config)")
    if args.threads < 1 or (args.jobs is not None and args.jobs < 1):
        raise AblationError("--jobs and --threads must be at least 1")
    out = Path(args.out)
    record = open_sweep(out, sweep_record(args, variants, seeds))
    task = make_task(record["task"], record["config"], record["task_options"])
    task.check(record["overrides"], variants)
    jobs = args.jobs or max(1, (os.cpu_count() or 1) // args.threads)
    print(f"mmdpo ablate -> {out}: task {args.task}, {len(variants)} variants x {len(seeds)} seeds")
    started = time.perf_counter()
    task.prepare(out / "shared")
    pending = [
        (variant, seed)
        for variant in variants
        for seed in seeds
        if read_result(run_dir(out, variant, seed)) is None
    ]
    kept = len(variants) * len(seeds) - len(pending)
    print(f"{len(pending)} runs to do ({kept} finished earlier), {jobs} at a time")
    failures = run_pending(out, pending, jobs, args.threads)
    print()
    print(write_tables(out, task, record))
    print(f"\ntable: {out / 'ablation.md'}; total {time.perf_counter() - started:.0f} s")
    try:
        print(f"report: {write_sweep_report(out)}")
    except Exception as err:  # a finished sweep is never failed by its page
        if os.environ.get("MMDPO_DEBUG"):
            raise
        print(f"report: not written ({type(err).__name__}: {err})", file=sys.stderr)
    if failures:
        print("failed runs (run the command again to retry them):", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _worker_main(argv: list[str]) -> int:
    out, variant, seed, threads = argv
    result = run_one(Path(out), variant, int(seed), int(threads))
    print(json.dumps(result["metrics"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("use `mmdpo ablate`")
