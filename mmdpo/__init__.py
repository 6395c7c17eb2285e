"""mmdpo: Uni-DPO and the DPO family for language and vision-language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmdpo.config import Config
    from mmdpo.trainer import RunResult

__version__ = "0.1.0"


def train(
    config: Config,
    train_samples: list[Any] | None = None,
    eval_samples: list[Any] | None = None,
    *,
    resume: bool = False,
) -> RunResult:
    """Train ``config``'s model; return the run's outcome.

    Without ``train_samples`` the data named in ``config.data`` are loaded and validated with
    the data adapters (through the CLI's composition root, so the engine itself never imports
    them); with them, the given ``PreferenceSample`` lists are used as they are.
    """
    if train_samples is None:
        from mmdpo.cli import train_from_config

        return train_from_config(config, resume=resume)
    from mmdpo.trainer import train as run_training

    return run_training(config, train_samples, eval_samples, resume=resume)
