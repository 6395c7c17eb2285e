#!/usr/bin/env bash
# One short CUDA check of the engine, for a lent GPU machine (the `device` tool): the wheels
# once, here (bash benchmarks/gpu_wheels.sh), then run with carry=[".whl"]:
#   bash benchmarks/gpu_check.sh
# It runs the engine tests (training with 4-bit/8-bit LoRA, every reference mode, resume,
# vision) on the GPU: accelerate puts the models on CUDA when one is there. Then the sampling
# engine's tests with their models on CUDA (MMDPO_TEST_DEVICE=cuda: greedy ids against
# transformers' generate, the shared-prompt attention against a copy per sample, for text and
# the four VLM families), which otherwise run on CPU only.
set -u
. benchmarks/gpu_env.sh
timeout "${GPU_TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/mmdpo/test_train.py tests/mmdpo/test_forward.py tests/mmdpo/test_logprobs.py \
  -o addopts="" --durations=8 2>&1 | tee "$OUT/gpu_tests.log"
MMDPO_TEST_DEVICE=cuda timeout "${GPU_SAMPLING_TIMEOUT:-120}" python3 -m pytest -q \
  -p no:cacheprovider -m "not slow" tests/mmdpo/test_sampling.py -o addopts="" \
  --durations=5 2>&1 | tee "$OUT/gpu_sampling_tests.log"
