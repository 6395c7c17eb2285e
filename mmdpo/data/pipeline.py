"""From validated samples to tokenized pairs and a resumable, seeded batch order."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from mmdpo.data.transform import PairTransform, SampleTooLongError
from mmdpo.reference_cache import image_digest
from mmdpo.types import PreferenceSample, TokenizedPair


@dataclass
class TokenizeResult:
    pairs: list[TokenizedPair]
    problems: list[dict[str, Any]] = field(default_factory=list)
    """Samples that could not be tokenized: {"id", "field", "error"} each."""


def tokenize_samples(
    samples: Sequence[PreferenceSample],
    transform: PairTransform,
    *,
    progress: bool = True,
    desc: str = "tokenizing",
    chunk_size: int = 256,
) -> TokenizeResult:
    """Run the model transform over every sample; problems are collected, never dropped silently.

    The caller decides: stop with the list (strict) or write them to invalid_rows.jsonl.
    """
    pairs: list[TokenizedPair] = []
    problems: list[dict[str, Any]] = []
    with tqdm(total=len(samples), desc=desc, disable=not progress, unit="pair") as bar:
        for start in range(0, len(samples), chunk_size):
            chunk = samples[start : start + chunk_size]
            for sample, result in zip(chunk, transform.many(list(chunk)), strict=True):
                if isinstance(result, TokenizedPair) and _nothing_to_prefer(result):
                    problems.append(_identical(sample))
                elif isinstance(result, TokenizedPair):
                    if result.image_inputs is not None or result.rejected_image_inputs is not None:
                        result.origin = sample  # so its image tensors can be dropped and redone
                    pairs.append(result)
                else:
                    problems.append(_problem(sample, result))
            bar.update(len(chunk))
    return TokenizeResult(pairs, problems)


def drop_image_tensors(pairs: list[TokenizedPair]) -> None:
    """Free the pixel tensors of vision pairs; the collator re-creates them batch by batch.

    Holding every pair's pixel tensors would take gigabytes for a real vision dataset
    (a 448 px image can be ~5 MB of fp32 patches). The digest of the tensors stays,
    so the precomputed reference cache keys do not change.
    """
    for pair in pairs:
        if pair.origin is None or (
            pair.image_inputs is None and pair.rejected_image_inputs is None
        ):
            continue
        pair.image_digest = image_digest(pair)
        pair.image_inputs = pair.rejected_image_inputs = None


def restore_images(pair: TokenizedPair, transform: PairTransform) -> TokenizedPair:
    """Re-run the transform on a pair whose image tensors were dropped."""
    fresh = transform(pair.origin)
    if fresh.prompt_ids != pair.prompt_ids or fresh.chosen_ids != pair.chosen_ids:
        raise RuntimeError(f"sample {pair.id}: re-tokenizing gave different ids")
    fresh.score_chosen, fresh.score_rejected = pair.score_chosen, pair.score_rejected
    return fresh


def _problem(sample: PreferenceSample, error: Exception) -> dict[str, Any]:
    if isinstance(error, SampleTooLongError):
        return {"id": sample.id, "field": "prompt", "error": str(error)}
    field_name = "images" if sample.images or sample.rejected_images else "prompt"
    where = sample.meta.get("file"), sample.meta.get("line")
    return {"id": sample.id, "field": field_name, "error": str(error), "where": where}


def _nothing_to_prefer(pair: TokenizedPair) -> bool:
    """Chosen and rejected rows are the same tokens over the same image tensors: the pair's
    log-prob margin is zero whatever the model does, so it only adds noise (a truncation to
    max_length can make two different responses equal, too)."""
    if pair.chosen_ids != pair.rejected_ids:
        return False
    if pair.rejected_image_inputs is None:
        return True
    if pair.rejected_prompt_ids is not None and pair.rejected_prompt_ids != pair.prompt_ids:
        return False
    chosen, rejected = pair.image_inputs or {}, pair.rejected_image_inputs
    return chosen.keys() == rejected.keys() and all(
        chosen[key].shape == rejected[key].shape and torch.equal(chosen[key], rejected[key])
        for key in chosen
    )


def _identical(sample: PreferenceSample) -> dict[str, Any]:
    where = sample.meta.get("file"), sample.meta.get("line")
    error = (
        "identical to chosen after tokenization (same tokens, same images): nothing to prefer "
        "(if both responses were cut at data.max_length, raise it)"
    )
    return {"id": sample.id, "field": "rejected", "error": error, "where": where}


def split_eval(
    samples: list[PreferenceSample], fraction: float, seed: int
) -> tuple[list[PreferenceSample], list[PreferenceSample]]:
    """Hold out ``fraction`` of the samples (seeded, stable for a given seed)."""
    if fraction <= 0 or len(samples) < 2:
        return samples, []
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(samples) * fraction)))
    held = set(order[:n_eval])
    train = [s for i, s in enumerate(samples) if i not in held]
    return train, [s for i, s in enumerate(samples) if i in held]


@dataclass
class BatchOrder:
    """Which pairs go into each micro-batch of each process, epoch by epoch.

    A global step consumes ``batch_size * grad_accum * num_processes`` pairs; process ``p``
    takes micro-batch slices ``p::num_processes`` of that block, so one process with batch
    size ``k * b`` sees the same pairs per optimizer step as ``k`` processes with ``b``. The
    order depends only on (seed, epoch), so a resumed run continues with the same batches.
    An incomplete last block of an epoch is dropped (and said in the run log).
    """

    num_pairs: int
    batch_size: int
    grad_accum: int
    num_processes: int = 1
    process_index: int = 0
    seed: int = 0
    shuffle: bool = True

    @property
    def pairs_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.num_processes

    @property
    def steps_per_epoch(self) -> int:
        return self.num_pairs // self.pairs_per_step

    def epoch_permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_pairs))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def step_batches(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        """The ``grad_accum`` micro-batches (pair indices) of this process for one step."""
        order = self.epoch_permutation(epoch)
        start = step_in_epoch * self.pairs_per_step
        block = order[start : start + self.pairs_per_step]
        per_micro = self.batch_size * self.num_processes
        out = []
        for micro in range(self.grad_accum):
            micro_block = block[micro * per_micro : (micro + 1) * per_micro]
            mine = micro_block[
                self.process_index * self.batch_size : (self.process_index + 1) * self.batch_size
            ]
            out.append(mine)
        return out

    def steps(self, start_step: int, total_steps: int) -> Iterator[tuple[int, int, int]]:
        """(global step, epoch, step in epoch) from ``start_step`` up to ``total_steps``."""
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.num_pairs} training pairs are fewer than one optimizer step needs "
                f"({self.pairs_per_step} = batch_size x grad_accum x processes)"
            )
        for step in range(start_step, total_steps):
            yield step, step // self.steps_per_epoch, step % self.steps_per_epoch
