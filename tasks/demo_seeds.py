"""``mmdpo demo --seeds 0-9``: the demo once per seed, one after another, and its spread.

Each seed is a whole demo run in ``<out>/seed-<N>`` (``demo.seed=N``: the model's
initialisation, the SFT order and the alignment runs; the data is the same for every seed).
The spread of every metric of every column (mean ± standard deviation over the seeds, and
min–max) is printed and written to ``<out>/seeds.json`` and ``<out>/seeds.md`` together with
the per-seed numbers and times.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from mmdpo.config import ConfigError
from tasks.base import jsonable
from tasks.demo import COLUMN_TITLES, METRICS, prepare_out_dir, run_demo

SUMMARY_FILES = ("seeds.json", "seeds.md")
# Per-seed columns printed on the terminal (all metrics go to seeds.md).
SHORT = (("pope", "accuracy", "POPE acc."), ("pope", "yes_ratio", "yes-ratio"))
SHORT += (("chair", "chair_s", "CHAIR_s"),)


def parse_seeds(text: str) -> list[int]:
    """'0-9' -> [0, ..., 9]; '1,3,5' -> [1, 3, 5]; mixed: '0-2,7'."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if last < first:
                raise ValueError
            seeds += range(first, last + 1)
    except ValueError:
        raise ConfigError(
            f"--seeds: expected a range or a list like 0-9 or 1,3,5; got {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice in {text!r}")
    return seeds


def run_demo_seeds(
    out_dir: str | Path,
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    compare: str | None = None,
) -> int:
    """Run the demo for each seed into ``<out>/seed-<N>``, then print and save the spread."""
    out_dir = Path(out_dir)
    if any(word.startswith("demo.seed=") for word in overrides):
        raise ConfigError("--seeds and demo.seed=... both set the seed; give one of them")
    prepare_out_dir(out_dir, owned=tuple(f"seed-{seed}" for seed in seeds) + SUMMARY_FILES)
    runs = {}
    for seed in seeds:
        print(f"=== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) ===")
        folder = out_dir / f"seed-{seed}"
        run_demo(folder, [*overrides, f"demo.seed={seed}"], compare=compare)
        runs[seed] = json.loads((folder / "demo_results.json").read_text())
        print()
    summary = seed_summary(runs)
    (out_dir / "seeds.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    (out_dir / "seeds.md").write_text(seeds_markdown(summary) + "\n")
    print(format_spread(summary))
    print(f"\nper seed: {out_dir / 'seeds.md'}; all numbers: {out_dir / 'seeds.json'}")
    return 0


def seed_summary(runs: dict[int, dict]) -> dict:
    """Per-seed metrics and times, and per column and metric: mean, std, min, max."""
    columns = list(next(iter(runs.values()))["results"])
    spread: dict[str, dict[str, dict[str, float]]] = {}
    for column in columns:
        spread[column] = {}
        for bench, metric, _, _ in METRICS:
            key = f"{bench}/{metric}"
            values = [run["results"][column][key] for run in runs.values()]
            spread[column][key] = describe(values)
    times = [run["timings_s"]["total"] for run in runs.values()]
    cpu = [run["timings_s"].get("cpu_total") for run in runs.values()]
    return {
        "seeds": list(runs),
        "columns": columns,
        "per_seed": {
            seed: {
                "results": run["results"],
                "timings_s": run["timings_s"],
                "grounding_steps": run.get("grounding", {}).get("steps"),
                "load_average": run.get("load_average"),
            }
            for seed, run in runs.items()
        },
        "spread": spread,
        "wall_s": describe(times),
        "cpu_s": describe(cpu) if None not in cpu else None,
    }


def describe(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def _title(column: str) -> str:
    return COLUMN_TITLES.get(column, column.upper())


def _spread_cell(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} [{stats['min']:.3f}–{stats['max']:.3f}]"


def format_spread(summary: dict) -> str:
    """The per-seed short table, then mean ± std [min–max] of every metric per column."""
    columns = summary["columns"]
    head = ["seed"] + [f"{label} {_title(c)}" for _, _, label in SHORT for c in columns]
    rows = [head]
    for seed, run in summary["per_seed"].items():
        cells = [f"{run['results'][c][f'{b}/{m}']:.3f}" for b, m, _ in SHORT for c in columns]
        rows.append([str(seed), *cells])
    lines = _aligned(rows)
    seeds = summary["seeds"]
    lines += ["", f"over {len(seeds)} seeds ({_seed_text(seeds)}): mean ± std [min–max]"]
    rows = [["metric", *(_title(c) for c in columns)]]
    for bench, metric, label, _ in METRICS:
        rows.append(
            [label, *(_spread_cell(summary["spread"][c][f"{bench}/{metric}"]) for c in columns)]
        )
    lines += _aligned(rows)
    wall = summary["wall_s"]
    lines.append(f"time per seed: {wall['mean']:.0f} s wall [{wall['min']:.0f}–{wall['max']:.0f}]")
    if summary["cpu_s"]:
        cpu = summary["cpu_s"]
        lines[-1] += f", {cpu['mean']:.0f} s CPU [{cpu['min']:.0f}–{cpu['max']:.0f}]"
    return "\n".join(lines)


def seeds_markdown(summary: dict) -> str:
    """Markdown: the spread table, then every metric of every column per seed."""
    columns = summary["columns"]
    lines = [f"Seeds {_seed_text(summary['seeds'])}: mean ± std [min–max]", ""]
    lines += [
        "| metric | " + " | ".join(_title(c) for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for bench, metric, label, _ in METRICS:
        cells = [_spread_cell(summary["spread"][c][f"{bench}/{metric}"]) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    head = ["seed"] + [f"{label} {_title(c)}" for _, _, label, _ in METRICS for c in columns]
    extra = ["grounding steps", "wall s", "CPU s", "load avg."]
    lines += ["", "| " + " | ".join(head + extra) + " |"]
    lines.append("|---:|" + "---:|" * (len(head) + len(extra) - 1))
    for seed, run in summary["per_seed"].items():
        cells = [f"{run['results'][c][f'{b}/{m}']:.3f}" for b, m, _, _ in METRICS for c in columns]
        timing = run["timings_s"]
        cpu = timing.get("cpu_total")
        load = run.get("load_average") or {}
        loads = [load.get("start"), load.get("end")]
        cells += [
            str(run.get("grounding_steps") or ""),
            f"{timing['total']:.0f}",
            "" if cpu is None else f"{cpu:.0f}",
            "" if None in loads else f"{loads[0]:.1f}–{loads[1]:.1f}",
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_text(seeds: Sequence[int]) -> str:
    contiguous = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 1 else ",".join(map(str, seeds))


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return [line.rstrip() for line in lines]
