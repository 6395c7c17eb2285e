"""Held-out data joins the training data's calibration groups.

Calibration is fitted per (modality, source) on the training samples. A held-out file loaded
without its own source name gets its file stem (``uf_test``), which names no training group
(``uf_train``): its scores would have no calibration and ``tau_good: auto`` no median. When
the training data has exactly one source for that modality, the held-out samples join it;
when it has several, which one shares the held-out file's score scale is the user's call.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_adapters.loaders import DataError
from data_adapters.validation import LoadResult
from mmdpo.types import PreferenceSample


def adopt_training_sources(
    train: Sequence[PreferenceSample], held_out: LoadResult, label: str, required: bool = True
) -> list[str]:
    """Move held-out samples whose defaulted source names no training group into that group.

    Only samples whose source is ``held_out.default_source`` (the name the loader chose, not
    one the data or the config gave) move, and only to the one training source of their
    modality. ``required``: whether calibration needs the group (a method other than ``none``,
    or ``tau_good: auto``); if it does, a choice among several training sources raises
    DataError. Returns one line per move, for the user.
    """
    default = held_out.default_source
    train_sources: dict[str, set[str]] = {}
    for sample in train:
        train_sources.setdefault(sample.modality, set()).add(sample.source)
    moves: dict[tuple[str, str], str] = {}
    for sample in held_out.samples:
        known = train_sources.get(sample.modality, set())
        if default is None or sample.source != default or sample.source in known or not known:
            continue
        if len(known) == 1:
            (target,) = known
            moves[(sample.modality, sample.source)] = target
            sample.source = target
        elif required:
            names = ", ".join(sorted(known))
            raise DataError(
                f"{label}: held-out {sample.modality} samples get the source {sample.source!r} "
                f"(the file's name), which is no training group, and the training data has "
                f"several {sample.modality} sources ({names}); set `source:` on this data.eval "
                "entry to the one whose score scale it shares"
            )
    return [
        f"held-out {label} ({old}) joins the calibration group {modality}/{new}"
        for (modality, old), new in moves.items()
    ]
