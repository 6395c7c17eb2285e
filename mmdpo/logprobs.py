"""Per-sequence log-probs of the response tokens from the logits at the positions that
predict them, chunked so that no fp32 log-softmax larger than one chunk is ever held, in the
forward or the backward pass; the full (N, T, V) logits are never made (the model runs its
output layer at ``response_prediction_mask`` only). The tests check it against the full fp32
log-softmax (``tests/oracles.py``).

Alignment (the one convention of this module): ``logits[:, t]`` is the model's prediction for
the token at position ``t + 1``. ``labels[:, t]`` and ``loss_mask[:, t]`` describe the token AT
position ``t`` (the same layout as ``PreferenceBatch.input_ids`` and ``loss_mask``), so the
log-prob of token ``t`` comes from ``logits[:, t - 1]``. Position 0 has no prediction and is
never a target, whatever ``loss_mask[:, 0]`` says. The shift happens inside; callers pass the
model's logits and the batch's ids and mask unshifted.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_SIZE = 1024  # target positions per chunk: 1024 x V x 4 bytes of fp32 at a time


class _ChunkedTargetLogps(torch.autograd.Function):
    """log_softmax(rows.float()).gather(targets) for selected rows of a (M, V) logits matrix.

    Forward and backward each upcast at most ``chunk_size`` rows to fp32 at a time; only the
    fp32 logsumexp per selected row is saved, never a softmax.
    """

    @staticmethod
    def forward(ctx, flat_logits, row_index, targets, chunk_size):
        # flat_logits: (M, V); row_index, targets: (K,) -> (K,) fp32 log-probs
        out = torch.empty(row_index.shape[0], dtype=torch.float32, device=flat_logits.device)
        lse = torch.empty_like(out)
        for start in range(0, row_index.shape[0], chunk_size):
            rows = flat_logits.index_select(0, row_index[start : start + chunk_size]).float()
            chunk_targets = targets[start : start + chunk_size]
            chunk_lse = torch.logsumexp(rows, dim=-1)
            lse[start : start + chunk_size] = chunk_lse
            out[start : start + chunk_size] = (
                rows.gather(1, chunk_targets.unsqueeze(1)).squeeze(1) - chunk_lse
            )
        ctx.save_for_backward(flat_logits, row_index, targets, lse)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        flat_logits, row_index, targets, lse = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        grad = torch.zeros_like(flat_logits)
        for start in range(0, row_index.shape[0], chunk_size):
            index = row_index[start : start + chunk_size]
            rows = flat_logits.index_select(0, index).float()
            # d/dx [x_y - logsumexp(x)] = onehot(y) - softmax(x)
            chunk_grad = torch.exp(rows - lse[start : start + chunk_size, None]).neg_()
            chunk_grad.scatter_add_(
                1,
                targets[start : start + chunk_size, None],
                torch.ones_like(chunk_grad[:, :1]),
            )
            chunk_grad.mul_(grad_out[start : start + chunk_size, None])
            # add, not copy: a row may be named twice (a shared prompt's last position
            # predicts the first token of both responses)
            grad.index_add_(0, index, chunk_grad.to(grad.dtype))
        return grad, None, None, None


def rows_target_logps(
    logits: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """``log_softmax(logits[rows].float()).gather(targets)``, chunked, without that copy.

    Args:
        logits: any float dtype. Shape: (M, V)
        rows: the logits row of each target; a row may be named more than once. Shape: (K,)
        targets: token ids. Shape: (K,)

    Returns:
        fp32 log-probs, differentiable w.r.t. ``logits``. Shape: (K,)
    """
    return _ChunkedTargetLogps.apply(logits, rows, targets, chunk_size)


def response_prediction_mask(loss_mask: torch.Tensor) -> torch.Tensor:
    """True at the positions whose logits predict a target token (``loss_mask`` shifted left).

    Pass it to a transformers model as ``logits_to_keep`` so that the output layer runs on
    those positions only; the model then returns logits of shape (M, V), M = targets, in
    row-major order. Shape: (N, T)
    """
    keep = torch.zeros_like(loss_mask, dtype=torch.bool)
    keep[:, :-1] = loss_mask[:, 1:].bool()
    return keep


def selected_sequence_logps(
    selected_logits: torch.Tensor,
    labels: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed target log-probs per row from the logits of the target-predicting positions only.

    Args:
        selected_logits: the logits at ``response_prediction_mask(loss_mask)``, row-major, as a
            model returns them for that ``logits_to_keep``. Shape: (M, V)
        labels: token ids, unshifted (usually ``input_ids``); values at non-target positions
            are ignored (may be -100). Shape: (N, T)
        loss_mask: True where the token at that position is a target. Shape: (N, T)
        chunk_size: target positions upcast to fp32 at a time.

    Returns:
        (summed log-probs, target counts), both fp32. Shape: (N,) each. Equal to
        the full fp32 log-softmax's sums over the targets, with the same gradient.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    target_mask = loss_mask[:, 1:].bool()
    targets = labels[:, 1:][target_mask].long()
    if selected_logits.dim() != 2 or selected_logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected logits ({targets.shape[0]}, V) for the target positions, got "
            f"{tuple(selected_logits.shape)}"
        )
    if targets.numel() and (targets.min() < 0 or targets.max() >= selected_logits.shape[1]):
        raise ValueError("target token ids must lie in [0, V) where loss_mask is True")
    row_index = torch.arange(targets.shape[0], device=selected_logits.device)
    per_token = _ChunkedTargetLogps.apply(selected_logits, row_index, targets, chunk_size)
    rows = target_mask.nonzero(as_tuple=False)[:, 0]
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=selected_logits.device)
    sums = sums.index_add(0, rows, per_token)
    return sums, target_mask.sum(dim=1).to(torch.float32)
