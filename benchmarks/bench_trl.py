"""mmdpo against TRL's DPOTrainer: the same model, data, LoRA, batch, lengths, loss (sigmoid DPO)
and steps; throughput and peak memory, medians over alternating runs; RESULTS.md.

    python benchmarks/bench_trl.py                 # the original cases, 3 runs of each arm
    python benchmarks/bench_trl.py --quick         # the same, shrunk: a smoke test
    python benchmarks/bench_trl.py --cases scaling # how cost grows: images, prompt length, skew
    python benchmarks/bench_trl.py --cases text-adapter_off,text-precomputed --repeats 5

Every run is a fresh process (so the peak memory is that run's), and the arms (mmdpo in each
of its layouts, and TRL) alternate. Before timing a case, ``check.py`` runs each arm's first
optimizer step and compares token ids, loss and LoRA gradients with TRL's; only arms that pass
are timed. Results go to RESULTS.md (and runs.jsonl in the work folder, one line per run).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from arms import LABELS, MMDPO_ARMS, TRL, arm_overrides, missing_settings, parse_arms  # noqa: E402
from cases import CASES, GROUPS, Case, select  # noqa: E402
from provenance import machine, merge_earlier, versions  # noqa: E402

# ------------------------------------------------------------------------- child processes


def child_main(mode: str, spec_path: Path, result_path: Path) -> None:
    """Runs in a fresh process: one of prepare / peak / check / run."""
    sys.path.insert(0, str(REPO))
    spec = json.loads(spec_path.read_text())
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    if mode == "prepare":
        from prepare import prepare

        result = prepare(spec)
    elif mode == "peak":
        result = _peak()
    elif mode == "check":
        from check import run_side

        result = run_side(spec)
    else:
        result = _run(spec)
    result_path.write_text(json.dumps(result))


def _peak() -> dict[str, Any]:
    import torch
    from flops import datasheet_bf16, matmul_peak

    peak = {
        "fp32": matmul_peak(torch.float32),
        "bf16": matmul_peak(torch.bfloat16),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        peak["datasheet_bf16"] = datasheet_bf16(torch.cuda.get_device_name(0))
    return peak


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    """A timed run; with ``check_spec`` (``--check-in-run``) the arm's check side first."""
    import runners
    import torch

    out: dict[str, Any] = {}
    if spec.get("check_spec"):
        from check import run_side

        out["check"] = run_side(spec["check_spec"])
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return {**out, **runners.RUNNERS[spec["engine"]](spec)}


def cached_result(work: Path, tag: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """A check's earlier result for exactly the same spec (delete the work folder to redo)."""
    spec_path, result_path = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    if spec_path.is_file() and result_path.is_file():
        if json.loads(spec_path.read_text()) == spec:
            result = json.loads(result_path.read_text())
            if Path(result.get("grads_path", spec_path)).is_file():
                return result
    return None


def spawn(mode: str, spec: dict[str, Any], work: Path, tag: str, log) -> dict[str, Any] | None:
    spec_path = work / f"{tag}.spec.json"
    result_path = work / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(spec_path)]
    command.append(str(result_path))
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    log.write(f"## {tag} ({mode}) rc={proc.returncode} {time.perf_counter() - started:.1f}s\n")
    log.write(proc.stdout[-4000:] + proc.stderr[-4000:] + "\n")
    log.flush()
    if proc.returncode != 0 or not result_path.is_file():
        print(f"  {tag}: FAILED (rc={proc.returncode}); see the log", flush=True)
        return None
    return json.loads(result_path.read_text())


# ------------------------------------------------------------------------------- analysis


def steady_state(
    result: dict[str, Any], flops_per_step: list[float], tokens_per_step: list[int] | None = None
) -> dict[str, float]:
    """Throughput over steps 2..N (step 1 warms up): pairs/s, tokens/s, FLOP/s.

    Tokens are the non-padding tokens of the two rows of each pair (``tokens_per_step``, from
    the prepared layout), the same count for every arm; without it, the engine's own count."""
    ends = result["step_ends"]
    tokens = tokens_per_step or result["step_tokens"]
    seconds = ends[-1] - ends[0]
    measured = len(ends) - 1
    cpu = result.get("step_cpu") or [0.0, 0.0]
    cpu_seconds = max(cpu[-1] - cpu[0], 1e-9)
    return {
        "cpu_pairs_per_s": result["pairs_per_step"] * measured / cpu_seconds,
        "cpu_step_s": cpu_seconds / measured,
        "pairs_per_s": result["pairs_per_step"] * measured / seconds,
        "tokens_per_s": sum(tokens[1 : len(ends)]) / seconds,
        "engine_tokens_per_s": sum(result["step_tokens"][1:]) / seconds,
        "flops_per_s": sum(flops_per_step[1 : len(ends)]) / seconds,
        "peak_mib": result["peak_memory_bytes"] / 2**20,
        "step_s": seconds / measured,
        "total_s": result["total_s"],
    }


