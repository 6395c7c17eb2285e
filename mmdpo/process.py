"""Which process this is under ``accelerate launch`` / torchrun, without importing torch."""

import os


def is_main_process() -> bool:
    """True in a single process and in rank 0 of a multi-process launch."""
    return int(os.environ.get("RANK", "0")) == 0
