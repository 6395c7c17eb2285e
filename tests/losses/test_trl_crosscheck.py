"""Independent cross-check: TRL's DPOTrainer loss and mmdpo's give the same sigmoid, IPO and
hinge losses on the same tiny model and batch.

TRL 1.16 has no standalone loss function: ``DPOTrainer._compute_loss(model, inputs)`` runs the
policy and reference forwards (through its fused LM head) and then the loss. We call that
method on a trainer built with ``object.__new__`` plus exactly the attributes it reads, so no
dataset, tokenizer or Trainer setup is needed. mmdpo's side computes the sequence log-probs
with a plain log-softmax written here, independently of TRL.
"""

import copy
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from mmdpo.losses import get_loss

dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer", reason="trl is not installed")
trl_utils = pytest.importorskip("trl.trainer.utils", reason="trl is not installed")
transformers = pytest.importorskip("transformers")

BETA = 0.1


class _SingleProcessAccelerator:
    """What ``_compute_loss`` asks of the accelerator, for one process on CPU."""

    device = torch.device("cpu")
    parallelism_config = None

    @staticmethod
    def gather(tensor):
        return tensor

    gather_for_metrics = gather

    @staticmethod
    def unwrap_model(model):
        return model


def tiny_llama(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).eval()


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return reference


def make_batch() -> dict[str, torch.Tensor]:
    """Three pairs in TRL's layout: rows 0..2 chosen, 3..5 rejected, right padding.

    Each row is prompt + completion; completion_mask marks the completion tokens.
    """
    rows = [  # (prompt, completion)
        ([5, 17, 42], [8, 9, 10, 2]),
        ([5, 61], [33, 2]),
        ([5, 12, 13, 14], [70, 71, 72, 73, 2]),
        ([5, 17, 42], [11, 2]),
        ([5, 61], [34, 35, 36, 2]),
        ([5, 12, 13, 14], [74, 75, 2]),
    ]
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros_like(input_ids)
    for i, (prompt, completion) in enumerate(rows):
        ids = prompt + completion
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        completion_mask[i, len(prompt) : len(ids)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
    }


def sequence_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean per-token log-probs of the completion tokens, per row."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = logits[:, :-1].float().log_softmax(-1)
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].float()
    token_logps = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    summed = token_logps.sum(-1)
    return summed, summed / mask.sum(-1)


def trl_loss(policy, reference, batch, loss_type: str) -> float:
    trainer = object.__new__(dpo_trainer.DPOTrainer)
    # The attributes DPOTrainer.__init__ would set that _compute_loss reads (trl 1.16.0).
    trainer.model = policy
    trainer.ref_model = reference
    trainer.accelerator = _SingleProcessAccelerator()
    trainer.args = SimpleNamespace(gradient_checkpointing_kwargs=None)
    trainer.beta = BETA
    trainer.label_smoothing = 0.0
    trainer.loss_types = [loss_type]
    trainer.loss_weights = [1.0]
    trainer.f_divergence_type = "reverse_kl"
    trainer.ld_alpha = None
    trainer.precompute_ref_logps = False
    trainer.use_weighting = False
    trainer.aux_loss_enabled = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    with torch.no_grad():
        return trainer._compute_loss(policy, dict(batch), return_outputs=False).item()


@pytest.fixture(scope="module")
def models_and_batch():
    policy = tiny_llama(seed=0)
    reference = perturbed(policy, seed=1)
    trl_policy, trl_reference = copy.deepcopy(policy), copy.deepcopy(reference)
    # As DPOTrainer.__init__ does: the fused head returns per-token log-probs and the metrics.
    trl_utils.add_fused_lm_head(
        trl_policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1")
    )
    trl_utils.add_fused_lm_head(trl_reference)
    return policy, reference, trl_policy, trl_reference, make_batch()


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "loss_type, name", [("sigmoid", "dpo"), ("ipo", "ipo"), ("hinge", "hinge")]
)
def test_trl_and_mmdpo_agree(models_and_batch, loss_type, name):
    policy, reference, trl_policy, trl_reference, batch = models_and_batch
    policy_summed, policy_mean = sequence_logps(policy, batch)
    ref_summed, ref_mean = sequence_logps(reference, batch)
    spec = get_loss(name)
    policy_logps = policy_mean if spec.length_normalized else policy_summed
    ref_logps = ref_mean if spec.length_normalized else ref_summed
    out = spec.compute(*policy_logps.chunk(2), *ref_logps.chunk(2), beta=BETA)
    # The check is only meaningful if the reference differs and the hinge is not saturated.
    assert out.metrics["margin"].abs().min() > 1e-4
    expected = trl_loss(trl_policy, trl_reference, batch, loss_type)
    assert out.losses.mean().item() == pytest.approx(expected, abs=1e-5)
