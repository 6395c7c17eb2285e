"""The shared data types: one preference sample, one tokenized pair, one batch, one loss output."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Modality = Literal["text", "math", "vision"]
MODALITIES: tuple[str, ...] = ("text", "math", "vision")

# A chat message as transformers' chat templates expect it: {"role": ..., "content": ...}.
Message = dict[str, Any]


# The source of a sample whose data names none (calibration groups are keyed by it).
UNSOURCED = "unknown"


@dataclass
class PreferenceSample:
    """One preference pair, normalized from any source format (no tokenizer involved).

    Attributes:
        id: unique id of the sample within its dataset (the adapter derives one from the
            file and line when the source has none).
        prompt: chat messages before the responses; a plain string is one user turn.
        chosen: the preferred assistant response (text).
        rejected: the dispreferred assistant response (text).
        images: images that belong to the prompt: file paths, raw bytes or PIL images.
            Paths are resolved relative to the data file by the adapter; nothing is decoded
            until the model transform asks for it.
        rejected_images: a different image set for the rejected side (image-contrastive pairs),
            or None when both sides share ``images``.
        score_chosen, score_rejected: quality score of each response (any scale), or None.
        modality: ``text``, ``math`` or ``vision``.
        source: the name of the data source (calibration groups by (modality, source)).
        meta: anything else the source carried (correctness flags, ratings, file and line).
    """

    id: str
    prompt: list[Message]
    chosen: str
    rejected: str
    images: list[Any] = field(default_factory=list)
    rejected_images: list[Any] | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None
    modality: str = "text"
    source: str = UNSOURCED
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str):
            self.prompt = [{"role": "user", "content": self.prompt}]

    @property
    def has_scores(self) -> bool:
        return self.score_chosen is not None and self.score_rejected is not None

    @property
    def score_margin(self) -> float:
        """score_chosen - score_rejected, NaN when either is missing."""
        if not self.has_scores:
            return math.nan
        return float(self.score_chosen) - float(self.score_rejected)


@dataclass
class TokenizedPair:
    """A sample after the model transform: token ids ready for collation.

    The prompt is tokenized once (for vision samples: the processor runs once per pair, and
    the prompt ids hold the expanded image tokens); both responses continue the same prompt.

    Attributes:
        id, modality, source, score_chosen, score_rejected: copied from the sample.
        prompt_ids: token ids of the rendered prompt. Shape: (P,)
        chosen_ids: token ids of the chosen response, EOS included. Shape: (C,)
        rejected_ids: token ids of the rejected response, EOS included. Shape: (R,)
        image_inputs: processor outputs for the prompt's images (``pixel_values`` and the
            family's extras such as ``image_grid_thw``), or None for text.
        rejected_prompt_ids: prompt ids for the rejected side when it has its own images
            (their image-token count may differ), else None.
        rejected_image_inputs: processor outputs for ``rejected_images``, else None.
        image_digest: sha256 of the image tensors, kept when they are dropped to save memory.
        origin: the sample of a vision pair, so that its image tensors can be dropped and the
            collator re-runs the transform on it (images decoded per batch, never all held).
    """

    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    modality: str = "text"
    source: str = UNSOURCED
    score_chosen: float | None = None
    score_rejected: float | None = None
    image_inputs: dict[str, torch.Tensor] | None = None
    rejected_prompt_ids: list[int] | None = None
    rejected_image_inputs: dict[str, torch.Tensor] | None = None
    image_digest: str | None = None
    origin: PreferenceSample | None = None

    @property
    def images_dropped(self) -> bool:
        return self.image_digest is not None and self.image_inputs is None

    @property
    def num_tokens(self) -> int:
        prompt_r = (
            self.rejected_prompt_ids if self.rejected_prompt_ids is not None else self.prompt_ids
        )
        return len(self.prompt_ids) + len(self.chosen_ids) + len(prompt_r) + len(self.rejected_ids)


@dataclass
class PreferenceBatch:
    """A collated micro-batch of B pairs; the layout is shown exactly in the collator docstring.

    Rows 0..B-1 are the chosen sequences and rows B..2B-1 the rejected ones, pair i in rows
    i and B+i. Right padding.

    Attributes:
        input_ids: Shape: (2B, T)
        attention_mask: 1 on real tokens. Shape: (2B, T)
        loss_mask: True where the token at that position is a response target (prompt and
            padding False). Shape: (2B, T)
        score_chosen, score_rejected: NaN where the sample has no score. Shape: (B,)
        modality, source, ids: per pair, length B.
        image_inputs: processor tensors for the pairs' prompt images, each image once (not
            duplicated for the rejected rows), or None when no pair has images.
        image_pairs: index of the pair that owns each image in ``image_inputs``. Shape: (N_img,)
        rejected_image_inputs / rejected_image_pairs: the same for pairs with their own
            rejected images (image-contrastive), or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    score_chosen: torch.Tensor
    score_rejected: torch.Tensor
    modality: list[str]
    source: list[str]
    ids: list[str]
    image_inputs: dict[str, torch.Tensor] | None = None
    image_pairs: torch.Tensor | None = None
    rejected_image_inputs: dict[str, torch.Tensor] | None = None
    rejected_image_pairs: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return len(self.ids)

    @property
    def has_images(self) -> bool:
        """Whether any pair has images (the prompt's, or a rejected side's own)."""
        return bool(self.image_inputs or self.rejected_image_inputs)

    def to(self, device: torch.device | str) -> PreferenceBatch:
        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        return PreferenceBatch(**{k: move(v) for k, v in self.__dict__.items()})


@dataclass
class LossOutput:
    """What every loss returns; the engine reduces.

    Attributes:
        losses: unreduced per-pair losses; their mean is the objective. Shape: (B,)
        chosen_rewards: detached implicit rewards of the chosen responses. Shape: (B,)
        rejected_rewards: detached implicit rewards of the rejected responses. Shape: (B,)
        metrics: detached per-pair tensors (weights, gates, margins), each of shape (B,).
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
