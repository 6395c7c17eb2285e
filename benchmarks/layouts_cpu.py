"""CPU cost of one micro-batch in the three forward layouts: two rows, shared prompt, packed.

A tiny-width Llama-style decoder (hidden 256 by default, 4 layers, 32k vocabulary, LoRA r 16
on every linear layer) on realistic lengths: prompts of 512 to 2048 tokens with responses of
64 to 128 (prompt-heavy), and a length-skewed batch (prompts 48 to 1536, responses 32 to 512).
Per case and layout it measures, each in a fresh process on one torch thread:

- the policy step: forward + backward of the sequence log-probs (CPU seconds, median);
- the reference pass: a no-grad forward with the adapter off (CPU seconds, median);
- the peak resident memory the policy step adds (a sampler reads /proc/self/statm);
- the positions the decoder computes (rows x width) and the output-layer rows.

    PYTHONPATH=$PWD python benchmarks/layouts_cpu.py [--hidden 256] [--repeats 3]
    PYTHONPATH=$PWD python benchmarks/layouts_cpu.py --cases prompt-1024 --layouts shared_prompt

Timings are indicative: other jobs share the machine (the script prints ``uptime``), so it
reports CPU time on one thread, which they disturb less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

LAYOUT_NAMES = (
    "two_row", "shared_prompt", "shared_prompt_bool", "shared_prompt_blocks",
    "packed", "packed_blocks",
)  # fmt: skip
# name -> list of (prompt, chosen, rejected) token counts
CASES = {
    "prompt-512": [(512, 96, 64), (512, 128, 80), (512, 64, 112), (512, 100, 128)],
    "prompt-1024": [(1024, 96, 64), (1024, 128, 80), (1024, 64, 112), (1024, 100, 128)],
    "prompt-2048": [(2048, 96, 64), (2048, 128, 80), (2048, 64, 112), (2048, 100, 128)],
    "skewed": [
        (48, 40, 32), (96, 200, 64), (160, 64, 96), (256, 128, 300),
        (384, 96, 48), (640, 512, 200), (1024, 64, 128), (1536, 256, 96),
    ],
}  # fmt: skip


def make_batch(shape: list[tuple[int, int, int]], vocab: int, seed: int = 0):
    from mmdpo.data.collate import PreferenceCollator
    from mmdpo.types import TokenizedPair

    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(1, vocab) for _ in range(n)]

    pairs = [
        TokenizedPair(id=str(i), prompt_ids=ids(p), chosen_ids=ids(c), rejected_ids=ids(r))
        for i, (p, c, r) in enumerate(shape)
    ]
    return PreferenceCollator(0)(pairs)


def make_model(hidden: int, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmdpo.models.lora import apply_lora

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=2,
        max_position_embeddings=8192, attn_implementation="sdpa",
    )  # fmt: skip
    policy = apply_lora(LlamaForCausalLM(config), r=16, alpha=32, dropout=0.0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return policy


def forward_function(policy, layout: str):
    """The forward of a layout name; ``_blocks``: the ``mmdpo_layout`` attention (no L x L
    mask), ``_bool``: a boolean mask under SDPA, else the additive float mask under SDPA."""
    from mmdpo import layout_forward as module
    from mmdpo.forward import concatenated_forward
    from mmdpo.layout_attention import use_layout_attention
    from mmdpo.layouts import attention_mask_4d

    if layout == "two_row":
        return concatenated_forward
    if layout.endswith("_blocks"):
        use_layout_attention(policy.get_base_model())
        layout = layout.removesuffix("_blocks")
    if layout == "shared_prompt_bool":
        module.layout_attention_mask = lambda model, built: attention_mask_4d(built)
        return lambda model, batch: module.layout_forward(model, batch, "shared_prompt")
    return lambda model, batch: module.layout_forward(model, batch, layout)


class PeakRss:
    """Highest resident set size seen by a sampler thread (every ~1 ms), in MiB."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page / 2**20

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.001)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.now())