def case_tokens(info: dict[str, Any], batch: int, steps: int) -> list[int]:
    """Per step: the non-padding tokens of the two-row layout (prompt twice)."""
    chunks = [info["layout"][step * batch : (step + 1) * batch] for step in range(steps)]
    return [sum(sum(pair["rows"]) for pair in chunk) for chunk in chunks]


def case_flops(info: dict[str, Any], precomputed: bool, batch: int, steps: int) -> list[float]:
    from flops import step_flops

    out = []
    for step in range(steps):
        chunk = info["layout"][step * batch : (step + 1) * batch]
        rows = [length for pair in chunk for length in pair["rows"]]
        patches = [p for pair in chunk for p in pair["patches"]]
        out.append(step_flops(info["shape"], rows, patches, precomputed))
    return out


def median_of(runs: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in runs]
    return statistics.median(values) if values else None


# -------------------------------------------------------------------------------- report


def write_report(path: Path, state: dict[str, Any]) -> None:
    """The report, its plot, and its state beside it (``RESULTS.json``) for a later ``--merge``."""
    from report import render

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(state, plot_path=_plot(path, state)), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def _plot(path: Path, state: dict[str, Any]) -> Path | None:
    from plot import plot_scaling

    return plot_scaling(state, path.with_name(path.stem + "-scaling.png"))


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated case or group names (default: the original twelve; --quick:"
        " text-adapter_off,qwen2_vl-adapter_off). Groups: "
        + ", ".join(GROUPS)
        + ". Cases: "
        + ", ".join(CASES),
    )
    parser.add_argument(
        "--arms",
        default=None,
        help="mmdpo layouts to run, comma-separated (default all: "
        + ", ".join(MMDPO_ARMS)
        + "); TRL runs wherever it accepts the case. An arm whose engine setting this build"
        " lacks is reported as not available",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs of each arm per case (default 3; --quick 1)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps per run (default 4; --quick 3; the first is warm-up)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="pairs per step (default 2; a scaling workload's own, e.g. 8 for skewed)",
    )
    parser.add_argument(
        "--preset",
        choices=("full", "quick", "tiny", "gpu1b"),
        default=None,
        help="model and length sizes (default full; --quick: quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset, 1 run each, report in the work folder: a smoke test",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="weights and compute of the timed runs (the check is always float32)",
    )
    _run_options(parser)
    return parser.parse_args(argv)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-4bit", action="store_true", help="leave out the 4-bit cases")
    parser.add_argument(
        "--no-trl-runs",
        default="",
        help="comma-separated cases where TRL is checked against but not timed (its step would"
        " not fit this machine's memory or time; the report shows no TRL run)",
    )
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="run the same-work checks and stop (no timed runs)",
    )
    parser.add_argument(
        "--skip-check",
        action="store_true",
        help="time every arm without the same-work check (the report says so)",
    )
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="redo checks whose result is already in the work folder",
    )
    parser.add_argument(
        "--check-in-run",
        action="store_true",
        help="each arm's first run does its check side first, in the same process"
        " (one process start less per arm: for a GPU, where the peak memory is"
        " reset between the two; on CPU the peak RSS would include the check)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: torch's own); 1 on a shared machine",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the report (default benchmarks/RESULTS.md; --quick: in the work folder)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/tmp/mmdpo-bench"), help="models, data, runs"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="an earlier run's state (e.g. benchmarks/RESULTS.json): its cases that"
        " this run does not measure are kept, marked with their own command and date",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only write the report (and plot) again from a saved state, e.g. after editing"
        " analysis.md: --render benchmarks/RESULTS.json",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "SPEC", "RESULT"), help=argparse.SUPPRESS
    )


