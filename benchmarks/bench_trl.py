"""mmdpo against TRL's DPOTrainer: the same model, data, LoRA, batch, lengths, loss (sigmoid DPO)
and steps; throughput and peak memory, medians over alternating runs; RESULTS.md.

    python benchmarks/bench_trl.py                 # every case, 3 runs of each engine (~hours
                                                   # on 2 CPU cores; see README.md)
    python benchmarks/bench_trl.py --quick         # the same cases, shrunk: a smoke test
    python benchmarks/bench_trl.py --cases text-adapter_off,text-precomputed --repeats 5

Every run is a fresh process (so the peak memory is that run's), and the engines alternate
(mmdpo, TRL, TRL, mmdpo, ...). Before timing a case, ``check.py`` puts its first batch through
both engines and compares the losses. Results go to RESULTS.md (and runs.jsonl in the work
folder, one line per run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # text, qwen2_vl, llava
    reference: str  # adapter_off, precomputed
    quantization: str  # none, 4bit
    trl_runs: bool  # False where TRL refuses the setting
    what: str


def _cases() -> dict[str, Case]:
    cases = []
    for quant in ("none", "4bit"):
        tag = "" if quant == "none" else "-4bit"
        q = "" if quant == "none" else ", 4-bit NF4 base"
        cases += [
            Case(
                f"text{tag}-adapter_off",
                "text",
                "adapter_off",
                quant,
                True,
                f"1. text, LoRA, reference = adapter off{q}",
            ),
            Case(
                f"text{tag}-precomputed",
                "text",
                "precomputed",
                quant,
                True,
                f"2. text, LoRA, precomputed reference (TRL: precompute_ref_log_probs){q}",
            ),
        ]
        for family, label in (("qwen2_vl", "Qwen2-VL-shaped"), ("llava", "LLaVA-shaped")):
            cases += [
                Case(
                    f"{family}{tag}-adapter_off",
                    family,
                    "adapter_off",
                    quant,
                    True,
                    f"3. vision ({label}), LoRA, reference = adapter off{q}",
                ),
                Case(
                    f"{family}{tag}-precomputed",
                    family,
                    "precomputed",
                    quant,
                    False,
                    f"4. vision ({label}), precomputed reference; TRL refuses it{q}",
                ),
            ]
    return {case.name: case for case in cases}  # fmt: skip


CASES = _cases()
QUICK_CASES = ("text-adapter_off", "qwen2_vl-adapter_off")


# ------------------------------------------------------------------------- child processes


def child_main(mode: str, spec_path: Path, result_path: Path) -> None:
    """Runs in a fresh process: one of prepare / peak / check / run."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    spec = json.loads(spec_path.read_text())
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    if mode == "prepare":
        result = prepare(spec)
    elif mode == "peak":
        import torch
        from flops import matmul_peak

        result = {
            "fp32": matmul_peak(torch.float32),
            "bf16": matmul_peak(torch.bfloat16),
            "threads": torch.get_num_threads(),
        }
    elif mode == "check":
        from check import run_check

        result = run_check(spec)
    else:
        import runners

        result = runners.RUNNERS[spec["engine"]](spec)
    result_path.write_text(json.dumps(result))


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Models and pairs on disk; per-pair token and image-patch counts for the FLOP count."""
    import workload
    from flops import model_shape
    from runners import mmdpo_config, mmdpo_samples

    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.setup import load_processing

    root = Path(spec["work_dir"])
    sizes = workload.PRESETS[spec["preset"]]
    n = spec["pairs"]
    out: dict[str, Any] = {}
    for family in spec["families"]:
        folder = workload.model_folder(root, family, spec["preset"])
        vision = family != "text"
        pairs_file = root / f"pairs-{spec['preset']}-{'vision' if vision else 'text'}.jsonl"
        if not pairs_file.is_file():
            pairs = workload.synthetic_pairs(
                n, sizes=sizes, vision=vision, image_dir=root / f"images-{spec['preset']}"
            )
            workload.save_pairs(pairs, pairs_file)
        run_spec = {
            "model_dir": str(folder),
            "pairs": str(pairs_file),
            "quantization": "none",
            "reference": "adapter_off",
            "max_length": sizes.max_length,
            "batch_size": 1,
            "steps": 1,
        }
        config = mmdpo_config(run_spec, root / "layout")
        processing, is_vlm = load_processing(config)
        transform = PairTransform(processing, TransformSettings(sizes.max_length), is_vlm=is_vlm)
        layout = []
        for sample in mmdpo_samples(run_spec):
            pair = transform(sample)
            patches = []
            if pair.image_inputs:
                inputs = pair.image_inputs
                if "image_grid_thw" in inputs:
                    patches = [int(g.prod()) for g in inputs["image_grid_thw"]]
                else:  # CLIP: patches plus the CLS token
                    side = inputs["pixel_values"].shape[-1] // workload.PATCH_SIZE
                    patches = [side * side + 1] * inputs["pixel_values"].shape[0]
            prompt = len(pair.prompt_ids)
            layout.append(
                {
                    "rows": [prompt + len(pair.chosen_ids), prompt + len(pair.rejected_ids)],
                    "patches": patches,
                }
            )
        out[family] = {
            "model_dir": str(folder),
            "pairs": str(pairs_file),
            "layout": layout,
            "shape": model_shape(str(folder)),
        }
    return out


def cached_result(work: Path, tag: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """A check's earlier result for exactly the same spec (delete the work folder to redo)."""
    spec_path, result_path = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    if spec_path.is_file() and result_path.is_file():
        if json.loads(spec_path.read_text()) == spec:
            return json.loads(result_path.read_text())
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


