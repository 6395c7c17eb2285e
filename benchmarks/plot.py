"""The scaling plot: pairs/s and peak memory against prompt length and against image count,
one line per arm (mmdpo's layouts, TRL), from the benchmark's state. Medians over runs."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from scaling import WORKLOADS

AXES = ("prompt tokens", "images per prompt")
METRICS = (("pairs_per_s", "pairs/s"), ("peak_mib", "peak memory (MiB)"))


def scaling_series(state: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, dict]]]]:
    """axis -> series label -> [(x, {metric: median})], adapter-off cases only, by x."""
    out: dict[str, dict[str, list[tuple[int, dict]]]] = {axis: {} for axis in AXES}
    labels = state.get("arm_labels", {})
    for case in state["cases"]:
        workload = WORKLOADS.get(case.get("workload") or "")
        if workload is None or workload.axis not in out or case["reference"] != "adapter_off":
            continue
        quant = "" if case["quantization"] == "none" else " (4-bit)"
        for arm, runs in state["runs"][case["name"]].items():
            if not runs:
                continue
            medians = {key: statistics.median(r[key] for r in runs) for key, _ in METRICS}
            label = labels.get(arm, arm) + quant
            x = workload.x_at(state["preset"])
            out[workload.axis].setdefault(label, []).append((x, medians))
    for series in out.values():
        for points in series.values():
            points.sort(key=lambda p: p[0])
    return out


def plot_scaling(state: dict[str, Any], path: Path) -> Path | None:
    """Write the PNG (2 x 2 panels) and return its path; None when nothing scaled was run."""
    series = scaling_series(state)
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
    for row, axis in enumerate(AXES):
        for col, (key, label) in enumerate(METRICS):
            panel = panels[row][col]
            for name, points in sorted(series[axis].items()):
                xs = [x for x, _ in points]
                panel.plot(xs, [m[key] for _, m in points], marker="o", label=name)
            if axis == "prompt tokens":
                panel.set_xscale("log", base=2)
            ticks = sorted({x for points in series[axis].values() for x, _ in points})
            if ticks:
                panel.set_xticks(ticks, [str(x) for x in ticks])
            panel.set_xlabel(axis)
            panel.set_ylabel(label)
            panel.grid(True, alpha=0.3)
            if series[axis]:
                panel.legend(fontsize=8)
            else:
                panel.text(0.5, 0.5, "not run", ha="center", transform=panel.transAxes)
    device = state["machine"].get("device") or state["machine"].get("cpu", "?")
    figure.suptitle(
        f"mmdpo vs TRL, preset {state['preset']}, {state.get('dtype', 'float32')}, {device}"
        f" ({state['date']})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
