"""The TRL benchmark's report: merging an earlier run's cases, and the tables it renders."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_trl  # noqa: E402
import report  # noqa: E402


def _run(pairs_per_s: float, peak: float) -> dict[str, float]:
    return {
        "pairs_per_s": pairs_per_s,
        "tokens_per_s": 100 * pairs_per_s,
        "step_s": 2 / pairs_per_s,
        "cpu_pairs_per_s": pairs_per_s,
        "peak_mib": peak,
        "flops_per_s": 1e9,
    }


def _state(command: str, cases: dict[str, tuple[float, float]]) -> dict:
    return {
        "command": command,
        "date": "2026-11-27 10:00 UTC",
        "finished": "2026-11-27 11:00 UTC",
        "machine": {"platform": "p", "python": "3.11", "cpu": "c", "load_average": "1.0"},
        "versions": {"torch": "x"},
        "preset": "full",
        "repeats": 1,
        "steps": 3,
        "batch_size": 2,
        "threads": 1,
        "sizes": {
            "hidden": 8,
            "layers": 1,
            "heads": 1,
            "kv_heads": 1,
            "intermediate": 8,
            "max_length": 16,
            "image_size": 28,
            "vision_width": 8,
            "vision_layers": 1,
        },
        "peak": {"fp32": 1e10, "bf16": 1e9, "threads": 1},
        "cases": [{"name": n, "what": n, "trl_runs": True, "family": "text"} for n in cases],
        "checks": {},
        "runs": {
            n: {"mmdpo": [_run(a, 10.0)], "trl": [_run(b, 20.0)]} for n, (a, b) in cases.items()
        },
        "failures": [],
    }


def test_merge_keeps_earlier_cases_with_their_provenance(tmp_path):
    earlier = _state(
        "old command", {"text-adapter_off": (1.0, 1.0), "llava-adapter_off": (3.0, 1.0)}
    )
    earlier_file = tmp_path / "RESULTS.json"
    earlier_file.write_text(json.dumps(earlier))
    state = _state("new command", {"text-adapter_off": (2.0, 1.0)})

    taken = bench_trl.merge_earlier(state, earlier_file)

    assert taken == ["llava-adapter_off"]  # the case measured now is not replaced
    assert state["runs"]["text-adapter_off"]["mmdpo"][0]["pairs_per_s"] == 2.0
    text = report.render(state)
    assert "`old command`" in text and "`new command`" in text
    assert "### llava-adapter_off: llava-adapter_off [earlier 1]" in text
    assert (
        "| mmdpo two-row: never slower than TRL | llava-adapter_off [earlier 1] |"
        " 3.00x pairs/s | yes |" in text
    )
    assert (
        "| mmdpo two-row: never slower than TRL | text-adapter_off | 2.00x pairs/s | yes |" in text
    )

    # Merging the merged state again keeps the first run's provenance, not the second's.
    merged_file = tmp_path / "merged.json"
    merged_file.write_text(json.dumps(state))
    again = _state("third command", {"text-adapter_off": (2.0, 1.0)})
    assert bench_trl.merge_earlier(again, merged_file) == ["llava-adapter_off"]
    assert [s["command"] for s in again["earlier"]] == ["old command"]


def test_merge_refuses_another_preset(tmp_path):
    earlier = _state("old", {"text-adapter_off": (1.0, 1.0)})
    earlier["preset"] = "quick"
    path = tmp_path / "RESULTS.json"
    path.write_text(json.dumps(earlier))
    with pytest.raises(SystemExit, match="preset 'quick'"):
        bench_trl.merge_earlier(_state("new", {}), path)