def steady_state(result: dict[str, Any], flops_per_step: list[float]) -> dict[str, float]:
    """Throughput over steps 2..N (step 1 warms up): pairs/s, tokens/s, FLOP/s."""
    ends = result["step_ends"]
    seconds = ends[-1] - ends[0]
    measured = len(ends) - 1
    cpu = result.get("step_cpu") or [0.0, 0.0]
    cpu_seconds = max(cpu[-1] - cpu[0], 1e-9)
    return {
        "cpu_pairs_per_s": result["pairs_per_step"] * measured / cpu_seconds,
        "cpu_step_s": cpu_seconds / measured,
        "pairs_per_s": result["pairs_per_step"] * measured / seconds,
        "tokens_per_s": sum(result["step_tokens"][1:]) / seconds,
        "flops_per_s": sum(flops_per_step[1 : len(ends)]) / seconds,
        "peak_mib": result["peak_memory_bytes"] / 2**20,
        "step_s": seconds / measured,
        "total_s": result["total_s"],
    }


def case_flops(case: Case, prepared: dict[str, Any], batch: int, steps: int) -> list[float]:
    from flops import step_flops

    info = prepared[case.family]
    out = []
    for step in range(steps):
        chunk = info["layout"][step * batch : (step + 1) * batch]
        rows = [length for pair in chunk for length in pair["rows"]]
        patches = [p for pair in chunk for p in pair["patches"]]
        out.append(step_flops(info["shape"], rows, patches, case.reference == "precomputed"))
    return out


