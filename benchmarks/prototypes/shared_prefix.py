"""Prototype: one shared-prefix row per pair and the LM head on response positions only.

mmdpo's engine today runs 2B rows ``prompt + chosen`` and ``prompt + rejected`` (the prompt
twice), and the model's head projects every position of every row to the 32k vocabulary
(B x 2 x T x V logits), of which only the response positions are used.

The prototype lays each pair out as ONE row ``prompt | chosen | rejected`` with a 4D mask in
which the rejected tokens see the prompt and the earlier rejected tokens but not the chosen
ones, and position ids that restart after the prompt for the rejected part; the decoder's
hidden states are gathered at the positions that predict a response token, and only those
rows go through the LM head (chunked log-softmax). The last prompt position predicts both the
first chosen and the first rejected token.

    python benchmarks/prototypes/shared_prefix.py [--preset full] [--repeats 5]

It checks that the per-response log-probs equal the engine's (policy and reference), then
times one training step's model work (policy forward + backward, reference forward with the
adapter off) of both, alternating, and prints the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import runners  # noqa: E402
import workload  # noqa: E402

from mmdpo.data.collate import PreferenceCollator  # noqa: E402
from mmdpo.data.transform import PairTransform, TransformSettings  # noqa: E402
from mmdpo.forward import concatenated_forward  # noqa: E402
from mmdpo.reference import adapter_disabled  # noqa: E402
from mmdpo.setup import load_model_for_training, load_processing  # noqa: E402


def shared_prefix_inputs(pairs, pad_id: int, dtype: torch.dtype):
    """ids (B, L), position ids (B, L), additive 4D mask (B, 1, L, L), and for the targets:
    the (row, position) that predicts each response token, the token, and its side/pair."""
    lengths = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    width = max(lengths)
    batch = len(pairs)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    allowed = torch.zeros((batch, width, width), dtype=torch.bool)
    rows, cols, targets, owner = [], [], [], []  # owner: 2*pair (chosen) or 2*pair+1
    for b, p in enumerate(pairs):
        n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        ids[b, : n_p + n_c + n_r] = torch.tensor(p.prompt_ids + p.chosen_ids + p.rejected_ids)
        positions[b, : n_p + n_c] = torch.arange(n_p + n_c)
        positions[b, n_p + n_c : n_p + n_c + n_r] = torch.arange(n_p, n_p + n_r)
        causal = torch.ones(n_p + n_c, n_p + n_c, dtype=torch.bool).tril()
        allowed[b, : n_p + n_c, : n_p + n_c] = causal
        start = n_p + n_c
        allowed[b, start : start + n_r, :n_p] = True
        allowed[b, start : start + n_r, start : start + n_r] = torch.ones(n_r, n_r).tril().bool()
        for pad in range(n_p + n_c + n_r, width):  # padding attends to itself (no NaN rows)
            allowed[b, pad, pad] = True
        for j, token in enumerate(p.chosen_ids):
            rows.append(b), cols.append(n_p - 1 + j), targets.append(token), owner.append(2 * b)
        for j, token in enumerate(p.rejected_ids):
            col = n_p - 1 if j == 0 else start + j - 1
            rows.append(b), cols.append(col), targets.append(token), owner.append(2 * b + 1)
    mask = torch.zeros((batch, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return (
        ids,
        positions,
        mask,
        torch.tensor(rows),
        torch.tensor(cols),
        torch.tensor(targets),
        torch.tensor(owner),
    )


def shared_prefix_logps(model, inputs, chunk: int = 1024) -> torch.Tensor:
    """Summed log-probs per response. Shape: (B, 2) -> [:, 0] chosen, [:, 1] rejected."""
    ids, positions, mask, rows, cols, targets, owner = inputs
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(
        input_ids=ids, position_ids=positions, attention_mask=mask
    ).last_hidden_state
    picked = hidden[rows, cols]  # (K, d): only positions that predict a response token
    head = base.get_output_embeddings()
    parts = []
    for start in range(0, picked.shape[0], chunk):
        logits = head(picked[start : start + chunk]).float()
        chunk_targets = targets[start : start + chunk, None]
        parts.append((logits.gather(1, chunk_targets) - logits.logsumexp(-1, keepdim=True))[:, 0])
    token_logps = torch.cat(parts)
    sums = torch.zeros(ids.shape[0] * 2, dtype=token_logps.dtype).index_add(0, owner, token_logps)
    return sums.view(-1, 2)


def engine_step(model, batch) -> torch.Tensor:
    policy = concatenated_forward(model, batch)
    with adapter_disabled(model):
        reference = concatenated_forward(model, batch)
    loss = -(
        policy.chosen_sum - policy.rejected_sum - reference.chosen_sum + reference.rejected_sum
    )
    loss = torch.nn.functional.logsigmoid(0.1 * loss).neg().mean()
    loss.backward()
    return loss.detach()


def prototype_step(model, inputs) -> torch.Tensor:
    policy = shared_prefix_logps(model, inputs)
    with adapter_disabled(model):
        with torch.no_grad():
            reference = shared_prefix_logps(model, inputs)
    margin = (policy[:, 0] - policy[:, 1]) - (reference[:, 0] - reference[:, 1])
    loss = torch.nn.functional.logsigmoid(-0.1 * margin).neg().mean()
    loss.backward()
    return loss.detach()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="full")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mmdpo-bench"))
    args = parser.parse_args()
    root = args.work_dir / args.preset
    sizes = workload.PRESETS[args.preset]
    folder = workload.model_folder(root, "text", args.preset)
    pairs_file = root / "prototype-pairs.jsonl"
    workload.save_pairs(
        workload.synthetic_pairs(args.batch_size, sizes=sizes, vision=False), pairs_file
    )
    spec = {
        "model_dir": str(folder), "pairs": str(pairs_file), "quantization": "none",
        "reference": "adapter_off", "max_length": sizes.max_length, "batch_size": args.batch_size,
        "steps": 1,
    }  # fmt: skip
    config = runners.mmdpo_config(spec, root / "prototype")
    processing, _ = load_processing(config)
    transform = PairTransform(processing, TransformSettings(sizes.max_length))
    pairs = [transform(s) for s in runners.mmdpo_samples(spec)]
    batch = PreferenceCollator(processing.pad_token_id)(pairs)
    model = load_model_for_training(config)
    with torch.no_grad():  # a non-zero adapter, so that policy and reference differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    model.train()
    inputs = shared_prefix_inputs(pairs, processing.pad_token_id, torch.float32)

    with torch.no_grad():
        ours = concatenated_forward(model, batch)
        proto = shared_prefix_logps(model, inputs)
    diff = max(
        (ours.chosen_sum - proto[:, 0]).abs().max().item(),
        (ours.rejected_sum - proto[:, 1]).abs().max().item(),
    )
    rows_now = 2 * batch.input_ids.shape[0] // 2 * batch.input_ids.shape[1]
    print(f"pairs: {[(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]}")
    print(f"engine rows x width: {tuple(batch.input_ids.shape)} = {rows_now} positions;"
          f" prototype: {tuple(inputs[0].shape)} = {inputs[0].numel()} positions;"
          f" LM-head rows {batch.input_ids.numel()} -> {inputs[3].numel()}")  # fmt: skip
    print(f"max |log-prob difference| (summed per response): {diff:.2e}")

    times = {"engine": [], "prototype": []}
    for repeat in range(args.repeats):
        order = ["engine", "prototype"] if repeat % 2 == 0 else ["prototype", "engine"]
        for name in order:
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            engine_step(model, batch) if name == "engine" else prototype_step(model, inputs)
            times[name].append(time.perf_counter() - started)
    for name, values in times.items():
        runs = [round(v, 2) for v in values]
        print(f"{name}: median {statistics.median(values):.2f} s per step ({runs})")
    ratio = statistics.median(times["engine"]) / statistics.median(times["prototype"])
    print(f"speed-up of the prototype: {ratio:.2f}x")


if __name__ == "__main__":
    main()
