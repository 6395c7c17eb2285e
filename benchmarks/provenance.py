"""Where a benchmark run's numbers come from: the machine, the library versions, and the cases
kept from an earlier run's state (``--merge``) with their own provenance."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


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
        flags = fields.get("Flags", "").split()
        info["cpu_flags"] = " ".join(
            f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags
        )
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
    # An earlier state may itself hold merged cases; keep their own provenance. Sources saved
    # before the CPU was recorded were reported as from that state's machine.
    sources = {s["id"]: s for s in earlier.get("earlier", [])}
    for source in sources.values():
        source.setdefault("cpu", earlier.get("machine", {}).get("cpu", "?"))
    this_id = max(sources, default=-1) + 1  # ids of unused sources were dropped: no reuse
    taken = []
    for case in earlier["cases"]:
        if case["name"] in ours or not any(earlier["runs"].get(case["name"], {}).values()):
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
                "cpu": earlier.get("machine", {}).get("cpu", "?"),
                "cpu_flags": earlier.get("machine", {}).get("cpu_flags"),
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
