"""torch.profiler over mmdpo's per-batch work (policy forward + backward, reference forward
with the adapter off) on the benchmark's text or vision model: where a step's time goes.

    python benchmarks/prototypes/profile_step.py [--family text|qwen2_vl|llava] [--preset full]

Prints the top operators by self CPU time and the share of the LM head (the (rows, 32k)
matmul, its backward and the log-softmax) and of the vision tower.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import runners  # noqa: E402
import workload  # noqa: E402

from mmdpo.data.collate import PreferenceCollator  # noqa: E402
from mmdpo.data.transform import PairTransform, TransformSettings  # noqa: E402
from mmdpo.losses import get_loss  # noqa: E402
from mmdpo.objective import compute_objective  # noqa: E402
from mmdpo.reference import ReferenceModel  # noqa: E402
from mmdpo.setup import load_model_for_training, load_processing  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", default="text")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mmdpo-bench"))
    args = parser.parse_args()
    root = args.work_dir / args.preset
    sizes = workload.PRESETS[args.preset]
    vision = args.family != "text"
    folder = workload.model_folder(root, args.family, args.preset)
    pairs_file = root / f"profile-pairs-{args.family}.jsonl"
    pairs = workload.synthetic_pairs(
        args.batch_size, sizes=sizes, vision=vision, image_dir=root / "profile-images"
    )
    workload.save_pairs(pairs, pairs_file)
    spec = {
        "model_dir": str(folder), "pairs": str(pairs_file), "quantization": "none",
        "reference": "adapter_off", "max_length": sizes.max_length, "batch_size": args.batch_size,
        "steps": 1,
    }  # fmt: skip
    config = runners.mmdpo_config(spec, root / "profile")
    processing, is_vlm = load_processing(config)
    transform = PairTransform(processing, TransformSettings(sizes.max_length), is_vlm=is_vlm)
    tokenized = [transform(s) for s in runners.mmdpo_samples(spec)]
    batch = PreferenceCollator(transform.tokenizer.pad_token_id)(tokenized)
    model = load_model_for_training(config)
    model.train()
    loss = get_loss("dpo")
    reference = ReferenceModel("adapter_off", policy=model)

    def step() -> None:
        obj = compute_objective(model, batch, loss, {"beta": 0.1}, reference, average=False)
        obj.loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    events = prof.key_averages(group_by_input_shape=True)
    print(f"batch rows x width: {tuple(batch.input_ids.shape)}")
    print(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40))
    vocab = workload.VOCAB_SIZE
    total = sum(e.self_cpu_time_total for e in events)
    head = 0.0
    for e in events:
        shapes = str(e.input_shapes)
        if str(vocab) in shapes:
            head += e.self_cpu_time_total
    print(f"share of self CPU time in ops touching a {vocab}-wide tensor (LM head, logits,"
          f" log-softmax, their backward): {100 * head / total:.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