class Bench:
    """One benchmark run: the plan (cases, arms, sizes), the checks, the timed runs, the state."""

    def __init__(self, args: argparse.Namespace, argv: list[str] | None):
        self.args = args
        self.preset = args.preset or ("quick" if args.quick else "full")
        self.repeats = 0 if args.check_only else args.repeats or (1 if args.quick else 3)
        self.steps = args.steps or (3 if args.quick else 4)
        names = select(args.cases, args.quick)
        self.cases = [
            CASES[n] for n in names if not (args.no_4bit and CASES[n].quantization != "none")
        ]
        self.arms = parse_arms(args.arms)
        self.overrides = {arm: arm_overrides(arm) for arm in self.arms}
        self.work = args.work_dir / self.preset
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = args.out or (self.work / "RESULTS.md" if args.quick else HERE / "RESULTS.md")
        self.log = open(self.work / "bench.log", "a", encoding="utf-8")
        self.runs_file = open(self.work / "runs.jsonl", "a", encoding="utf-8")
        self.state = self._initial_state(argv)
        self.prepared: dict[str, Any] = {}

    def _initial_state(self, argv: list[str] | None) -> dict[str, Any]:
        import workload

        args = self.args
        command = "python benchmarks/bench_trl.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        unavailable = {
            arm: f"needs {', '.join(missing_settings(arm))}, which this build's config lacks"
            for arm, overrides in self.overrides.items()
            if overrides is None
        }
        return {
            "command": command.strip(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(),
            "versions": versions(),
            "preset": self.preset,
            "sizes": asdict(workload.PRESETS[self.preset]),
            "repeats": self.repeats,
            "steps": self.steps,
            "batch_size": args.batch_size or 2,
            "dtype": args.dtype,
            "threads": args.threads,
            "check_skipped": args.skip_check,
            "arms": [*self.arms, TRL],
            "arm_labels": LABELS,
            "unavailable": unavailable,
            "cases": [asdict(c) for c in self.cases],
            "checks": {},
            "runs": {c.name: {arm: [] for arm in [*self.arms, TRL]} for c in self.cases},
            "failures": [],
        }

    # ----------------------------------------------------------------------------- plan

    def batch_size(self, case: Case) -> int:
        import scaling

        if self.args.batch_size:
            return self.args.batch_size
        return scaling.WORKLOADS[case.workload].batch_size if case.workload else 2

    def prepare(self) -> None:
        from prepare import dataset_key

        datasets: dict[str, int] = {}
        for case in self.cases:
            key = dataset_key(case)
            datasets[key] = max(datasets.get(key, 0), self.batch_size(case) * self.steps)
        print(f"preparing models and data ({self.preset}) in {self.work}", flush=True)
        spec = {"work_dir": str(self.work), "preset": self.preset, "datasets": datasets}
        prepared = spawn("prepare", spec, self.work, "prepare", self.log)
        if prepared is None:
            raise SystemExit(f"preparation failed; see {self.work / 'bench.log'}")
        self.prepared = prepared
        print("measuring the matmul peak", flush=True)
        self.state["peak"] = spawn(
            "peak", {"threads": self.args.threads}, self.work, "peak", self.log
        )

    def spec(self, case: Case, arm: str, tag: str) -> dict[str, Any]:
        from prepare import dataset_key

        info = self.prepared[dataset_key(case)]
        return {
            "engine": TRL if arm == TRL else "mmdpo",
            "arm": arm,
            "overrides": [] if arm == TRL else self.overrides[arm],
            "family": case.family,
            "vision": case.family != "text",
            "model_dir": info["model_dir"],
            "pairs": info["pairs"],
            "quantization": case.quantization,
            "reference": case.reference,
            "dtype": self.args.dtype,
            "max_length": info["max_length"],
            "batch_size": self.batch_size(case),
            "steps": self.steps,
            "trl_runs": case.trl_runs,
            "threads": self.args.threads,
            "work_dir": str(self.work / "runs" / tag),
        }

    def check_spec(self, case: Case, arm: str) -> dict[str, Any]:
        """One optimizer step on the first batch, float32, no clipping; TRL's side runs the
        adapter-off reference where TRL refuses the case's (the reference log-probs are the
        same either way, and they carry no gradient)."""
        tag = f"check-{case.name}-{arm}"
        spec = self.spec(case, arm, tag)
        spec.update(steps=1, limit_pairs=spec["batch_size"], max_grad_norm=0.0, dtype="float32")
        spec["grads_path"] = str(self.work / f"{tag}.grads.pt")
        if arm == TRL and not case.trl_runs:
            spec.update(reference="adapter_off", refused_reference=case.reference)
        return spec

    # --------------------------------------------------------------------------- checks

    def check_case(self, case: Case) -> list[str]:
        """Run the check sides of ``case``; record verdicts; return the arms that may be timed."""
        from check import compare_sides

        runnable = [a for a in self.arms if self.overrides[a] is not None]
        sides = {}
        for arm in [TRL, *runnable]:
            tag = f"check-{case.name}-{arm}"
            spec = self.check_spec(case, arm)
            cached = None if self.args.recheck else cached_result(self.work, tag, spec)
            sides[arm] = cached or spawn("check", spec, self.work, tag, self.log)
        return self.record_checks(case, sides, compare_sides)

    def record_checks(self, case: Case, sides: dict[str, Any], compare) -> list[str]:
        theirs = sides.get(TRL)
        record: dict[str, Any] = {"arms": {}}
        if theirs:
            record["trl"] = {k: theirs.get(k) for k in ("loss", "inference_layout", "trl_refusal")}
            if not case.trl_runs:
                record["against"] = "TRL with the adapter-off reference (TRL refuses this case's)"
        passed = []
        for arm in (a for a in self.arms if a in sides):
            ours = sides[arm]
            if ours is None or theirs is None:
                side = "TRL" if theirs is None else "mmdpo"
                record["arms"][arm] = {
                    "passed": False,
                    "reason": f"{side}'s check side failed to run",
                }
                continue
            verdict = compare(ours, theirs)
            record["arms"][arm] = verdict
            if verdict["passed"]:
                passed.append(arm)
        self.state["checks"][case.name] = record
        write_report(self.out, self.state)
        for arm, verdict in record["arms"].items():
            print(f"  {arm}: {'pass' if verdict['passed'] else 'FAIL: ' + str(verdict['reason'])}",
                  flush=True)  # fmt: skip
        return passed + ([TRL] if case.trl_runs and passed else [])

    # ---------------------------------------------------------------------------- runs

    def fused_check(self, case: Case, repeat: int) -> bool:
        """Whether this run does its arm's check side first (``--check-in-run``)."""
        args = self.args
        return args.check_in_run and not args.skip_check and case.trl_runs and repeat == 0

    def timed_run(self, case: Case, arm: str, repeat: int, work: tuple[list, list]) -> dict | None:
        tag = f"{case.name}-{arm}-{repeat}"
        print(f"run {tag}", flush=True)
        spec = self.spec(case, arm, tag)
        if self.fused_check(case, repeat):
            spec["check_spec"] = self.check_spec(case, arm)
        result = spawn("run", spec, self.work, tag, self.log)
        if result is None:
            self.state["failures"].append(tag)
            return None
        stats = steady_state(result, *work)
        self.runs_file.write(json.dumps({"tag": tag, **stats, "raw": result}) + "\n")
        self.runs_file.flush()
        print(f"  {stats['pairs_per_s']:.3f} pairs/s, {stats['tokens_per_s']:.0f} tokens/s,"
              f" peak {stats['peak_mib']:.0f} MiB", flush=True)  # fmt: skip
        return {"stats": stats, "check": result.get("check")}

    def run_case_repeat(self, case: Case, arms: list[str], repeat: int, index: int) -> list[str]:
        """One run of each arm, the order rotated per repeat and case; returns the arms that
        stay (with ``--check-in-run``, those whose check passed)."""
        from check import compare_sides
        from prepare import dataset_key

        info = self.prepared[dataset_key(case)]
        precomputed = case.reference == "precomputed"
        batch = self.batch_size(case)
        work = (
            case_flops(info, precomputed, batch, self.steps),
            case_tokens(info, batch, self.steps),
        )
        shift = (repeat + index) % len(arms)
        results = {
            arm: self.timed_run(case, arm, repeat, work) for arm in arms[shift:] + arms[:shift]
        }
        kept = arms
        if self.fused_check(case, repeat):
            sides = {arm: (r or {}).get("check") for arm, r in results.items()}
            kept = self.record_checks(case, sides, compare_sides)
        for arm in kept:
            if results.get(arm):
                self.state["runs"][case.name][arm].append(results[arm]["stats"])
        write_report(self.out, self.state)
        return kept

    def run(self) -> None:
        self.prepare()
        timed: dict[str, list[str]] = {}
        for case in self.cases:
            runnable = [a for a in self.arms if self.overrides[a] is not None]
            everything = runnable + ([TRL] if case.trl_runs else [])
            if self.args.skip_check or self.fused_check(case, 0):
                timed[case.name] = everything
            else:
                print(f"check {case.name}", flush=True)
                timed[case.name] = self.check_case(case)
        untimed = set(filter(None, self.args.no_trl_runs.split(",")))
        for name in untimed & set(timed):
            timed[name] = [arm for arm in timed[name] if arm != TRL]
        for repeat in range(self.repeats):
            for index, case in enumerate(self.cases):
                if timed[case.name]:
                    timed[case.name] = self.run_case_repeat(case, timed[case.name], repeat, index)
        self.state["finished"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        (self.work / "state.json").write_text(json.dumps(self.state, indent=1))
        write_report(self.out, self.state)
        print(f"wrote {self.out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    if args.render:
        state = json.loads(args.render.read_text(encoding="utf-8"))
        out = args.out or args.render.with_suffix(".md")
        write_report(out, state)
        print(f"wrote {out}")
        return 0
    bench = Bench(args, argv)
    if args.merge:
        taken = merge_earlier(bench.state, args.merge)
        print(f"kept from {args.merge}: {', '.join(taken) or 'nothing'}", flush=True)
    bench.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
