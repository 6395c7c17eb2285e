#!/usr/bin/env bash
# The GPU table (issue 13, item 4): the scaling workloads at a 1B-class shape (preset gpu1b:
# TinyLlama-1.1B's decoder, a 300M ViT; bf16 weights and autocast; QLoRA: NF4 base, bf16
# compute), mmdpo beside TRL, each arm's same-work check (fp32, loss and LoRA gradients) in
# the same process as its first timed run. One short run on a lent H100/H200:
#   bash benchmarks/gpu_wheels.sh                       # once, here: wheels into .whl
#   run(command="OUT=$OUT bash benchmarks/gpu_bench.sh", carry=[".whl"], timeout_s=420)
# It writes $OUT/RESULTS-gpu.md, .json and -scaling.png (copy them into benchmarks/), and
# gpu_bench.log / bench_children.log. The cases run in GPU_CASES' order (default the `gpu`
# group of cases.py: 512- and 4096-token prompts, 1 and 4 images of 448 px, skewed text,
# 2048-token prompts), and the report is rewritten after each, so a run stopped by
# GPU_BENCH_TIMEOUT (default 330 s, to stay under 8 minutes of device time with the
# machine's start) still leaves the cases it finished. Each arm is a fresh process of
# ~30 s (start, two loads of the 1B model, the check step, GPU_STEPS steps).
# Dry run of the same code on CPU, with the tiny preset (about 10 minutes on 2 cores):
#   GPU_DRY_RUN=1 OUT=/tmp/gpu-dry bash benchmarks/gpu_bench.sh
set -u
. benchmarks/gpu_env.sh
preset=gpu1b
if [ -n "${GPU_DRY_RUN:-}" ]; then preset=tiny; fi
timeout "${GPU_BENCH_TIMEOUT:-330}" python3 benchmarks/bench_trl.py --preset "$preset" \
  --dtype bfloat16 --cases "${GPU_CASES:-gpu}" --repeats "${GPU_REPEATS:-1}" \
  --steps "${GPU_STEPS:-4}" --check-in-run --work-dir /tmp/mmdpo-bench-gpu \
  --out "$OUT/RESULTS-gpu.md" 2>&1 | tee "$OUT/gpu_bench.log"
cp "/tmp/mmdpo-bench-gpu/$preset/bench.log" "$OUT/bench_children.log" 2>/dev/null || true
