"""The application's training entry point: a config's data loaded with the adapters, then the
engine. ``mmdpo train``, ``mmdpo.train(config)`` and the presets all come through here.

    from tasks.run import train_run
    result = train_run(config)                      # loads config.data, trains

It lives outside the engine (``mmdpo/``) because it composes the engine with the data
adapters, which the engine may not import; see docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdpo.config import Config, ConfigError
from mmdpo.process import is_main_process
from mmdpo.run_folder import RunFolder
from mmdpo.trainer import RunResult
from mmdpo.trainer import train as train_engine

ENTRY_KEYS = ("path", "format", "modality", "source", "columns")


def train_run(config: Config, *, resume: bool = False) -> RunResult:
    """Load and validate ``config.data`` (invalid rows into the run folder), then train.

    The run folder is checked first: a folder that already holds a run is refused unless
    ``resume``, before any data or model is loaded.
    """
    folder = RunFolder(config.train.output_dir)
    folder.prepare(resume=resume)
    train_samples, eval_samples = load_run_data(config, folder)
    return train_engine(config, train_samples, eval_samples, resume=resume)


def data_entries(value: Any, config: Config) -> list[dict[str, Any]]:
    """data.train / data.eval as a list of {path, format, modality, source, columns}."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        entry = {"path": item} if isinstance(item, str) else dict(item)
        if "path" not in entry:
            raise ConfigError(f"data: each entry needs a path, got {item!r}")
        unknown = set(entry) - set(ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"data: unknown key(s) {sorted(unknown)} in entry {item!r}")
        entry.setdefault("format", config.data.format)
        entry.setdefault("modality", config.data.modality)
        entry.setdefault("source", config.data.source)
        entry.setdefault("columns", config.data.columns)
        out.append(entry)
    return out


def load_run_data(config: Config, folder: RunFolder | Path) -> tuple[list[Any], list[Any]]:
    """Training and held-out samples, validated; rows left out go to invalid_rows.jsonl."""
    from data_adapters import adopt_training_sources, load_samples
    from mmdpo.data.pipeline import split_eval

    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    grouped = config.data.calibration != "none" or config.loss.kwargs.get("tau_good") == "auto"

    def load(value: Any, split: str, train: list[Any] | None = None) -> list[Any]:
        samples, invalid = [], []
        for entry in data_entries(value, config):
            result = load_samples(
                entry["path"],
                entry["format"],
                columns=entry["columns"],
                modality=entry["modality"],
                source_name=entry["source"],
                skip_invalid=config.data.skip_invalid,
            )
            if train is not None:  # held-out files join the training data's score groups
                notes = adopt_training_sources(train, result, str(entry["path"]), grouped)
                if notes and is_main_process():
                    print("\n".join(notes))
            samples += result.samples
            invalid += result.invalid
        if is_main_process():
            rows = [row.to_dict() for row in invalid]
            if folder.record_invalid(rows, stage="load", split=split):
                print(f"skipped {len(rows)} invalid row(s): see {folder.invalid_rows_file}")
        return samples

    train = load(config.data.train, "train")
    if config.data.eval is not None:
        return train, load(config.data.eval, "eval", train)
    return split_eval(train, config.data.eval_fraction, config.train.seed)
