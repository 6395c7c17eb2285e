"""Chunked sequence log-probs: values and gradients against the naive fp32 log-softmax."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmdpo.logprobs import sequence_logps, token_logps


def naive_token_logps(logits, labels, loss_mask):
    """The reference: full fp32 log-softmax, shifted by one, zero at non-targets. (N, T)"""
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logps.gather(-1, labels[:, 1:, None].clamp(min=0)).squeeze(-1)
    out = torch.zeros(labels.shape, dtype=torch.float32)
    out[:, 1:] = picked * loss_mask[:, 1:]
    return out


def random_batch(dtype, n=3, t=9, v=17, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, t, v, generator=generator)).to(dtype).requires_grad_(True)
    labels = torch.randint(0, v, (n, t), generator=generator)
    loss_mask = torch.rand(n, t, generator=generator) > 0.35
    loss_mask[2] = False  # a row without any target
    labels[~loss_mask] = -100  # ignored ids at non-targets must be fine
    return logits, labels, loss_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_matches_naive_values_and_gradients(dtype, chunk_size):
    logits, labels, loss_mask = random_batch(dtype)
    counts = loss_mask[:, 1:].sum(1).float()
    for average in (False, True):
        expected_tokens = naive_token_logps(logits, labels, loss_mask)
        expected = expected_tokens.sum(1)
        if average:
            expected = expected / counts.clamp(min=1)
        out = sequence_logps(logits, labels, loss_mask, average=average, chunk_size=chunk_size)
        assert out.logps.dtype == torch.float32
        torch.testing.assert_close(out.token_logps, expected_tokens, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.logps, expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out.token_counts, counts)

        weights = torch.tensor([0.7, -1.3, 2.0])
        (grad,) = torch.autograd.grad((out.logps * weights).sum(), logits)
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.float(), expected_grad.float(), atol=1e-6, rtol=1e-6)


def test_alignment_by_hand():
    """V = 4, logits at position t are 0 except log(3) on token (t + 1) % 4, so
    p(that token) = 3 / (3 + 3) = 1/2 and every other token has p = 1/6.

    Row: labels [0, 1, 2, 0], loss_mask [T, T, T, T]. Position 0 is never a target.
    Token 1 at t=1 is predicted from logits[0] (favours 1): log 1/2.
    Token 2 at t=2 from logits[1] (favours 2): log 1/2.
    Token 0 at t=3 from logits[2] (favours 3): log 1/6.
    Sum = 2 log(1/2) + log(1/6); mean over 3 targets.
    """
    logits = torch.zeros(1, 4, 4)
    for t in range(4):
        logits[0, t, (t + 1) % 4] = math.log(3)
    labels = torch.tensor([[0, 1, 2, 0]])
    loss_mask = torch.ones(1, 4, dtype=torch.bool)
    out = sequence_logps(logits, labels, loss_mask, average=True)
    expected_sum = 2 * math.log(1 / 2) + math.log(1 / 6)
    assert out.sum_logps.item() == pytest.approx(expected_sum, abs=1e-6)
    assert out.mean_logps.item() == pytest.approx(expected_sum / 3, abs=1e-6)
    assert out.logps.item() == pytest.approx(expected_sum / 3, abs=1e-6)
    assert out.token_counts.item() == 3
    assert out.token_logps[0, 0].item() == 0.0


def test_row_without_targets_gives_zero_not_nan():
    logits, labels, loss_mask = random_batch(torch.float32)
    out = sequence_logps(logits, labels, loss_mask, average=True)
    assert out.token_counts[2].item() == 0
    assert out.logps[2].item() == 0.0
    assert torch.isfinite(out.logps).all()


def test_bad_inputs_raise():
    logits = torch.zeros(2, 5, 7)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="expected logits"):
        token_logps(logits, torch.zeros(2, 4, dtype=torch.long), mask)
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        token_logps(logits, torch.full((2, 5), 7), mask)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logps(logits, torch.zeros(2, 5, dtype=torch.long), mask, chunk_size=0)


class LargestFloat32(TorchDispatchMode):
    """Records the largest fp32 tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.largest = max(self.largest, tensor.numel())
        return out


def test_fp32_working_set_is_one_chunk():
    """bf16 logits (N=4, T=64, V=256): no fp32 tensor bigger than chunk x V appears in the
    forward or the backward, while the naive path makes a full (N, T-1, V) one."""
    n, t, v, chunk = 4, 64, 256, 16
    logits = torch.randn(n, t, v, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, v, (n, t))
    loss_mask = torch.ones(n, t, dtype=torch.bool)
    with LargestFloat32() as probe:
        out = sequence_logps(logits, labels, loss_mask, chunk_size=chunk)
        out.logps.sum().backward()
    assert probe.largest <= chunk * v
    with LargestFloat32() as naive_probe:
        naive_token_logps(logits, labels, loss_mask).sum().backward()
    assert naive_probe.largest >= n * (t - 1) * v
