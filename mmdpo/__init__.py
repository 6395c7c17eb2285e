"""mmdpo: Uni-DPO and the DPO family for language and vision-language models."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmdpo.config import Config
    from mmdpo.trainer import RunResult

__version__ = "0.1.0"


def _quiet_library_noise() -> None:
    """Silence two messages that every normal run would print, often in front of an error.

    - bitsandbytes (CPUs with AVX512-BF16) logs "pip install kernels" at import: an optional
      inference kernel that training never uses (the engine keeps 4-bit layers out of that
      path, see ``mmdpo.models.quantization.keep_4bit_trainable``).
    - transformers 5 warns that ``is_gradient_checkpointing`` is deprecated whenever peft
      reads it; nothing a user can act on.
    """
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: "kernels-community" not in record.getMessage()
    )
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning
    )


_quiet_library_noise()


def train(
    config: Config,
    train_samples: list[Any] | None = None,
    eval_samples: list[Any] | None = None,
    *,
    resume: bool = False,
) -> RunResult:
    """Train ``config``'s model; return the run's outcome.

    With ``train_samples`` (``PreferenceSample`` lists) the engine trains on them as they
    are. Without, the data named in ``config.data`` are loaded and validated by the
    application layer (``tasks.run.train_run``, which composes the engine with the data
    adapters; the engine itself never imports them, and nothing here imports the CLI).
    """
    if train_samples is None:
        from tasks.run import train_run

        return train_run(config, resume=resume).result
    from mmdpo.trainer import train as run_training

    return run_training(config, train_samples, eval_samples, resume=resume)
