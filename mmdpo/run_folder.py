"""The run folder (``train.output_dir``): its layout, and what training, eval and export read.

    config.yaml            the run's config, as trained
    calibration.json       the score calibration fitted on the training data
    metrics.jsonl          one record per logged step (always written)
    invalid_rows.jsonl     rows left out with data.skip_invalid (loading and tokenizing)
    plots/*.png            the curves, drawn at the end of the run
    checkpoints/step-N/    atomic checkpoints (``mmdpo.checkpoint``)
    reference_cache/       precomputed reference log-probs (reference.mode=precomputed)
    tensorboard/           event files with train.trackers=[tensorboard]
    eval/                  what ``mmdpo eval`` and ``mmdpo train TASK --eval`` write
    data_summary.json      pairs per group, score distributions, token lengths (the report)
    samples.jsonl          a few held-out prompts answered by the trained and the base model
    report.html            the run's report (``mmdpo report``)

Every file name of the layout is here, and nowhere else. A run starts only in a folder that
does not already hold one (``prepare``), so two runs never mix their metrics and checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdpo import checkpoint as ckpt
from mmdpo.config import Config, ConfigError, load_config, read_yaml, save_config

CONFIG_FILE = "config.yaml"
CALIBRATION_FILE = "calibration.json"
METRICS_FILE = "metrics.jsonl"
INVALID_ROWS_FILE = "invalid_rows.jsonl"
PLOTS_DIR = "plots"
REFERENCE_CACHE_DIR = "reference_cache"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
DATA_SUMMARY_FILE = "data_summary.json"
SAMPLES_FILE = "samples.jsonl"
REPORT_FILE = "report.html"


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


def check_output_dir(path: str | Path, option: str) -> None:
    """Refuse a folder to be created or written that is a file, or lies under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{option} {path}: is a file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(
                    f"{option} {path}: {parent} is a file, so no folder can be made under it"
                )
            break


@dataclass(frozen=True)
class RunFolder:
    """One run's folder; ``RunFolder(config.train.output_dir)``."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def calibration_file(self) -> Path:
        return self.path / CALIBRATION_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def invalid_rows_file(self) -> Path:
        return self.path / INVALID_ROWS_FILE

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / ckpt.CHECKPOINTS_DIR

    @property
    def reference_cache_dir(self) -> Path:
        return self.path / REFERENCE_CACHE_DIR

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL_DIR

    @property
    def data_summary_file(self) -> Path:
        return self.path / DATA_SUMMARY_FILE

    @property
    def samples_file(self) -> Path:
        return self.path / SAMPLES_FILE

    @property
    def report_file(self) -> Path:
        return self.path / REPORT_FILE

    # --- starting a run ----------------------------------------------------------------

    def holds_run(self) -> bool:
        """Whether a run has already logged a step or saved a checkpoint here.

        A folder where a run only started (config written, then it failed before its first
        step) does not count: running again there loses nothing.
        """
        if self.metrics_file.is_file() and self.metrics_file.stat().st_size > 0:
            return True
        root = self.checkpoints_dir
        return root.is_dir() and any(
            ckpt._COMPLETE_NAME.match(p.name) for p in root.iterdir() if p.is_dir()
        )

    def prepare(self, *, resume: bool) -> None:
        """Check, before any data or model is loaded, that a run may start (or resume) here."""
        check_output_dir(self.path, "train.output_dir")
        if not resume and self.holds_run():
            raise RunFolderError(
                f"train.output_dir {self.path}: already holds a run (metrics.jsonl, "
                "checkpoints/); continue it with --resume, or choose another "
                "train.output_dir (or remove the folder) to start anew"
            )

    def save_config(self, config: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(config, self.config_file)

    def record_invalid(self, rows: Iterable[dict[str, Any]], *, stage: str, split: str) -> int:
        """Write the rows left out at ``stage`` ("load", "tokenize") of ``split`` ("train",
        "eval") into invalid_rows.jsonl, replacing what an earlier attempt wrote for the same
        stage and split; return how many. The one writer of that file (main process only).
        """
        kept = [
            row
            for row in self._invalid_rows()
            if (row.get("stage"), row.get("split")) != (stage, split)
        ]
        new = [{**row, "stage": stage, "split": split} for row in rows]
        rows_out = kept + new
        if not rows_out:
            self.invalid_rows_file.unlink(missing_ok=True)
            return 0
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.invalid_rows_file.with_name(INVALID_ROWS_FILE + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            for row in rows_out:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(temporary, self.invalid_rows_file)
        return len(new)

    def _invalid_rows(self) -> list[dict[str, Any]]:
        if not self.invalid_rows_file.is_file():
            return []
        rows = []
        for line in self.invalid_rows_file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return [row for row in rows if isinstance(row, dict)]

    # --- reading a run -----------------------------------------------------------------

    def is_run(self) -> bool:
        """An mmdpo run: ``config.yaml`` and a ``checkpoints/`` folder."""
        return self.config_file.is_file() and self.checkpoints_dir.is_dir()

    def config(self) -> Config:
        """The run's config; a RunFolderError when it is missing or no longer valid."""
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path}: no such run folder")
        if not self.config_file.is_file():
            raise RunFolderError(f"{self.path}: no {CONFIG_FILE}; is this an mmdpo run folder?")
        try:
            return load_config(self.config_file)
        except ConfigError as err:
            raise RunFolderError(f"{self.config_file}: {err}") from None

    def config_dict(self) -> dict[str, Any]:
        """The run's config.yaml as written, without validation ({} when there is none)."""
        return read_yaml(self.config_file) if self.config_file.is_file() else {}

    def latest_checkpoint(self, report: Callable[[str], None] | None = None) -> Path | None:
        """The newest checkpoint that verifies; damaged newer ones are reported and skipped."""
        return ckpt.latest_checkpoint(self.path, report=report)

    def metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl ([] when there are none)."""
        from mmdpo.metrics_log import read_metrics

        return read_metrics(self.metrics_file) if self.metrics_file.is_file() else []
