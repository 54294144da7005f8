"""Per-structure Dice of a predicted label map against a reference that may carry group values."""

from __future__ import annotations

import numpy as np


def structure_dice(prediction: np.ndarray, reference: np.ndarray, schema) -> dict[str, float]:
    """Dice per schema structure present in the reference. Where the reference labels a group (e.g.
    unsplit tibial cartilage), the group's union is scored under the group's key instead of its members."""
    scores: dict[str, float] = {}
    grouped = set()
    for group in schema.groups:
        ref = reference == group.value
        if ref.any():
            members = [schema.value_of(m) for m in group.members]
            ref = ref | np.isin(reference, members)
            scores[group.key] = _dice(np.isin(prediction, members), ref)
            grouped.update(group.members)
    for s in schema.structures:
        if s.key in grouped:
            continue
        ref = reference == s.value
        if ref.any():
            scores[s.key] = _dice(prediction == s.value, ref)
    return scores


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
