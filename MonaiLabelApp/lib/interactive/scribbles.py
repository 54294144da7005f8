"""Scribble refinement of one structure: the painted voxels seed a random walker.

Unlike a click (which corrects the one error region it lies in), a scribble session re-decides the
whole neighbourhood of the strokes: every voxel within ``radius_mm`` of a stroke, foreground strokes
pulling it into the structure, background strokes and the current labels beyond the strokes' reach
pulling it out. The write-back guarantees are refine_labels' own (other structures never change).
"""

from __future__ import annotations

import numpy as np

from lib.interactive.refine import random_walker_proposer, refine_labels

SCRIBBLE_RADIUS_MM = 15.0
SCRIBBLE_BETA = 3000.0


def refine_with_scribbles(image: np.ndarray, labels: np.ndarray, value: int, foreground, background, spacing_zyx,
                          radius_mm: float = SCRIBBLE_RADIUS_MM) -> tuple[np.ndarray, dict]:
    return refine_labels(image, labels, value, foreground, background, spacing_zyx,
                         random_walker_proposer(radius_mm, SCRIBBLE_BETA), radius_mm, local_clicks_only=False)
