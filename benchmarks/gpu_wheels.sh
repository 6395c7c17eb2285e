#!/usr/bin/env bash
# Wheels for the lent GPU machine (the `device` tool), which has torch, accelerate,
# huggingface_hub, tokenizers, safetensors, pandas, pyarrow and xxhash but not trl, datasets or
# bitsandbytes, and an older transformers. Run once here, in the repository root; the wheels
# land in .whl (git-ignored through .git/info/exclude), which gpu_env.sh installs there:
#   bash benchmarks/gpu_wheels.sh
# The versions are the ones this project is tested with (pyproject.toml, dev extra); the
# machine's Python is 3.12 on x86-64. The carried tree must stay under 64 MiB: these wheels
# are ~56 MiB (bitsandbytes alone 41 MiB), the tracked tree ~1.5 MiB; the script prints the
# total. The machine's accelerate (1.15) is recent enough for TRL and is not carried.
set -euo pipefail
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  transformers==5.24.0 peft==0.21.2 trl==1.16.0 bitsandbytes==0.50.2 datasets==5.2.0 \
  dill==0.4.1 multiprocess==0.70.19
du -ch .whl/*.whl | tail -1