def setup(case: str, layout: str, hidden: int, layers: int):
    import torch

    torch.set_num_threads(1)
    policy = make_model(hidden, layers)
    batch = make_batch(CASES[case], 32000)
    forward = forward_function(policy, layout)
    policy.train()

    def policy_step():
        policy.zero_grad(set_to_none=True)
        logps = forward(policy, batch)
        (logps.chosen(True) - logps.rejected(True)).sum().backward()

    return policy, batch, forward, policy_step


def child(case: str, layout: str, hidden: int, layers: int, steps: int) -> dict:
    """CPU seconds of the policy step and of the reference pass (medians of ``steps``)."""
    from mmdpo.layouts import build_layout
    from mmdpo.reference import adapter_disabled

    policy, batch, forward, policy_step = setup(case, layout, hidden, layers)
    policy_step()  # warm-up
    step_cpu, reference_cpu = [], []
    for _ in range(steps):
        started = time.process_time()
        policy_step()
        step_cpu.append(time.process_time() - started)
        started = time.process_time()
        with adapter_disabled(policy):
            forward(policy, batch)
        reference_cpu.append(time.process_time() - started)
    if layout == "two_row":
        positions, head_rows = batch.input_ids.numel(), int(batch.loss_mask[:, 1:].sum())
    else:
        built = build_layout(batch, layout.split("_bool")[0].split("_blocks")[0])
        positions, head_rows = built.input_ids.numel(), int(built.keep.sum())
    return {
        "case": case, "layout": layout, "step_cpu_s": statistics.median(step_cpu),
        "reference_cpu_s": statistics.median(reference_cpu),
        "positions": positions, "head_rows": head_rows,
    }  # fmt: skip


def memory_child(case: str, layout: str, hidden: int, layers: int) -> dict:
    """Peak resident memory one policy step adds. The parent starts this process with glibc
    returning every block of 64 KiB or more to the system when freed, so the resident size
    follows the live tensors rather than what the allocator keeps cached."""
    import ctypes
    import gc

    _, _, _, policy_step = setup(case, layout, hidden, layers)
    policy_step()  # warm-up
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = PeakRss().now()
    with PeakRss() as rss:
        policy_step()
    return {"case": case, "layout": layout, "peak_mib": rss.peak - before}


def run_child(case: str, layout: str, args: argparse.Namespace, memory: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", case, layout, "--hidden", str(args.hidden),
               "--layers", str(args.layers), "--steps", str(args.steps)]  # fmt: skip
    env = dict(os.environ)
    if memory:
        command.append("--memory")
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--layouts", default=",".join(LAYOUT_NAMES))
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per layout")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "LAYOUT"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.memory:
            result = memory_child(*args.child, args.hidden, args.layers)
        else:
            result = child(*args.child, args.hidden, args.layers, args.steps)
        print("RESULT " + json.dumps(result))
        return
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    layouts = args.layouts.split(",")
    rows = []
    for case in args.cases.split(","):
        runs: dict[str, list[dict]] = {name: [] for name in layouts}
        peaks: dict[str, float] = {}
        for repeat in range(args.repeats):  # alternate the layouts' order between repeats
            for name in layouts if repeat % 2 == 0 else list(reversed(layouts)):
                runs[name].append(run_child(case, name, args))
        for name in layouts:
            peaks[name] = run_child(case, name, args, memory=True)["peak_mib"]
        base = statistics.median(r["step_cpu_s"] for r in runs[layouts[0]])
        for name in layouts:
            step = statistics.median(r["step_cpu_s"] for r in runs[name])
            rows.append(
                f"| {case} | {name} | {runs[name][0]['positions']} | {runs[name][0]['head_rows']} "
                f"| {step:.2f} | {base / step:.2f}x "
                f"| {statistics.median(r['reference_cpu_s'] for r in runs[name]):.2f} "
                f"| {peaks[name]:.0f} |"
            )
            print(rows[-1], flush=True)
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(
        f"\nhidden {args.hidden}, {args.layers} layers, 1 thread, medians of {args.repeats} "
        f"processes x {args.steps} steps; speed-up against {layouts[0]}\n"
    )
    print("| case | layout | positions | head rows | policy step CPU s | speed-up "
          "| reference CPU s | step peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
