"""``python -m tests.mmdpo.sharded_on_cpu train ...``: ``mmdpo.cli`` under accelerate's FSDP or
DeepSpeed on CPU processes that talk over gloo, for the tests in ``test_sharded.py``.

PyTorch's FSDP (1 and 2) and DeepSpeed's ZeRO (with its CPU accelerator) run on CPU over gloo,
but accelerate turns them on only when it finds a GPU-like device: without one it makes an FSDP
launch plain MULTI_CPU, and a DeepSpeed launch a single process. This wrapper changes only that
choice, in accelerate's state; the wrapping, sharding, gathering and the engine's checkpoints
that follow are the real code paths. Launch it with ``accelerate launch`` in place of
``-m mmdpo.cli``.
"""

import os
import sys

from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType


def _fsdp_on_cpu() -> None:
    # accelerate's FSDP plugin asks an accelerator for the device of sync_module_states; every
    # process loads the same weights from disk here, so there is nothing to sync.
    os.environ["FSDP_SYNC_MODULE_STATES"] = "false"
    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init


def _deepspeed_on_cpu() -> None:
    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        return "gloo", DistributedType.MULTI_CPU

    PartialState._prepare_backend = prepare_backend
    original = Accelerator.__init__

    def init(self, *args, cpu=False, **kwargs):  # the engine asks for cpu=True without CUDA
        original(self, *args, cpu=False, **kwargs)

    Accelerator.__init__ = init


def main() -> int:
    # "cpu", not accelerate's "cpu:0", which FSDP compares with the parameters' device.
    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") == "true":
        _deepspeed_on_cpu()
    elif os.environ.get("ACCELERATE_USE_FSDP", "false") == "true":
        _fsdp_on_cpu()
    else:
        raise SystemExit("launch with an FSDP or DeepSpeed accelerate config")
    from mmdpo.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
