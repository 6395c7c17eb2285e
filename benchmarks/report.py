"""RESULTS.md from the benchmark's state: machine, versions, command, the same-work checks (loss
and gradients), the targets, the scaling tables and plot, one table per case (medians over
runs) with the ratios between arms.

A case's speed figures appear only for arms whose same-work check passed; an arm whose check
failed, or whose engine setting this build lacks, is listed with the reason and no numbers.
States written before the gradient check (a flat check per case, loss only) still render.
The hand-written analysis in ``analysis.md`` (next to this file), if present, is appended.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from arms import LABELS as DEFAULT_LABELS
from arms import TRL

HERE = Path(__file__).resolve().parent
TWO_ROW = "mmdpo"

# (case name, pairs/s ratio to reach, label): the original targets, for the two-row arm.
TARGETS = [
    ("text-precomputed", 1.3, "text, precomputed reference: >= 1.3x TRL pairs/s"),
    ("qwen2_vl-adapter_off", 2.0, "vision (Qwen2-VL), adapter off: >= 2x TRL pairs/s"),
    ("llava-adapter_off", 2.0, "vision (LLaVA), adapter off: >= 2x TRL pairs/s"),
]


def _median(runs: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values and len(values) == len(runs) else None


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _labels(state: dict[str, Any]) -> dict[str, str]:
    return {**DEFAULT_LABELS, **state.get("arm_labels", {})}


def _arms(state: dict[str, Any]) -> list[str]:
    arms = list(state.get("arms") or [TWO_ROW, TRL])
    for runs in state["runs"].values():
        arms += [a for a in runs if a not in arms]
    return [a for a in arms if a != TRL] + [TRL]


def _mark(case: dict[str, Any]) -> str:
    source = case.get("source")
    return "" if source is None else f" [earlier {source + 1}]"


# ---------------------------------------------------------------------------------- header


def _header(state: dict[str, Any]) -> list[str]:
    m, v, s = state["machine"], state["versions"], state["sizes"]
    peak = state.get("peak") or {}
    finished = state.get("finished")
    when = f" (finished {finished})" if finished else " (partial: still running)"
    where = m.get("device", m.get("cpu", "?"))
    flags = f", CPU flags {m['cpu_flags']}" if m.get("cpu_flags") is not None else ""
    fp32, bf16 = peak.get("fp32", 0) / 1e9, peak.get("bf16", 0) / 1e9
    dtype = state.get("dtype", "float32")
    lines = [
        "# mmdpo vs TRL: throughput and memory",
        "",
        f"- Date: {state['date']}{when}",
        f"- Command: `{state['command']}`",
        f"- Machine: {where}; {m.get('cpus', '?')} CPUs{flags}, {m.get('memory', '?')} RAM;"
        f" torch threads {peak.get('threads', '?')};"
        f" load average at start {m.get('load_average', '?')}"
        f" ({m['platform']}, Python {m['python']})",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Measured matmul peak (fastest of 7): fp32 {_f(fp32, 1)} GFLOP/s,"
        f" bf16 {_f(bf16, 1)} GFLOP/s"
        + (f"; datasheet dense bf16 {peak['datasheet_bf16'] / 1e12:,.0f} TFLOP/s"
           if peak.get("datasheet_bf16") else ""),  # fmt: skip
        f"- Preset `{state['preset']}`: decoder hidden {s['hidden']}, {s['layers']} layers,"
        f" {s['heads']} heads ({s['kv_heads']} KV), MLP {s['intermediate']}, vocabulary 32,000,"
        f" untied head; original cases: max length {s['max_length']} tokens per row (prompt +"
        f" one response), images {s['image_size']} px in 14 px patches; ViT width"
        f" {s['vision_width']}, {s['vision_layers']} layers. Scaling cases: see `scaling.py`.",
        f"- Each run: {state['steps']} optimizer steps (step 1 is warm-up; throughput is over"
        f" steps 2..{state['steps']}), a fresh process; {state['repeats']} run(s) per arm and"
        " case, the arms' order rotated; torch threads per run:"
        f" {state.get('threads') or 'default'}; numbers are medians over runs. Pairs per step:"
        f" {state['batch_size']} (scaling workloads: their own, e.g. 8 for `skewed`).",
        f"- Same for all: {dtype} weights" + (" with bf16 autocast" if dtype == "bfloat16" else
        " (no autocast)") + ", LoRA r 16, alpha 32, dropout 0 on the same layers (every"
        " language-model linear and the projector; not the vision tower, not lm_head), AdamW"
        " lr 1e-5, constant schedule, clip 1.0, sigmoid DPO beta 0.1 on summed log-probs, no"
        " gradient checkpointing, the same pairs in the same order (no shuffle).",
        "- Tokens/s counts the non-padding tokens of the two rows of each pair (prompt +"
        " chosen, prompt + rejected) for every arm, so layouts that compute the prompt once"
        " are credited with the same tokens. Peak memory: peak RSS of the run's process on CPU"
        " (model load included); peak CUDA memory allocated on GPU. Model FLOP/s and MFU:"
        " `flops.py` (8N per token with the adapter-off reference, 6N with a precomputed one,"
        " plus attention and vision tower; the same count for every arm).",
    ]  # fmt: skip
    for arm, why in (state.get("unavailable") or {}).items():
        lines.append(
            f"- Arm `{_labels(state).get(arm, arm)}`: not available in this build ({why})."
        )
    for source in state.get("earlier", []):
        names = ", ".join(c["name"] for c in state["cases"] if c.get("source") == source["id"])
        cpu = f" on {source.get('cpu') or 'an unrecorded machine'}"
        lines.append(
            f"- Cases marked [earlier {source['id'] + 1}] come from an earlier run{cpu}"
            + (f" (CPU flags {source['cpu_flags']})" if source.get("cpu_flags") else "")
            + f", same preset: `{source['command']}`, {source['date']}, load average at"
            f" start {source['load_average']}, {source['repeats']} run(s) per engine of"
            f" {source['steps']} steps: {names}"
        )
    return lines + [""]


# ---------------------------------------------------------------------------------- checks


def arm_checks(check: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A case's check per arm; a check from before the gradient check reads as the two-row
    arm's, marked ``loss_only``."""
    if not check:
        return {}
    if "arms" in check:
        return check["arms"]
    if "mmdpo_loss" in check:
        return {TWO_ROW: {**check, "loss_only": True}}
    return {}


