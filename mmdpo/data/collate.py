"""Collation: a list of TokenizedPair -> one PreferenceBatch."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmdpo.models.families import image_count
from mmdpo.types import PreferenceBatch, TokenizedPair


def _concat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate on dim 0, zero-padding the other dims to the largest (image tiles)."""
    if len({t.shape[1:] for t in tensors}) > 1:
        target = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
        padded = []
        for t in tensors:
            pad: list[int] = []
            for d in reversed(range(1, t.dim())):
                pad += [0, target[d - 1] - t.shape[d]]
            padded.append(F.pad(t, pad))
        tensors = padded
    return torch.cat(tensors, dim=0)


def _collate_images(
    per_pair: list[dict[str, torch.Tensor] | None],
) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
    owners: list[int] = []
    parts: dict[str, list[torch.Tensor]] = {}
    for index, inputs in enumerate(per_pair):
        if not inputs:
            continue
        owners += [index] * image_count(inputs)
        for key, value in inputs.items():
            parts.setdefault(key, []).append(value)
    if not owners:
        return None, None
    return {k: _concat_padded(v) for k, v in parts.items()}, torch.tensor(owners, dtype=torch.long)


class PreferenceCollator:
    """Pads B tokenized pairs into one batch of 2B rows; images once per pair.

    For pairs ``[a, b]`` (B = 2) with prompt ids ``Pa``, ``Pb``, responses ``Ca, Ra, Cb, Rb``::

        input_ids       row 0: Pa Ca <pad>...      attention_mask 1 on real tokens
                        row 1: Pb Cb <pad>...      loss_mask True on Ca / Cb / Ra / Rb
                        row 2: Pa Ra <pad>...      (targets: the response tokens, EOS included)
                        row 3: Pb Rb <pad>...
        score_chosen    (2,) float, NaN where a sample has no score; score_rejected alike
        modality, source, ids: lists of length 2
        image_inputs    each processor tensor concatenated over the pairs that have images, each
                        image ONCE (pixel_values, image_grid_thw, pixel_attention_mask, ...);
                        image_pairs (N_img,) names the pair of each image, so the forward can
                        give the same features to rows i and B+i
        rejected_image_inputs / rejected_image_pairs: the same for pairs whose rejected side has
                        its own images (its row B+i then starts with that side's prompt ids)

    Args:
        pad_token_id: id used for padding (masked out everywhere).
        pad_to_multiple_of: round T up (e.g. 8 for tensor cores); None keeps the longest row.
        restore: re-creates the image tensors of pairs that dropped them
            (``TokenizedPair.images_dropped``), e.g. ``pipeline.restore_images``.
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_to_multiple_of: int | None = None,
        restore: Callable[[TokenizedPair], TokenizedPair] | None = None,
    ):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.restore = restore

    def __call__(self, pairs: list[TokenizedPair]) -> PreferenceBatch:
        if not pairs:
            raise ValueError("cannot collate an empty list of pairs")
        if any(p.images_dropped for p in pairs):
            if self.restore is None:
                raise ValueError("pairs without their image tensors need a restore function")
            pairs = [self.restore(p) if p.images_dropped else p for p in pairs]
        rows: list[tuple[list[int], list[int]]] = [(p.prompt_ids, p.chosen_ids) for p in pairs]
        for p in pairs:
            prompt = p.rejected_prompt_ids if p.rejected_prompt_ids is not None else p.prompt_ids
            rows.append((prompt, p.rejected_ids))
        length = max(len(prompt) + len(response) for prompt, response in rows)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of

        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        loss_mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for row, (prompt, response) in enumerate(rows):
            n_prompt, n_total = len(prompt), len(prompt) + len(response)
            input_ids[row, :n_total] = torch.tensor(prompt + response, dtype=torch.long)
            attention_mask[row, :n_total] = 1
            loss_mask[row, n_prompt:n_total] = True

        def scores(values: list[float | None]) -> torch.Tensor:
            return torch.tensor([math.nan if v is None else float(v) for v in values])

        image_inputs, image_pairs = _collate_images([p.image_inputs for p in pairs])
        rejected_inputs, rejected_pairs = _collate_images([p.rejected_image_inputs for p in pairs])
        return PreferenceBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            loss_mask=loss_mask,
            score_chosen=scores([p.score_chosen for p in pairs]),
            score_rejected=scores([p.score_rejected for p in pairs]),
            modality=[p.modality for p in pairs],
            source=[p.source for p in pairs],
            ids=[p.id for p in pairs],
            image_inputs=image_inputs,
            image_pairs=image_pairs,
            rejected_image_inputs=rejected_inputs,
            rejected_image_pairs=rejected_pairs,
        )
