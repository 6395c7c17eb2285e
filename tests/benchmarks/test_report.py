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
    assert "come from an earlier run on c, same preset: `old command`" in text
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


def test_merge_chain_keeps_each_run_its_own_provenance(tmp_path):
    """A chain of runs, each merging the last one's state, after one source was dropped
    (all its cases measured again): every case still names the run that measured it."""
    first = _state("first", {"a": (1.0, 1.0), "b": (1.0, 1.0)})
    second = _state("second", {"a": (2.0, 1.0)})
    third = _state("third", {"b": (3.0, 1.0)})  # drops "first": a and b are measured later
    fourth = _state("fourth", {"c": (4.0, 1.0)})
    previous = first
    for index, state in enumerate((second, third, fourth)):
        path = tmp_path / f"state-{index}.json"
        path.write_text(json.dumps(previous))
        bench_trl.merge_earlier(state, path)
        previous = state
    sources = {s["id"]: s["command"] for s in fourth["earlier"]}
    named = {c["name"]: sources.get(c.get("source"), c.get("source")) for c in fourth["cases"]}
    assert named == {"c": None, "a": "second", "b": "third"}


def test_merge_refuses_another_preset(tmp_path):
    earlier = _state("old", {"text-adapter_off": (1.0, 1.0)})
    earlier["preset"] = "quick"
    path = tmp_path / "RESULTS.json"
    path.write_text(json.dumps(earlier))
    with pytest.raises(SystemExit, match="preset 'quick'"):
        bench_trl.merge_earlier(_state("new", {}), path)


def _verdict(passed: bool, reason: str | None = None) -> dict:
    return {
        "passed": passed,
        "reason": reason,
        "mmdpo_loss": 0.62,
        "trl_loss": 0.62005,
        "abs_diff": 5e-5,
        "same_tokens": True,
        "gradients": {
            "compared": 28,
            "rtol": 1e-3,
            "max_rel_err": 2e-6 if passed else 0.9,
            "worst": "model.layers.0.mlp.up_proj.lora_A.weight",
            "failing": 0 if passed else 28,
            "failing_names": [],
            "only_mmdpo": [],
            "only_trl": [],
            "passed": passed,
        },
    }


def test_a_failed_check_gives_no_speed_figures_and_unbuilt_arms_are_named(tmp_path):
    state = _state("cmd", {"text-4bit-adapter_off": (2.0, 1.0), "prompt512-adapter_off": (3, 1)})
    state["arms"] = ["mmdpo", "mmdpo-shared", "mmdpo-shared-packed", "trl"]
    state["unavailable"] = {
        "mmdpo-shared": "needs train.shared_prompt, which ...",
        "mmdpo-shared-packed": "needs train.shared_prompt, train.padding_free",
    }
    broken = "text-4bit-precomputed"
    state["cases"].append({"name": broken, "what": broken, "trl_runs": True, "family": "text",
                           "reference": "precomputed", "quantization": "4bit"})  # fmt: skip
    state["cases"][1].update(workload="prompt512", reference="adapter_off", quantization="none")
    state["runs"][broken] = {"mmdpo": [], "trl": []}
    reason = "28 of 28 gradient tensors differ; TRL's gradient is wrong: 14 of its 14 4-bit layers"
    state["checks"] = {
        "text-4bit-adapter_off": {"arms": {"mmdpo": _verdict(True)}},
        broken: {"arms": {"mmdpo": _verdict(False, reason)}},
    }
    text = report.render(state, plot_path=bench_trl._plot(tmp_path / "R.md", state))

    assert f"| {broken} | mmdpo two-row | 0.620000 | 0.620050 | 5.0e-05 | yes |" in text
    assert f"FAIL: {reason} |" in text
    broken_table = text.split(f"### {broken}:")[1].split("###")[0]
    assert "not timed: same-work check failed" in broken_table
    assert "/ TRL" not in broken_table and "x |" not in broken_table
    assert f"| {broken} |" not in text.split("## Targets")[1].split("## ")[0]
    assert "28/28 within 1e-03; max 2.0e-06 | pass |" in text
    assert "| mmdpo shared-prompt | 0 | not available in this build |" in text
    assert "Arm `mmdpo shared-prompt`: not available in this build" in text
    assert "not measured (mmdpo-shared: not available in this build)" not in text  # 512: none
    assert (tmp_path / "R-scaling.png").stat().st_size > 10_000
    assert "![pairs/s and peak memory" in text and "(R-scaling.png)" in text


def test_states_from_before_the_gradient_check_still_render():
    state = _state("old", {"text-adapter_off": (2.0, 1.0)})
    old = {"mmdpo_loss": 0.5, "trl_loss": 0.5, "abs_diff": 1e-6, "passed": True,
           "same_tokens": True}  # fmt: skip
    state["checks"] = {"text-adapter_off": old, "qwen2_vl-precomputed": {"trl_refusal": "No."}}
    text = report.render(state)
    assert "not compared (run before the gradient check) | pass (loss only) |" in text
    assert "TRL refuses: No." in text
