"""The layouts on a GPU: same log-probs and LoRA gradients as two rows, then time and memory.

For each attention path (``sdpa`` with an additive float 4D mask, ``mmdpo_layout`` block-wise SDPA,
``flex_attention`` with a BlockMask) it checks, in fp32 on a sharp-attention model, that the
shared-prompt and packed forwards give the two-row sequence log-probs and LoRA gradients, and
then times a policy step (forward + backward, bf16 autocast) per layout with peak CUDA memory.
Prepared for a lent GPU (one short run, a few minutes); on a CPU it runs too, without flex's
backward (torch 2.14 has none on CPU).

    PYTHONPATH=$PWD python benchmarks/layouts_gpu_check.py [--hidden 1024 --layers 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from layouts_cpu import CASES, make_batch  # same pairs as the CPU benchmark

IMPLEMENTATIONS = ("sdpa", "mmdpo_layout", "flex_attention")
LAYOUTS = ("two_row", "shared_prompt", "packed")


def build(hidden: int, layers: int, implementation: str, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmdpo.layout_attention import use_layout_attention
    from mmdpo.models.lora import apply_lora
    from mmdpo.tiny import sharpen_attention

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=2,
        max_position_embeddings=8192,
        attn_implementation="sdpa" if implementation == "mmdpo_layout" else implementation,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    sharpen_attention(model)
    if implementation == "mmdpo_layout":
        use_layout_attention(model)
    policy = apply_lora(model, r=16, alpha=32, dropout=0.0).to(device)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return policy.train()


def run(policy, batch, layout: str):
    from mmdpo.forward import concatenated_forward
    from mmdpo.layout_forward import layout_forward

    policy.zero_grad(set_to_none=True)
    if layout == "two_row":
        logps = concatenated_forward(policy, batch)
    else:
        logps = layout_forward(policy, batch, layout)
    (logps.chosen(True) - 0.5 * logps.rejected(False)).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in policy.named_parameters() if p.grad is not None}
    return logps.detach(), grads


def check(policy, batch) -> str:
    expected, expected_grads = run(policy, batch, "two_row")
    lines = []
    for layout in LAYOUTS[1:]:
        actual, grads = run(policy, batch, layout)
        # sums of hundreds of random tokens reach -3000, where one fp32 ulp is 2.4e-4
        logp = max(
            ((actual.chosen_sum - expected.chosen_sum).abs() / expected.chosen_sum.abs()).max(),
            (
                (actual.rejected_sum - expected.rejected_sum).abs() / expected.rejected_sum.abs()
            ).max(),
        ).item()
        grad = max(
            ((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item()
            for n, g in expected_grads.items()
        )
        # GPU kernels differ from one mask to another by fp32 rounding; rejected positions
        # shifted by one move this sharp model's sums by 5e-3 relative (hidden 128, on CPU)
        verdict = "ok" if logp <= 1e-5 and grad <= 1e-3 else "DIFFERS"
        lines.append(
            f"{layout}: max |d logp| / |logp| {logp:.1e}, "
            f"max grad diff / scale {grad:.1e} {verdict}"
        )
    return "; ".join(lines)


def timed(policy, batch, layout: str, device: str, repeats: int) -> tuple[float, float]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.autocast(device, dtype=torch.bfloat16):
        run(policy, batch, layout)  # warm-up (and flex compilation)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            sync()
            started = time.perf_counter()
            run(policy, batch, layout)
            sync()
            times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--cases", default="prompt-2048,skewed")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    for implementation in IMPLEMENTATIONS:
        if implementation == "flex_attention" and device != "cuda":
            print("flex_attention: skipped (no backward on CPU)")
            continue
        policy = build(args.hidden, args.layers, implementation, device)
        small = make_batch(CASES["skewed"][:4], 32000).to(device)
        print(f"{implementation} parity (fp32): {check(policy, small)}", flush=True)
        for case in args.cases.split(","):
            batch = make_batch(CASES[case], 32000).to(device)
            for layout in LAYOUTS:
                seconds, peak = timed(policy, batch, layout, device, args.repeats)
                print(f"| {implementation} | {case} | {layout} | {seconds * 1e3:.1f} ms "
                      f"| {peak:.0f} MiB |", flush=True)  # fmt: skip
        del policy
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