def check_passed(state: dict[str, Any], case: str, arm: str) -> bool | None:
    """True / False, or None where no check ran (``--skip-check``, TRL refused, ...)."""
    if arm == TRL:
        verdicts = arm_checks(state["checks"].get(case)).values()
        return any(v.get("passed") for v in verdicts) if verdicts else None
    verdict = arm_checks(state["checks"].get(case)).get(arm)
    return None if verdict is None else bool(verdict.get("passed"))


def _gradient_cell(verdict: dict[str, Any]) -> str:
    if verdict.get("loss_only"):
        return "not compared (run before the gradient check)"
    g = verdict.get("gradients")
    if not g:
        return "—"
    if g.get("max_rel_err") is None:
        unmatched = len(g.get("only_mmdpo", [])) + len(g.get("only_trl", []))
        return f"none compared ({unmatched} unmatched)"
    return (
        f"{g['compared'] - g['failing']}/{g['compared']} within {g['rtol']:.0e};"
        f" max {g['max_rel_err']:.1e}"
    )


def _checks(state: dict[str, Any]) -> list[str]:
    if state.get("check_skipped") and not state["checks"]:
        return ["## Same-work check", "", "Not run (`--skip-check`): nothing below is checked.", ""]
    lines = [
        "## Same-work check (first optimizer step, same non-zero LoRA weights, fp32, no clipping)",
        "",
        "Each arm against TRL: token ids, loss (<= 1e-4) and every LoRA gradient tensor"
        " (relative difference <= the tolerance). Only arms that pass are timed.",
        "",
        "| case | arm | mmdpo loss | TRL loss | abs diff | same token ids | gradients | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels, marks = _labels(state), {c["name"]: _mark(c) for c in state["cases"]}
    for name, check in state["checks"].items():
        shown = name + marks.get(name, "")
        refusal = check.get("trl_refusal") or (check.get("trl") or {}).get("trl_refusal")
        if refusal or ("trl_refusal" in check):
            lines.append(
                f"| {shown} | TRL | — | — | — | — | — | TRL refuses: {refusal or 'no error?'} |"
            )
        if check.get("against"):
            lines.append(f"| {shown} | | | | | | | checked against {check['against']} |")
        if "error" in check:
            lines.append(f"| {shown} | | — | — | — | — | — | {check['error']} |")
        for arm, v in arm_checks(check).items():
            if "mmdpo_loss" not in v:
                lines.append(
                    f"| {shown} | {labels.get(arm, arm)} | | | | | | FAIL: {v.get('reason')} |"
                )
                continue
            if v.get("loss_only"):
                result = "pass (loss only)" if v["passed"] else "FAIL"
            else:
                result = "pass" if v["passed"] else f"FAIL: {v.get('reason')}"
            who = labels.get(arm, arm)
            lines.append(
                f"| {shown} | {who} | {v['mmdpo_loss']:.6f} | {v['trl_loss']:.6f} |"
                f" {v['abs_diff']:.1e} | {'yes' if v['same_tokens'] else 'NO'} |"
                f" {_gradient_cell(v)} | {result} |"
            )
    return lines + [""]


# ---------------------------------------------------------------------------------- cases

KEYS = ("pairs_per_s", "tokens_per_s", "step_s", "cpu_pairs_per_s", "peak_mib", "flops_per_s")


def medians(state: dict[str, Any], case: str) -> dict[str, dict[str, float | None]]:
    """arm -> median of each measure, for the arms of ``case`` with runs."""
    out = {}
    for arm, runs in state["runs"].get(case, {}).items():
        if runs:
            out[arm] = {key: _median(runs, key) for key in KEYS}
    return out


def _no_numbers(state: dict[str, Any], case: dict[str, Any], arm: str) -> str:
    """Why an arm of a case has no numbers."""
    if arm in (state.get("unavailable") or {}):
        return "not available in this build"
    if arm == TRL and not case["trl_runs"]:
        return "TRL refuses this setting"
    if check_passed(state, case["name"], arm) is False:
        return "not timed: same-work check failed"
    return "no run"


def _case_table(state: dict[str, Any], case: dict[str, Any]) -> list[str]:
    peak, labels = state.get("peak") or {}, _labels(state)
    datasheet = peak.get("datasheet_bf16")
    extra = " MFU (datasheet bf16) |" if datasheet else ""
    lines = [
        f"### {case['name']}: {case['what']}{_mark(case)}",
        "",
        "| arm | runs | pairs/s | tokens/s | step s | pairs per CPU-s | peak memory MiB |"
        " model GFLOP/s | % of fp32 peak | % of bf16 peak |" + extra,
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if datasheet else ""),
    ]
    med = medians(state, case["name"])
    for arm in _arms(state):
        runs = state["runs"].get(case["name"], {}).get(arm) or []
        if arm not in med:
            if arm in state["runs"].get(case["name"], {}) or arm in (
                state.get("unavailable") or {}
            ):
                lines.append(f"| {labels.get(arm, arm)} | 0 | {_no_numbers(state, case, arm)} |"
                             " | | | | | | |" + (" |" if datasheet else ""))  # fmt: skip
            continue
        m = med[arm]
        flops = m["flops_per_s"]
        share = {
            k: 100 * flops / peak[k] if flops and peak.get(k) else None for k in ("fp32", "bf16")
        }
        cells = [labels.get(arm, arm), str(len(runs)), _f(m["pairs_per_s"], 3),
                 _f(m["tokens_per_s"], 0), _f(m["step_s"], 2), _f(m["cpu_pairs_per_s"], 3),
                 _f(m["peak_mib"], 0), _f(flops / 1e9 if flops else None, 1),
                 _f(share["fp32"], 1), _f(share["bf16"], 1)]  # fmt: skip
        if datasheet:
            cells.append(_f(100 * flops / datasheet if flops else None, 1) + " %")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _ratio_rows(state, med, bool(datasheet))
    return lines + [""]


