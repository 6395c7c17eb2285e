"""Models and pairs on disk for the cases of a run, and each pair's layout for the FLOP count.

Runs in a child process (``bench_trl.py --child prepare``). A dataset is either an original
case's family (``text``, ``qwen2_vl``, ``llava``: the preset's 512-token shapes) or a scaling
workload (``scaling.py``). Files are built once per work folder and reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import scaling
import workload


def dataset_key(case: Any) -> str:
    """The dataset a case trains on (its workload, or its family for the original cases)."""
    return case.workload or case.family


def _pairs_file(root: Path, preset: str, key: str, n: int) -> tuple[Path, int, str, int]:
    """(pairs file, max_length, family, image size) of dataset ``key``; written if missing."""
    sizes = workload.PRESETS[preset]
    if key in scaling.WORKLOADS:
        w = scaling.WORKLOADS[key]
        path = root / f"pairs-{preset}-{key}-{n}.jsonl"
        if not path.is_file():
            pairs = scaling.workload_pairs(w, preset, n, root / f"images-{preset}")
            workload.save_pairs(pairs, path)
        return path, w.max_length(preset), w.family, w.shrunk(preset).image_size
    vision = key != "text"
    path = root / f"pairs-{preset}-{'vision' if vision else 'text'}.jsonl"
    if path.is_file() and len(workload.load_pairs(path)) < n:
        path.unlink()  # written for fewer steps
    if not path.is_file():
        image_dir = root / f"images-{preset}"
        pairs = workload.synthetic_pairs(n, sizes=sizes, vision=vision, image_dir=image_dir)
        workload.save_pairs(pairs, path)
    return path, sizes.max_length, key, sizes.image_size


def _layout(config: Any, samples: list[Any]) -> list[dict[str, Any]]:
    """Per pair: the two rows' token counts and each image's patch count."""
    from mmdpo.data.transform import PairTransform, TransformSettings
    from mmdpo.setup import load_processing

    processing, is_vlm = load_processing(config)
    transform = PairTransform(processing, TransformSettings(config.data.max_length), is_vlm=is_vlm)
    layout = []
    for sample in samples:
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
        rows = [prompt + len(pair.chosen_ids), prompt + len(pair.rejected_ids)]
        layout.append({"rows": rows, "prompt": prompt, "patches": patches})
    return layout


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec``: work_dir, preset, datasets {key: pairs needed}. Returns per dataset its model
    folder, pairs file, max_length, per-pair layout and the model's shape (for FLOPs)."""
    from flops import model_shape
    from runners import mmdpo_config, mmdpo_samples

    root = Path(spec["work_dir"])
    preset = spec["preset"]
    out: dict[str, Any] = {}
    for key, n in spec["datasets"].items():
        pairs_file, max_length, family, image_size = _pairs_file(root, preset, key, n)
        folder = workload.model_folder(root, family, preset, image_size)
        run_spec = {
            "model_dir": str(folder),
            "pairs": str(pairs_file),
            "limit_pairs": n,
            "quantization": "none",
            "reference": "adapter_off",
            "max_length": max_length,
            "batch_size": 1,
            "steps": 1,
        }
        config = mmdpo_config(run_spec, root / "layout")
        out[key] = {
            "model_dir": str(folder),
            "pairs": str(pairs_file),
            "max_length": max_length,
            "layout": _layout(config, mmdpo_samples(run_spec)),
            "shape": model_shape(str(folder)),
        }
    return out