def machine() -> dict[str, str]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "?").strip()
        info["cpus"] = fields.get("CPU(s)", "?").strip()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory"] = f"{int(mem) / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    try:
        info["load_average"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets")
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# -------------------------------------------------------------------------------- report


def write_report(path: Path, state: dict[str, Any]) -> None:
    """The report, and its state beside it (``RESULTS.json``) for a later ``--merge``."""
    from report import render

    path.write_text(render(state), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def merge_earlier(state: dict[str, Any], earlier_file: Path) -> list[str]:
    """Fold the cases of an earlier run's state into ``state``, where this run does not
    measure them (a case measured now replaces its earlier numbers). Returns their names."""
    try:
        earlier = json.loads(earlier_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SystemExit(f"--merge {earlier_file}: cannot read the state: {err}") from None
    missing = [k for k in ("cases", "runs", "checks", "command", "date") if k not in earlier]
    if missing:
        raise SystemExit(f"--merge {earlier_file}: not a benchmark state (no {missing})")
    if earlier.get("preset") != state["preset"]:
        raise SystemExit(
            f"--merge {earlier_file}: preset {earlier.get('preset')!r}, this run"
            f" {state['preset']!r}; sizes must match"
        )
    ours = {c["name"] for c in state["cases"]}
    # An earlier state may itself hold merged cases; keep their own provenance.
    sources = {s["id"]: s for s in earlier.get("earlier", [])}
    this_id = len(sources)
    taken = []
    for case in earlier["cases"]:
        if case["name"] in ours or not earlier["runs"].get(case["name"]):
            continue
        source = case.get("source")
        if source is None:
            source = this_id
            sources[this_id] = {
                "id": this_id,
                "command": earlier["command"],
                "date": earlier["date"],
                "finished": earlier.get("finished"),
                "load_average": earlier.get("machine", {}).get("load_average", "?"),
                "repeats": earlier.get("repeats"),
                "steps": earlier.get("steps"),
            }
        state["cases"].append({**case, "source": source})
        state["runs"][case["name"]] = earlier["runs"][case["name"]]
        if case["name"] in earlier["checks"]:
            state["checks"][case["name"]] = earlier["checks"][case["name"]]
        taken.append(case["name"])
    used = {c.get("source") for c in state["cases"]}
    state["earlier"] = [s for i, s in sorted(sources.items()) if i in used]
    return taken


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated names, or all (default; --quick: "
        + ",".join(QUICK_CASES)
        + "): "
        + ", ".join(CASES),
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of each engine per case (default 3; --quick 1)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps per run (default 4; the first is warm-up)",
    )
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per step")
    parser.add_argument(
        "--quick", action="store_true", help="the small preset, 1 run each: a smoke test"
    )
    parser.add_argument("--no-4bit", action="store_true", help="leave out the 4-bit cases")
    parser.add_argument("--skip-check", action="store_true", help="do not run the same-loss check")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="redo checks whose result is already in the work folder for the same settings",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: torch's own); 1 on a shared machine",
    )
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="the report to write")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/tmp/mmdpo-bench"), help="models, data, runs"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="an earlier run's state (e.g. benchmarks/RESULTS.json): its cases that this run"
        " does not measure are kept in the report, marked with their own command and date",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "SPEC", "RESULT"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    sys.path.insert(0, str(HERE))
    preset = "quick" if args.quick else "full"
    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.steps or (3 if args.quick else 4)
    if args.cases in (None, "all"):
        names = list(QUICK_CASES) if args.quick and args.cases is None else list(CASES)
    else:
        names = [c.strip() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    cases = [CASES[n] for n in names if not (args.no_4bit and CASES[n].quantization != "none")]
    work = args.work_dir / preset
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "bench.log", "a", encoding="utf-8")
    command = "python benchmarks/bench_trl.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = datetime.datetime.now().astimezone()
    state: dict[str, Any] = {
        "command": command.strip(),
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "versions": versions(),
        "preset": preset,
        "repeats": repeats,
        "steps": steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cases": [asdict(c) for c in cases],
        "checks": {},
        "runs": {c.name: {"mmdpo": [], "trl": []} for c in cases},
        "failures": [],
    }
    if args.merge:
        taken = merge_earlier(state, args.merge)
        print(f"kept from {args.merge}: {', '.join(taken) or 'nothing'}", flush=True)
    import workload

    state["sizes"] = asdict(workload.PRESETS[preset])
    n_pairs = args.batch_size * steps
    families = sorted({c.family for c in cases})
    print(f"preparing models and data ({preset}) in {work}", flush=True)
    prepared = spawn(
        "prepare",
        {"work_dir": str(work), "preset": preset, "pairs": n_pairs, "families": families},
        work, "prepare", log,
    )  # fmt: skip
    if prepared is None:
        raise SystemExit(f"preparation failed; see {work / 'bench.log'}")
    print("measuring the matmul peak", flush=True)
    state["peak"] = spawn("peak", {"threads": args.threads}, work, "peak", log)
    sizes = workload.PRESETS[preset]

    def spec_for(case: Case, engine: str, tag: str) -> dict[str, Any]:
        info = prepared[case.family]
        return {
            "engine": engine,
            "family": case.family,
            "vision": case.family != "text",
            "model_dir": info["model_dir"],
            "pairs": info["pairs"],
            "quantization": case.quantization,
            "reference": case.reference,
            "max_length": sizes.max_length,
            "batch_size": args.batch_size,
            "steps": steps,
            "trl_runs": case.trl_runs,
            "threads": args.threads,
            "work_dir": str(work / "runs" / tag),
        }

    if not args.skip_check:
        for case in cases:
            print(f"check {case.name}", flush=True)
            tag = f"check-{case.name}"
            spec = spec_for(case, "check", tag)
            cached = cached_result(work, tag, spec) if not args.recheck else None
            result = cached or spawn("check", spec, work, tag, log)
            failed = {"error": "the check failed to run; see bench.log"}
            state["checks"][case.name] = result or failed
            write_report(args.out, state)

    flops = {c.name: case_flops(c, prepared, args.batch_size, steps) for c in cases}
    runs_file = open(work / "runs.jsonl", "a", encoding="utf-8")
    for repeat in range(repeats):
        for index, case in enumerate(cases):
            engines = ["mmdpo", "trl"] if case.trl_runs else ["mmdpo"]
            if (repeat + index) % 2:
                engines.reverse()  # alternate which engine goes first
            for engine in engines:
                tag = f"{case.name}-{engine}-{repeat}"
                print(f"run {tag}", flush=True)
                result = spawn("run", spec_for(case, engine, tag), work, tag, log)
                if result is None:
                    state["failures"].append(tag)
                    continue
                stats = steady_state(result, flops[case.name])
                state["runs"][case.name][engine].append(stats)
                runs_file.write(json.dumps({"tag": tag, **stats, "raw": result}) + "\n")
                runs_file.flush()
                write_report(args.out, state)
                print(
                    f"  {stats['pairs_per_s']:.3f} pairs/s, {stats['tokens_per_s']:.0f} tokens/s,"
                    f" peak {stats['peak_mib']:.0f} MiB",
                    flush=True,
                )
    state["finished"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    (work / "state.json").write_text(json.dumps(state, indent=1))
    write_report(args.out, state)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
