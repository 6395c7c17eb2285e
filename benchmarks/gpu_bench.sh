#!/usr/bin/env bash
# The GPU section of RESULTS.md: one short prepared run of bench_trl.py on a lent GPU machine
# (the `device` tool), with the wheels carried as for gpu_check.sh (.whl must hold trl and
# datasets besides transformers, peft and bitsandbytes):
#   run(command="OUT=$OUT bash benchmarks/gpu_bench.sh", carry=[".whl"], timeout_s=540)
# Writes $OUT/RESULTS-gpu.md and $OUT/RESULTS-gpu.json; copy them to benchmarks/ here. Each
# engine run is a fresh process (a few seconds of CUDA start each), so keep the cases few.
set -u
. benchmarks/gpu_env.sh
timeout "${GPU_BENCH_TIMEOUT:-480}" python3 benchmarks/bench_trl.py \
  --cases "${GPU_CASES:-text-adapter_off,text-precomputed,qwen2_vl-adapter_off,llava-adapter_off,text-4bit-adapter_off}" \
  --repeats "${GPU_REPEATS:-2}" --steps "${GPU_STEPS:-6}" \
  --work-dir /tmp/mmdpo-bench-gpu --out "$OUT/RESULTS-gpu.md" 2>&1 | tee "$OUT/gpu_bench.log"
cp /tmp/mmdpo-bench-gpu/full/bench.log "$OUT/bench_children.log" 2>/dev/null || true
