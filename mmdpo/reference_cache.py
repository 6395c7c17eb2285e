"""Precomputed reference log-probs: one pass before training, then lookups by content hash.

Each entry is keyed by a hash of the tokenized pair (prompt, both responses, the rejected
side's own prompt), the bytes of its processed image tensors, and the reference identity
(model, quantization, dtype). Vision pairs are cached like text ones, which no peer offers.
A changed tokenizer, image or reference therefore never reuses a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmdpo.types import TokenizedPair

CACHE_FILE = "reference_logps.safetensors"


def _hash_tensors(digest: hashlib._Hash, inputs: dict[str, torch.Tensor] | None) -> None:
    for key in sorted(inputs or {}):
        tensor = inputs[key].detach().contiguous().cpu()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def image_digest(pair: TokenizedPair) -> str:
    """sha256 of a pair's processed image tensors (both sides); kept when they are dropped."""
    if pair.image_digest is not None:
        return pair.image_digest
    digest = hashlib.sha256()
    _hash_tensors(digest, pair.image_inputs)
    digest.update(b"|rejected-images|")
    _hash_tensors(digest, pair.rejected_image_inputs)
    return digest.hexdigest()


def pair_key(pair: TokenizedPair, reference_identity: str) -> str:
    """The content hash that identifies one pair's reference log-probs."""
    digest = hashlib.sha256()
    digest.update(reference_identity.encode())
    for ids in (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids, pair.rejected_prompt_ids):
        digest.update(b"|" + (json.dumps(ids) if ids is not None else "none").encode())
    digest.update(b"|images|" + image_digest(pair).encode())
    return digest.hexdigest()


class ReferenceCache:
    """Reference sequence log-probs (summed) and token counts per pair key, on disk.

    Stored as one safetensors file holding a (N, 4) fp32 table (chosen sum, rejected sum,
    chosen tokens, rejected tokens), with the index key -> row in its metadata, so that one
    atomic rename publishes both.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.rows: dict[str, int] = {}
        self.table = torch.zeros((0, 4), dtype=torch.float32)
        file = self.folder / CACHE_FILE
        if file.is_file():
            with safe_open(str(file), framework="pt") as handle:
                self.rows = json.loads(handle.metadata()["index"])
                self.table = handle.get_tensor("table")

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.rows]

    def add(self, keys: list[str], values: torch.Tensor) -> None:
        """values: Shape (len(keys), 4)."""
        new = [(k, v) for k, v in zip(keys, values.detach().float().cpu(), strict=True)]
        fresh = [(k, v) for k, v in new if k not in self.rows]
        if not fresh:
            return
        start = self.table.shape[0]
        self.table = torch.cat([self.table, torch.stack([v for _, v in fresh])])
        for offset, (key, _) in enumerate(fresh):
            self.rows[key] = start + offset

    def lookup(self, keys: list[str]) -> torch.Tensor:
        """Shape: (len(keys), 4). A missing key is a bug in the caller: say which."""
        absent = self.missing(keys)
        if absent:
            raise KeyError(f"reference cache {self.folder} has no entry for {absent[:3]}")
        return self.table[[self.rows[k] for k in keys]]

    def save(self) -> None:
        """Write atomically: a temporary file, then rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / (CACHE_FILE + f".tmp-{os.getpid()}")
        metadata = {"index": json.dumps(self.rows)}
        save_file({"table": self.table.contiguous()}, str(temporary), metadata=metadata)
        os.replace(temporary, self.folder / CACHE_FILE)
