"""Denser layouts of a preference batch: the prompt once per pair, several pairs per row.

The collator's batch holds 2B rows ``prompt + chosen`` and ``prompt + rejected`` (right padded,
the prompt twice). A layout re-arranges the same tokens into fewer rows:

- ``shared_prompt``: one row per pair, ``prompt | chosen | rejected``. The rejected tokens see
  the prompt and the earlier rejected tokens, never the chosen ones, and their position ids
  restart after the prompt (arXiv 2410.20305, prefix sharing for preference tuning).
- ``packed``: the same blocks, several per row (first fit, longest first), with a
  block-diagonal mask, so a length-skewed batch computes no padding.

A pair whose rejected side has its own images (``rejected_image_inputs``) or its own prompt
tokens cannot share: it becomes two blocks, ``prompt | chosen`` and ``prompt' | rejected``.

Every layout token is a copy of one token of the 2B rows (``source``) and gets that token's
position id and, through the mask, exactly the context it has there; so the hidden state at a
layout position equals the two-row hidden state of its source token. Module pure torch: no
model here (``mmdpo.layout_forward`` runs the model on a layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmdpo.types import PreferenceBatch

LAYOUTS = ("shared_prompt", "packed")
PROMPT, CHOSEN, REJECTED = 0, 1, 2  # branch of a token inside its block


@dataclass
class PairLayout:
    """A batch's tokens re-arranged into R rows of width L, and where its targets are scored.

    Attributes:
        input_ids: token ids; the pad id of the batch's padding where nothing is placed.
            Shape: (R, L)
        source: flat index ``row * T + column`` into the batch's (2B, T) rows of the token
            placed there; -1 on padding. Shape: (R, L)
        columns: the column of each token in its two-row row, i.e. its position id for 1D
            rotary models and its place in causal order; 0 on padding. Shape: (R, L)
        segments: block of each token, unique over the batch; -1 on padding. Shape: (R, L)
        branches: ``PROMPT``, ``CHOSEN`` or ``REJECTED``. Shape: (R, L)
        keep: True where the logits predict at least one target: the output layer runs only
            there, and returns them flattened row-major. Shape: (R, L)
        target_logits: for each target token (two-row order: row-major over ``loss_mask[:, 1:]``),
            its row among the kept logits. The last prompt token predicts both responses' first
            tokens, so a row can be named twice. Shape: (K,)
        target_ids: the target token ids. Shape: (K,)
        target_rows: the two-row row (0..2B-1) of each target. Shape: (K,)
        block_rows: for each block in layout order (row-major), the two-row row whose prompt it
            carries, i.e. whose images its image tokens hold.
        shared: whether each pair shares its prompt. Shape: (B,)
    """

    input_ids: torch.Tensor
    source: torch.Tensor
    columns: torch.Tensor
    segments: torch.Tensor
    branches: torch.Tensor
    keep: torch.Tensor
    target_logits: torch.Tensor
    target_ids: torch.Tensor
    target_rows: torch.Tensor
    block_rows: list[int]
    shared: torch.Tensor

    def gather(self, per_token: torch.Tensor, fill: int = 0) -> torch.Tensor:
        """A (..., 2B, T) tensor of the two-row batch re-laid out. Shape: (..., R, L)"""
        lead = per_token.shape[:-2]
        flat = per_token.reshape(*lead, -1)
        index = self.source.clamp(min=0).reshape(-1)
        out = flat[..., index].reshape(*lead, *self.source.shape)
        return out.masked_fill(self.source < 0, fill)


# A block: the two-row row whose prompt it holds, and its parts (row, start, end, branch).
_Block = tuple[int, list[tuple[int, int, int, int]]]


def prompt_lengths(batch: PreferenceBatch) -> torch.Tensor:
    """Tokens before the first target of each row (every response has at least EOS). Shape: (2B,)"""
    return batch.loss_mask.int().argmax(dim=1)


def shareable_pairs(batch: PreferenceBatch) -> torch.Tensor:
    """Pairs whose two rows hold the same prompt tokens and the same images. Shape: (B,)"""
    n = batch.num_pairs
    prompts = prompt_lengths(batch)
    same_length = prompts[:n] == prompts[n:]
    columns = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)
    in_prompt = columns[None, :] < prompts[:n, None]
    differ = (batch.input_ids[:n] != batch.input_ids[n:]) & in_prompt
    shared = same_length & ~differ.any(dim=1)
    if batch.rejected_image_pairs is not None and batch.rejected_image_pairs.numel():
        shared[batch.rejected_image_pairs.to(shared.device)] = False
    return shared


def _blocks(batch: PreferenceBatch, shared: torch.Tensor) -> list[_Block]:
    n = batch.num_pairs
    lengths = batch.attention_mask.sum(dim=1).tolist()
    prompts = prompt_lengths(batch).tolist()
    blocks: list[_Block] = []
    shared_pairs = shared.tolist()
    for pair in range(n):
        chosen, rejected = pair, n + pair
        if shared_pairs[pair]:
            p = prompts[chosen]
            parts = [
                (chosen, 0, p, PROMPT),
                (chosen, p, lengths[chosen], CHOSEN),
                (rejected, p, lengths[rejected], REJECTED),
            ]
            blocks.append((chosen, parts))
            continue
        for row, branch in ((chosen, CHOSEN), (rejected, REJECTED)):
            p = prompts[row]
            blocks.append((row, [(row, 0, p, PROMPT), (row, p, lengths[row], branch)]))
    return blocks


def _block_length(block: _Block) -> int:
    return sum(end - start for _, start, end, _ in block[1])


def _pack(blocks: list[_Block], row_tokens: int | None) -> list[list[_Block]]:
    """First fit, longest first; a row holds at most ``row_tokens`` (or the longest block)."""
    capacity = max([_block_length(b) for b in blocks] + [row_tokens or 0])
    order = sorted(range(len(blocks)), key=lambda i: (-_block_length(blocks[i]), i))
    rows: list[list[_Block]] = []
    free: list[int] = []
    for index in order:
        size = _block_length(blocks[index])
        slot = next((r for r, room in enumerate(free) if room >= size), None)
        if slot is None:
            rows.append([])
            free.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(blocks[index])
        free[slot] -= size
    return rows


def build_layout(
    batch: PreferenceBatch,
    layout: str = "shared_prompt",
    *,
    row_tokens: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> PairLayout:
    """Lay a collated batch out as ``shared_prompt`` (a row per pair) or ``packed`` rows.

    Args:
        layout: ``shared_prompt`` or ``packed``.
        row_tokens: ``packed`` only: tokens per row at most (default: the longest block, so no
            row is longer than the longest pair needs).
        pad_to_multiple_of: round the width L up (e.g. 8 for tensor cores).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    shared = shareable_pairs(batch)
    blocks = _blocks(batch, shared)
    rows = _pack(blocks, row_tokens) if layout == "packed" else [[b] for b in blocks]
    width = max(sum(_block_length(b) for b in row) for row in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of

    n_rows, seq_len = batch.input_ids.shape
    device = batch.input_ids.device
    source = torch.full((len(rows), width), -1, dtype=torch.long)
    columns = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    branches = torch.zeros((len(rows), width), dtype=torch.long)
    block_rows: list[int] = []
    for r, row in enumerate(rows):
        at = 0
        for block_row, parts in row:
            for src, start, end, branch in parts:
                cols = torch.arange(start, end)
                source[r, at : at + end - start] = src * seq_len + cols
                columns[r, at : at + end - start] = cols
                segments[r, at : at + end - start] = len(block_rows)
                branches[r, at : at + end - start] = branch
                at += end - start
            block_rows.append(block_row)
    source, columns, segments, branches = (
        t.to(device) for t in (source, columns, segments, branches)
    )
    keep, target_logits, target_ids, target_rows = _targets(batch, source, shared)
    pad_id = batch.input_ids.new_tensor(_pad_id(batch))
    input_ids = torch.where(source >= 0, batch.input_ids.reshape(-1)[source.clamp(min=0)], pad_id)
    assert input_ids.shape == (len(rows), width) and n_rows == 2 * batch.num_pairs
    return PairLayout(
        input_ids, source, columns, segments, branches, keep,
        target_logits, target_ids, target_rows, block_rows, shared,
    )  # fmt: skip


def _pad_id(batch: PreferenceBatch) -> int:
    padding = batch.input_ids[batch.attention_mask == 0]
    return int(padding[0]) if padding.numel() else 0


def _targets(
    batch: PreferenceBatch, source: torch.Tensor, shared: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each target token is predicted in the layout, and which logits rows to keep."""
    n_rows, seq_len = batch.input_ids.shape
    n = batch.num_pairs
    device = source.device
    # Two-row flat index -> layout flat index; a shared pair's rejected prompt is the chosen one.
    where = torch.full((n_rows * seq_len,), -1, dtype=torch.long, device=device)
    placed = source.reshape(-1) >= 0
    where[source.reshape(-1)[placed]] = placed.nonzero().squeeze(1)
    where = where.view(n_rows, seq_len)
    prompts = prompt_lengths(batch)
    columns = torch.arange(seq_len, device=device)
    alias = shared[:, None] & (columns[None, :] < prompts[:n, None])
    where[n:] = torch.where(alias, where[:n], where[n:])

    target_mask = batch.loss_mask[:, 1:].bool()
    rows_cols = target_mask.nonzero()
    predicted_at = where[rows_cols[:, 0], rows_cols[:, 1]]  # logits at t-1 predict token t
    if (predicted_at < 0).any():
        raise RuntimeError("layout misses a position that predicts a target (collator layout?)")
    keep = torch.zeros(source.numel(), dtype=torch.bool, device=device)
    keep[predicted_at] = True
    rank = keep.long().cumsum(0) - 1
    target_ids = batch.input_ids[:, 1:][target_mask]
    return keep.view(source.shape), rank[predicted_at], target_ids, rows_cols[:, 0]


def allowed_attention(layout: PairLayout) -> torch.Tensor:
    """Which key each query may see: same block, not later, not the other response.

    A padding query sees only itself (a row with no key would give NaN in some kernels).
    Shape: (R, L, L), bool
    """
    seg, col, branch = layout.segments, layout.columns, layout.branches
    same_block = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    not_later = col[:, None, :] <= col[:, :, None]
    key_branch = branch[:, None, :]
    same_branch = (key_branch == PROMPT) | (key_branch == branch[:, :, None])
    allowed = same_block & not_later & same_branch
    width = seg.shape[1]
    padding = (seg < 0)[:, :, None] & torch.eye(width, dtype=torch.bool, device=seg.device)
    return allowed | padding


def attention_mask_4d(layout: PairLayout, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The layout's mask as transformers takes a prepared 4D mask. Shape: (R, 1, L, L)

    ``dtype=None``: boolean (True = attend). A float dtype: additive (0 or the dtype's
    minimum), what the engine passes to SDPA and eager attention (a boolean mask under
    eager gives wrong logits without an error).
    """
    allowed = allowed_attention(layout)[:, None]
    if dtype is None:
        return allowed
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
