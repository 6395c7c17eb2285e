"""Read run folders into the plain data the report page draws (no HTML here).

A run folder is one with ``config.yaml`` and ``metrics.jsonl`` or ``checkpoints/``. A folder
that is not a run but holds runs below it (a demo, a smol preset, an ablation) is a collection:
its runs are found up to three levels down, and its own ``eval/<label>/`` results are shown
beside theirs. Every file is optional; what a folder lacks is listed, never fatal.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdpo.checkpoint import CHECKPOINTS_DIR, MANIFEST, list_checkpoints
from mmdpo.metrics_log import read_metrics
from mmdpo.report.samples import thumbnail_data_uri
from mmdpo.run_folder import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    DATA_SUMMARY_FILE,
    EVAL_DIR,
    METRICS_FILE,
    PLOTS_DIR,
    REFERENCE_CACHE_DIR,
    SAMPLES_FILE,
    TENSORBOARD_DIR,
)

# Eval labels that name the model before alignment; they come first in the tables.
BASELINE_LABELS = ("before", "base", "sft", "reference", "baseline")
SEARCH_DEPTH = 4  # an ablation: OUT/runs/<variant>/seed-<n>/train
SKIP_DIRS = {
    CHECKPOINTS_DIR,
    PLOTS_DIR,
    REFERENCE_CACHE_DIR,
    TENSORBOARD_DIR,
    "__pycache__",
    EVAL_DIR,
}
EVAL_EXAMPLES = 8  # records per benchmark shown with their answers under every label
MAX_POINTS = 4000  # per curve; longer runs are averaged into this many buckets

WHY_MISSING = {
    CONFIG_FILE: "the run's settings are unknown",
    METRICS_FILE: "no curves (the run wrote no metrics yet)",
    DATA_SUMMARY_FILE: "no data summary (written from this version on, at the start of a run)",
    SAMPLES_FILE: "no generations (written at the end of a run from this version on, unless "
    "train.samples=0 or the weights were sharded)",
    CHECKPOINTS_DIR: "no complete checkpoint",
}


def is_run(path: Path) -> bool:
    """An mmdpo run folder: ``config.yaml`` and metrics or checkpoints."""
    return (path / CONFIG_FILE).is_file() and (
        (path / METRICS_FILE).is_file() or (path / CHECKPOINTS_DIR).is_dir()
    )


def find_runs(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """``root`` itself when it is a run, else the runs below it (sorted), not inside runs."""
    if is_run(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if child.name.startswith(".") or child.name in SKIP_DIRS:
            continue
        found += find_runs(child, depth - 1)
    return found


def run_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the path endings that tell the runs apart, without the folder
    names every run ends with (``dpo/seed-0`` for ``.../runs/dpo/seed-0/train``)."""
    parts = [path.resolve().parts for path in paths]
    if len(parts) > 1:
        shared = 0
        while all(len(p) > shared + 1 for p in parts) and len({p[-1 - shared] for p in parts}) == 1:
            shared += 1
        parts = [p[: len(p) - shared] for p in parts]
    for count in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-count:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(path) for path in paths]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_metrics(path) if path.is_file() else []


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, tuples lists, other objects their str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


# --- metrics --------------------------------------------------------------------------------


