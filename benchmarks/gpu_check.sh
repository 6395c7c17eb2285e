#!/usr/bin/env bash
# One short CUDA check of the engine, for a lent GPU machine (the `device` tool), e.g.:
#   echo /.whl/ >> .git/info/exclude; pip download the wheels below into .whl (see README
#   of the device tool), then run with carry=[".whl"]:  bash benchmarks/gpu_check.sh
# It runs the engine tests (training with 4-bit/8-bit LoRA, every reference mode, resume,
# vision) on the GPU: accelerate puts the models on CUDA when one is there.
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, bitsandbytes, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${GPU_TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/mmdpo/test_train.py tests/mmdpo/test_forward.py tests/mmdpo/test_logprobs.py \
  -o addopts="" --durations=8 2>&1 | tee "$OUT/gpu_tests.log"
