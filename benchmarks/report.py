"""RESULTS.md from the benchmark's state: machine, versions, command, checks, one table per
case (medians over runs) with the mmdpo / TRL ratios, and the targets met or missed.

The hand-written analysis in ``analysis.md`` (next to this file), if present, is appended.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (case-name prefix or None for every case both run, pairs/s ratio to reach, label)
TARGETS = [
    ("text-precomputed", 1.3, "text, precomputed reference: >= 1.3x TRL pairs/s"),
    ("qwen2_vl-adapter_off", 2.0, "vision (Qwen2-VL), adapter off: >= 2x TRL pairs/s"),
    ("llava-adapter_off", 2.0, "vision (LLaVA), adapter off: >= 2x TRL pairs/s"),
]


def _median(runs: list[dict[str, float]], key: str) -> float | None:
    return statistics.median(r[key] for r in runs) if runs else None


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _header(state: dict[str, Any]) -> list[str]:
    m, v, s = state["machine"], state["versions"], state["sizes"]
    peak = state.get("peak") or {}
    finished = state.get("finished")
    when = f" (finished {finished})" if finished else " (partial: still running)"
    where = m.get("device", m.get("cpu", "?"))
    fp32, bf16 = peak.get("fp32", 0) / 1e9, peak.get("bf16", 0) / 1e9
    lines = [
        "# mmdpo vs TRL: throughput and memory",
        "",
        f"- Date: {state['date']}{when}",
        f"- Command: `{state['command']}`",
        f"- Machine: {where}; {m.get('cpus', '?')} CPUs, {m.get('memory', '?')} RAM;"
        f" torch threads {peak.get('threads', '?')};"
        f" load average at start {m.get('load_average', '?')}"
        f" ({m['platform']}, Python {m['python']})",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Measured matmul peak (fastest of 7): fp32 {_f(fp32, 1)} GFLOP/s,"
        f" bf16 {_f(bf16, 1)} GFLOP/s",
        f"- Preset `{state['preset']}`: decoder hidden {s['hidden']}, {s['layers']} layers,"
        f" {s['heads']} heads ({s['kv_heads']} KV), MLP {s['intermediate']}, vocabulary 32,000,"
        f" untied head; max length {s['max_length']} tokens per row (prompt + one response);"
        f" images {s['image_size']} px in 14 px patches, ViT width {s['vision_width']},"
        f" {s['vision_layers']} layers",
        f"- Each run: {state['steps']} optimizer steps of {state['batch_size']} pairs (step 1 is"
        f" warm-up; throughput is over steps 2..{state['steps']}), a fresh process;"
        f" {state['repeats']} run(s) per engine and case, alternating;"
        f" torch threads per run: {state.get('threads') or 'default'};"
        " numbers are medians over runs.",
        "- Same for both: fp32 weights (no autocast), LoRA r 16, alpha 32, dropout 0 on the same"
        " layers (every language-model linear and the projector; not the vision tower, not"
        " lm_head), AdamW lr 1e-5, constant schedule, clip 1.0, sigmoid DPO beta 0.1 on summed"
        " log-probs, no gradient checkpointing, the same pairs in the same order (no shuffle).",
        "- Peak memory: peak RSS of the run's process on CPU (model load included); peak CUDA"
        " memory allocated on GPU. Model FLOP/s: see `flops.py` (the same count for both).",
    ]
    for source in state.get("earlier", []):
        names = ", ".join(c["name"] for c in state["cases"] if c.get("source") == source["id"])
        lines.append(
            f"- Cases marked [earlier {source['id'] + 1}] come from an earlier run on the same"
            f" machine and preset: `{source['command']}`, {source['date']}, load average at"
            f" start {source['load_average']}, {source['repeats']} run(s) per engine of"
            f" {source['steps']} steps: {names}"
        )
    return lines + [""]


def _checks(state: dict[str, Any]) -> list[str]:
    if not state["checks"]:
        return ["## Same-work check", "", "Not run (`--skip-check`).", ""]
    lines = [
        "## Same-work check (first batch, same non-zero LoRA weights in both)",
        "",
        "| case | mmdpo loss | TRL loss | abs diff | same token ids | result |",
        "|---|---|---|---|---|---|",
    ]
    marks = {case["name"]: _mark(case) for case in state["cases"]}
    for name, c in state["checks"].items():
        name = name + marks.get(name, "")
        if "trl_refusal" in c:
            lines.append(
                f"| {name} | — | — | — | — | TRL refuses: {c['trl_refusal'] or 'no error?'} |"
            )
        elif "error" in c:
            lines.append(f"| {name} | — | — | — | — | {c['error']} |")
        else:
            ok = "pass (<= 1e-4)" if c["passed"] else "FAIL"
            lines.append(
                f"| {name} | {c['mmdpo_loss']:.6f} | {c['trl_loss']:.6f} | {c['abs_diff']:.1e} |"
                f" {'yes' if c['same_tokens'] else 'NO'} | {ok} |"
            )
    return lines + [""]


def _mark(case: dict[str, Any]) -> str:
    source = case.get("source")
    return "" if source is None else f" [earlier {source + 1}]"


def _case_table(case: dict[str, Any], runs: dict[str, list], peak: dict[str, float]) -> list[str]:
    lines = [
        f"### {case['name']}: {case['what']}{_mark(case)}",
        "",
        "| engine | runs | pairs/s | tokens/s | step s | pairs per CPU-s | peak memory MiB |"
        " model GFLOP/s | % of fp32 peak | % of bf16 peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    medians = {}
    for engine in ("mmdpo", "trl"):
        r = runs.get(engine) or []
        if not r:
            note = (
                "TRL refuses this setting" if engine == "trl" and not case["trl_runs"] else "no run"
            )
            lines.append(f"| {engine} | 0 | {note} | | | | | | | |")
            continue
        keys = ("pairs_per_s", "tokens_per_s", "step_s", "cpu_pairs_per_s", "peak_mib")
        med = {k: _median(r, k) if all(k in x for x in r) else None for k in keys}
        med["flops_per_s"] = _median(r, "flops_per_s")
        medians[engine] = med
        fp32 = 100 * med["flops_per_s"] / peak["fp32"] if peak.get("fp32") else None
        bf16 = 100 * med["flops_per_s"] / peak["bf16"] if peak.get("bf16") else None
        cells = [
            engine,
            str(len(r)),
            _f(med["pairs_per_s"], 3),
            _f(med["tokens_per_s"], 0),
            _f(med["step_s"], 2),
            _f(med["cpu_pairs_per_s"], 3),
            _f(med["peak_mib"], 0),
            _f(med["flops_per_s"] / 1e9, 1),
            _f(fp32, 1),
            _f(bf16, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(medians) == 2:
        a, b = medians["mmdpo"], medians["trl"]
        speed = _f(_ratio(a["pairs_per_s"], b["pairs_per_s"]))
        tokens = _f(_ratio(a["tokens_per_s"], b["tokens_per_s"]))
        step = _f(_ratio(a["step_s"], b["step_s"]))
        memory = _f(_ratio(a["peak_mib"], b["peak_mib"]))
        cpu = _f(_ratio(a["cpu_pairs_per_s"], b["cpu_pairs_per_s"]))
        lines.append(
            f"| **mmdpo / TRL** | | **{speed}x** | {tokens}x | {step}x | {cpu}x | {memory}x | | | |"
        )
    return lines + [""]


def _cpu_median(runs: list[dict[str, float]]) -> float | None:
    ok = runs and all("cpu_pairs_per_s" in r for r in runs)
    return _median(runs, "cpu_pairs_per_s") if ok else None


def _targets(state: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "| target | case | mmdpo / TRL | met |", "|---|---|---|---|"]
    for case in state["cases"]:
        runs = state["runs"][case["name"]]
        if not (runs["mmdpo"] and runs["trl"]):
            continue
        speed = _ratio(_median(runs["mmdpo"], "pairs_per_s"), _median(runs["trl"], "pairs_per_s"))
        memory = _ratio(_median(runs["mmdpo"], "peak_mib"), _median(runs["trl"], "peak_mib"))
        name = case["name"] + _mark(case)
        cpu_speed = _ratio(_cpu_median(runs["mmdpo"]), _cpu_median(runs["trl"]))
        rows = [("never slower than TRL", speed, speed >= 1, "pairs/s")]
        if cpu_speed is not None:
            rows.append(
                ("never slower than TRL (CPU time)", cpu_speed, cpu_speed >= 1, "pairs per CPU-s")
            )
        rows.append(("peak memory <= TRL's", memory, memory <= 1, "memory"))
        rows += [
            (label, speed, speed >= goal, "pairs/s")
            for n, goal, label in TARGETS
            if n == case["name"]
        ]
        for label, value, met, unit in rows:
            lines.append(f"| {label} | {name} | {_f(value)}x {unit} | {'yes' if met else 'NO'} |")
    return lines + [""]


def render(state: dict[str, Any]) -> str:
    lines = _header(state) + _checks(state) + _targets(state) + ["## Cases", ""]
    for case in state["cases"]:
        lines += _case_table(case, state["runs"][case["name"]], state.get("peak") or {})
    if state.get("failures"):
        lines += ["Runs that failed (see bench.log): " + ", ".join(state["failures"]), ""]
    analysis = HERE / "analysis.md"
    if analysis.is_file():
        lines += [analysis.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines)