def metric_series(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Curves ``{key: {"x": steps, "y": values}}`` and the skipped steps.

    A curve longer than ``MAX_POINTS`` is averaged over equal step buckets (its ``bucketed``
    field says how many records each point stands for); the tables use the last records.
    """
    curves: dict[str, dict[str, list]] = {}
    skipped = []
    for record in records:
        step = record.get("step")
        if not isinstance(step, int):
            continue
        if "skipped" in record:
            skipped.append({"step": step, "reason": str(record["skipped"])})
            continue
        for key, value in record.items():
            if key == "step" or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) or value is None:
                curve = curves.setdefault(key, {"x": [], "y": []})
                curve["x"].append(step)
                curve["y"].append(plain(float(value)) if value is not None else None)
    for curve in curves.values():
        size = len(curve["x"])
        if size > MAX_POINTS:
            bucket = math.ceil(size / MAX_POINTS)
            curve["x"] = [curve["x"][min(i + bucket, size) - 1] for i in range(0, size, bucket)]
            curve["y"] = [_mean(curve["y"][i : i + bucket]) for i in range(0, size, bucket)]
            curve["bucketed"] = bucket
    return {"curves": curves, "skipped": skipped, "records": len(records)}


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def last_values(records: list[dict[str, Any]], prefix: str = "") -> dict[str, Any]:
    """The last logged value of every key (train keys, or ``eval/`` ones with ``prefix``)."""
    last: dict[str, Any] = {}
    for record in records:
        if "skipped" in record:
            continue
        for key, value in record.items():
            if key != "step" and key.startswith(prefix) and not isinstance(value, (bool, str)):
                if prefix or not key.startswith("eval/"):
                    last[key] = plain(value)
                    last.setdefault("_steps", {})[key] = record.get("step")
    return last


# --- evals ----------------------------------------------------------------------------------


def _eval_result_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path)
        if isinstance(data, dict) and {"benchmark", "metrics"} <= set(data):
            files.append(path)
    return files


def collect_evals(folder: Path, run_order: Sequence[str] = ()) -> dict[str, Any] | None:
    """Benchmark results saved as ``mmdpo eval`` saves them under ``folder/eval/<label>/``.

    Returns ``{"labels": [...], "benchmarks": {name: {"results": {label: summary},
    "examples": [...]}}}`` or None when there are none. Labels: baselines first (before,
    sft, ...), then those named like runs in run order, then the rest by name.
    """
    root = folder / EVAL_DIR
    if not root.is_dir():
        return None
    found: dict[str, list[Path]] = {}
    if _eval_result_files(root):
        found[EVAL_DIR] = _eval_result_files(root)
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if files := _eval_result_files(child):
            found[child.name] = files
    if not found:
        return None
    labels = _order_labels(list(found), run_order)
    benchmarks: dict[str, dict[str, Any]] = {}
    for label in labels:
        for path in found[label]:
            summary = _read_json(path)
            entry = benchmarks.setdefault(summary["benchmark"], {"results": {}, "paths": {}})
            entry["results"][label] = _eval_summary(summary, path)
            entry["paths"][label] = path
    for entry in benchmarks.values():
        entry["examples"] = _eval_examples(entry.pop("paths"), labels)
    return {"labels": labels, "benchmarks": benchmarks}


def _order_labels(labels: list[str], run_order: Sequence[str]) -> list[str]:
    def key(label: str) -> tuple[int, int, str]:
        if label in BASELINE_LABELS:
            return (0, BASELINE_LABELS.index(label), label)
        tails = [name.split("/")[-1] for name in run_order]
        if label in tails:
            return (1, tails.index(label), label)
        return (3 if label == "after" else 2, 0, label)

    return sorted(labels, key=key)


def _eval_summary(summary: dict[str, Any], path: Path) -> dict[str, Any]:
    keep = ("version", "kind", "metrics", "n", "model", "adapter", "generated", "source")
    out = {key: plain(summary.get(key)) for key in keep}
    out["file"] = str(path)
    out["created"] = summary.get("created")
    return out


def _eval_examples(paths: dict[str, Path], labels: list[str]) -> list[dict[str, Any]]:
    """A few records answered under every label, those whose score changed first."""
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for label, path in paths.items():
        for record in _read_jsonl(path.with_name(f"{path.stem}.samples.jsonl")):
            if "id" in record:
                records.setdefault(str(record["id"]), {})[label] = record
    shared = [rid for rid, by_label in records.items() if len(by_label) == len(paths)]
    if len(paths) > 1:
        changed = [rid for rid in shared if _score_changed(records[rid])]
        shared = changed + [rid for rid in shared if rid not in set(changed)]
    examples = []
    source_dir = _source_dir(next(iter(paths.values())))
    for rid in shared[:EVAL_EXAMPLES]:
        by_label = records[rid]
        first = next(iter(by_label.values()))
        image = _example_image(first.get("image"), source_dir)
        examples.append(
            {
                "id": rid,
                "prompt": plain(first.get("prompt")),
                "image": image,
                "label": plain(first.get("label", first.get("answer"))),
                "answers": {
                    label: {
                        "response": plain(by_label[label].get("response")),
                        "score": plain(by_label[label].get("score")),
                    }
                    for label in labels
                    if label in by_label
                },
            }
        )
    return examples


def _score_changed(by_label: dict[str, dict[str, Any]]) -> bool:
    return len({json.dumps(record.get("score")) for record in by_label.values()}) > 1


def _source_dir(result_path: Path) -> Path | None:
    source = (_read_json(result_path) or {}).get("source")
    if not isinstance(source, str):
        return None
    path = Path(source)
    return path if path.is_dir() else path.parent


def _example_image(name: Any, source_dir: Path | None) -> str | None:
    """The record's image as a thumbnail, when it can be found beside the benchmark's data."""
    if not isinstance(name, str) or source_dir is None:
        return None
    for candidate in (source_dir / name, source_dir / "images" / name):
        if candidate.is_file():
            try:
                return thumbnail_data_uri(candidate)
            except (OSError, ValueError):
                return None
    return None


# --- one run --------------------------------------------------------------------------------


def collect_checkpoints(run: Path) -> list[dict[str, Any]]:
    out = []
    for folder in list_checkpoints(run):
        manifest = _read_json(folder / MANIFEST) or {}
        files = manifest.get("files", {})
        weights = next((files[n] for n in sorted(files) if n.endswith(".safetensors")), {})
        out.append(
            {
                "name": folder.name,
                "path": str(folder),
                "step": manifest.get("step"),
                "files": len(files),
                "bytes": sum(int(entry.get("bytes", 0)) for entry in files.values()),
                "weights_sha256": weights.get("sha256"),
                "written": _mtime(folder / MANIFEST),
            }
        )
    return out


def _mtime(path: Path) -> str | None:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime))
    except OSError:
        return None


def wall_seconds(run: Path) -> float | None:
    """From ``config.yaml`` (written at the start) to the newest file the run wrote."""
    try:
        start = (run / CONFIG_FILE).stat().st_mtime
    except OSError:
        return None
    ends = [
        (run / name).stat().st_mtime
        for name in (METRICS_FILE, SAMPLES_FILE)
        if (run / name).is_file()
    ]
    ends += [(folder / MANIFEST).stat().st_mtime for folder in list_checkpoints(run)]
    return round(max(ends) - start, 1) if ends else None


def collect_run(path: Path, name: str) -> dict[str, Any]:
    """Everything the page shows about one run; missing files are listed in ``missing``."""
    config = _read_yaml(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else None
    records = _read_jsonl(path / METRICS_FILE)
    summary = _read_json(path / DATA_SUMMARY_FILE) if (path / DATA_SUMMARY_FILE).is_file() else None
    samples = _read_jsonl(path / SAMPLES_FILE) if (path / SAMPLES_FILE).is_file() else None
    checkpoints = collect_checkpoints(path)
    present = {
        CONFIG_FILE: config is not None,
        METRICS_FILE: bool(records),
        DATA_SUMMARY_FILE: summary is not None,
        SAMPLES_FILE: samples is not None,
        CHECKPOINTS_DIR: bool(checkpoints),
    }
    return {
        "name": name,
        "path": str(path),
        "config": plain(config),
        "metrics": metric_series(records),
        "last": last_values(records),
        "last_eval": last_values(records, "eval/"),
        "data_summary": plain(summary),
        "samples": plain(samples),
        "checkpoints": checkpoints,
        "calibration": plain(_read_json(path / CALIBRATION_FILE)),
        "evals": plain(collect_evals(path, [name])),
        "wall_seconds": wall_seconds(path),
        "missing": [{"file": f, "why": WHY_MISSING[f]} for f, ok in present.items() if not ok],
    }


def config_differences(configs: Sequence[dict[str, Any] | None]) -> list[str]:
    """Dotted config keys whose values differ between runs (output folders left out)."""
    flat = [_flatten(config or {}) for config in configs]
    keys = sorted(set().union(*flat)) if flat else []
    ignored = {"train.output_dir", "reference.cache_dir"}
    return [
        key
        for key in keys
        if key not in ignored
        and len({json.dumps(f.get(key), sort_keys=True, default=str) for f in flat}) > 1
    ]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):  # an empty section says nothing a missing one does not
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def collect(paths: Sequence[str | os.PathLike], *, names: Sequence[str] | None = None) -> dict:
    """The report's data for run folders and collections of runs.

    Args:
        paths: run folders, or folders holding runs (an ablation, a demo, a preset).
        names: a label per run found, in order (default: short unique path names).

    Raises:
        FileNotFoundError: a path does not exist or holds no run.
    """
    roots = [Path(p) for p in paths]
    runs: list[Path] = []
    collections: list[Path] = []
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        found = find_runs(root)
        if not found:
            raise FileNotFoundError(
                f"{root}: not an mmdpo run folder (config.yaml with metrics.jsonl or "
                "checkpoints/) and no run below it"
            )
        if found != [root]:
            collections.append(root)
        runs += [run for run in found if run not in runs]
    labels = list(names) if names is not None else run_names(runs)
    if len(labels) != len(runs):
        raise ValueError(f"names: {len(labels)} given for {len(runs)} runs")
    collected = [collect_run(run, label) for run, label in zip(runs, labels, strict=True)]
    collection_evals = []
    for root in collections:
        evals = collect_evals(root, labels)
        if evals:
            collection_evals.append({"path": str(root), **plain(evals)})
    return {
        "roots": [str(root) for root in roots],
        "runs": collected,
        "collection_evals": collection_evals,
        "config_differences": config_differences([run["config"] for run in collected]),
    }