def _ratio_rows(state: dict[str, Any], med: dict[str, dict], datasheet: bool) -> list[str]:
    labels, rows = _labels(state), []
    pairs = [(arm, TRL) for arm in med if arm != TRL and TRL in med]
    pairs += [(arm, TWO_ROW) for arm in med if arm not in (TRL, TWO_ROW) and TWO_ROW in med]
    for arm, base in pairs:
        a, b = med[arm], med[base]
        cells = [_f(_ratio(a[k], b[k])) for k in ("pairs_per_s", "tokens_per_s", "step_s",
                                                 "cpu_pairs_per_s", "peak_mib")]  # fmt: skip
        rows.append(
            f"| **{labels.get(arm, arm)} / {labels.get(base, base)}** | | **{cells[0]}x** |"
            f" {cells[1]}x | {cells[2]}x | {cells[3]}x | {cells[4]}x | | | |"
            + (" |" if datasheet else "")
        )
    return rows


# -------------------------------------------------------------------------------- targets

# Issue 13's targets: (case prefix, arm, base arm, measure, goal, label). For memory, the goal
# is an upper bound on the ratio.
SCALING_TARGETS = [
    ("vlm", "adapter_off", "mmdpo-shared", TWO_ROW, "pairs_per_s", 1.6,
     "prompt-heavy VLM, adapter off: shared-prompt >= 1.6x two-row pairs/s"),
    ("vlm", "adapter_off", "mmdpo-shared", TRL, "pairs_per_s", 3.0,
     "prompt-heavy VLM, adapter off: shared-prompt >= 3x TRL pairs/s"),
    ("vlm", "precomputed", "mmdpo-shared", TWO_ROW, "pairs_per_s", 2.0,
     "prompt-heavy VLM, precomputed: shared-prompt >= 2x two-row pairs/s"),
    ("skewed", "adapter_off", "mmdpo-shared-packed", "mmdpo-shared", "pairs_per_s", 1.3,
     "length-skewed text: padding-free >= 1.3x the padded (shared-prompt) path"),
    ("prompt4096", "adapter_off", "mmdpo-shared", TWO_ROW, "peak_mib", 1.0,
     "4096-token prompts: shared-prompt peak memory below two-row's"),
]  # fmt: skip


