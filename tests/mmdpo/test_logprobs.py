"""Chunked response log-probs: values and gradients against the naive fp32 log-softmax."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmdpo.logprobs import _ChunkedTargetLogps, response_prediction_mask, selected_sequence_logps
from tests.oracles import naive_token_logps


def random_batch(dtype, n=3, t=9, v=17, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, t, v, generator=generator)).to(dtype).requires_grad_(True)
    labels = torch.randint(0, v, (n, t), generator=generator)
    loss_mask = torch.rand(n, t, generator=generator) > 0.35
    loss_mask[2] = False  # a row without any target
    labels[~loss_mask] = -100  # ignored ids at non-targets must be fine
    return logits, labels, loss_mask


def selected(logits, loss_mask):
    """What a model returns with ``logits_to_keep=response_prediction_mask(loss_mask)``."""
    return logits[response_prediction_mask(loss_mask)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_matches_naive_values_and_gradients(dtype, chunk_size):
    logits, labels, loss_mask = random_batch(dtype)
    counts = loss_mask[:, 1:].sum(1).float()
    expected_tokens = naive_token_logps(logits, labels, loss_mask)
    # Per token: the kernel's log-prob of each target, in row-major order.
    targets = labels[:, 1:][loss_mask[:, 1:]]
    rows = selected(logits, loss_mask)
    per_token = _ChunkedTargetLogps.apply(rows, torch.arange(len(targets)), targets, chunk_size)
    torch.testing.assert_close(
        per_token, expected_tokens[:, 1:][loss_mask[:, 1:]], atol=1e-6, rtol=0
    )
    sums, out_counts = selected_sequence_logps(rows, labels, loss_mask, chunk_size=chunk_size)
    assert sums.dtype == torch.float32
    torch.testing.assert_close(out_counts, counts)
    for average in (False, True):
        expected = naive_token_logps(logits, labels, loss_mask).sum(1)
        out = sums
        if average:
            expected, out = expected / counts.clamp(min=1), sums / out_counts.clamp(min=1)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)

        weights = torch.tensor([0.7, -1.3, 2.0])
        (grad,) = torch.autograd.grad((out * weights).sum(), logits, retain_graph=True)
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
    assert response_prediction_mask(loss_mask).tolist() == [[True, True, True, False]]
    sums, counts = selected_sequence_logps(selected(logits, loss_mask), labels, loss_mask)
    expected_sum = 2 * math.log(1 / 2) + math.log(1 / 6)
    assert sums.item() == pytest.approx(expected_sum, abs=1e-6)
    assert (sums / counts).item() == pytest.approx(expected_sum / 3, abs=1e-6)
    assert counts.item() == 3
    assert naive_token_logps(logits, labels, loss_mask)[0, 0].item() == 0.0


def test_row_without_targets_gives_zero_not_nan():
    logits, labels, loss_mask = random_batch(torch.float32)
    sums, counts = selected_sequence_logps(selected(logits, loss_mask), labels, loss_mask)
    assert counts[2].item() == 0
    assert sums[2].item() == 0.0
    assert torch.isfinite(sums / counts.clamp(min=1)).all()


def test_bad_inputs_raise():
    mask = torch.ones(2, 5, dtype=torch.bool)  # 8 targets
    labels = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="expected logits"):
        selected_sequence_logps(torch.zeros(7, 7), labels, mask)
    with pytest.raises(ValueError, match=r"\[0, V\)"):
        selected_sequence_logps(torch.zeros(8, 7), torch.full((2, 5), 7), mask)
    with pytest.raises(ValueError, match="chunk_size"):
        selected_sequence_logps(torch.zeros(8, 7), labels, mask, chunk_size=0)


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
    """bf16 logits of N=4 rows x 63 targets, V=256: no fp32 tensor bigger than chunk x V
    appears in the forward or the backward, while the naive path makes a full (N, T-1, V)."""
    n, t, v, chunk = 4, 64, 256, 16
    logits = torch.randn(n, t, v, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, v, (n, t))
    loss_mask = torch.ones(n, t, dtype=torch.bool)
    rows = selected(logits, loss_mask)
    with LargestFloat32() as probe:
        sums, _ = selected_sequence_logps(rows, labels, loss_mask, chunk_size=chunk)
        sums.sum().backward()
    assert probe.largest <= chunk * v
    with LargestFloat32() as naive_probe:
        naive_token_logps(logits, labels, loss_mask).sum().backward()
    assert naive_probe.largest >= n * (t - 1) * v