def _target_rows(state: dict[str, Any], case: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(label, value, met) of the general targets for every checked arm of ``case``."""
    med, labels, out = medians(state, case["name"]), _labels(state), []
    if TRL not in med:
        return out
    t = med[TRL]
    for arm in (a for a in med if a != TRL):
        m, who = med[arm], labels.get(arm, arm)
        speed = _ratio(m["pairs_per_s"], t["pairs_per_s"])
        cpu = _ratio(m["cpu_pairs_per_s"], t["cpu_pairs_per_s"])
        memory = _ratio(m["peak_mib"], t["peak_mib"])
        out.append((f"{who}: never slower than TRL", f"{_f(speed)}x pairs/s", speed >= 1))
        if cpu is not None:
            out.append((f"{who}: never slower than TRL (CPU time)", f"{_f(cpu)}x pairs per CPU-s",
                        cpu >= 1))  # fmt: skip
        out.append((f"{who}: peak memory <= TRL's", f"{_f(memory)}x memory", memory <= 1))
        if arm == TWO_ROW:
            out += [(label, f"{_f(speed)}x pairs/s", speed >= goal)
                    for name, goal, label in TARGETS if name == case["name"]]  # fmt: skip
    return out


def _scaling_target_rows(state: dict[str, Any], case: dict[str, Any]) -> list[tuple[str, str, Any]]:
    med, out = medians(state, case["name"]), []
    workload = case.get("workload") or ""
    for prefix, reference, arm, base, key, goal, label in SCALING_TARGETS:
        if not workload.startswith(prefix) or case["reference"] != reference:
            continue
        missing = [a for a in (arm, base) if a not in med]
        if missing:
            why = "; ".join(f"{a}: {_no_numbers(state, case, a)}" for a in missing)
            out.append((label, f"not measured ({why})", None))
            continue
        value = _ratio(med[arm][key], med[base][key])
        met = value < goal if key == "peak_mib" else value >= goal
        out.append((label, f"{_f(value)}x {'memory' if key == 'peak_mib' else 'pairs/s'}", met))
    return out


def _targets(state: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "| target | case | value | met |", "|---|---|---|---|"]
    for case in state["cases"]:
        name = case["name"] + _mark(case)
        for label, value, met in _target_rows(state, case) + _scaling_target_rows(state, case):
            shown = "—" if met is None else ("yes" if met else "NO")
            lines.append(f"| {label} | {name} | {value} | {shown} |")
    return lines + [""]


# -------------------------------------------------------------------------------- scaling


def _scaling(state: dict[str, Any], plot_path: Path | None) -> list[str]:
    from scaling import WORKLOADS

    cases = [c for c in state["cases"] if (c.get("workload") or "") in WORKLOADS]
    if not cases:
        return []
    labels = _labels(state)
    from scaling import SHRINK

    lines = ["## How cost grows (scaling workloads)", ""]
    shrink = SHRINK.get(state["preset"], 1)
    if shrink > 1:
        note = f"Preset `{state['preset']}`: the workloads' lengths and image sizes are divided"
        lines += [note + f" by {shrink} (case names and descriptions give the full size).", ""]
    if plot_path is not None:
        lines += [f"![pairs/s and peak memory against prompt length and image count]"
                  f"({plot_path.name})", ""]  # fmt: skip
    lines += [
        "| case | x | arm | pairs/s | tokens/s | peak MiB | vs TRL pairs/s | vs TRL memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        workload = WORKLOADS[case["workload"]]
        x = f"{workload.x_at(state['preset'])} {workload.axis}" if workload.axis else "—"
        med = medians(state, case["name"])
        for arm in _arms(state):
            if arm not in med:
                reason = _no_numbers(state, case, arm)
                lines.append(
                    f"| {case['name']} | {x} | {labels.get(arm, arm)} | {reason} | | | | |"
                )
                continue
            m, t = med[arm], med.get(TRL)
            speed = _ratio(m["pairs_per_s"], t["pairs_per_s"]) if t and arm != TRL else None
            memory = _ratio(m["peak_mib"], t["peak_mib"]) if t and arm != TRL else None
            lines.append(
                f"| {case['name']} | {x} | {labels.get(arm, arm)} | {_f(m['pairs_per_s'], 3)} |"
                f" {_f(m['tokens_per_s'], 0)} | {_f(m['peak_mib'], 0)} |"
                f" {_f(speed) + 'x' if speed else '—'} | {_f(memory) + 'x' if memory else '—'} |"
            )
    return lines + [""]


def render(state: dict[str, Any], plot_path: Path | None = None) -> str:
    lines = _header(state) + _checks(state) + _targets(state) + _scaling(state, plot_path)
    lines += ["## Cases", ""]
    for case in state["cases"]:
        lines += _case_table(state, case)
    if state.get("failures"):
        lines += ["Runs that failed (see bench.log): " + ", ".join(state["failures"]), ""]
    analysis = HERE / "analysis.md"
    if analysis.is_file():
        lines += [analysis.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines)
