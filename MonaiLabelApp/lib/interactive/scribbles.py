"""Scribble refinement of one structure: the painted voxels seed a random walker.

Strokes reach farther than a click (``radius_mm``): foreground strokes grow the structure into what
the walker connects to them, background strokes remove what it connects to them; voxels connected
to neither stroke keep their label (an fg-only stroke never removes anything). The write-back guarantees are refine_labels' own (other structures never change).
"""

from __future__ import annotations

import numpy as np

from lib.interactive.refine import random_walker_proposer, refine_labels

SCRIBBLE_RADIUS_MM = 15.0
SCRIBBLE_BETA = 3000.0


def refine_with_scribbles(image: np.ndarray, labels: np.ndarray, value: int, foreground, background, spacing_zyx,
                          radius_mm: float = SCRIBBLE_RADIUS_MM) -> tuple[np.ndarray, dict]:
    return refine_labels(image, labels, value, foreground, background, spacing_zyx,
                         random_walker_proposer(radius_mm, SCRIBBLE_BETA), radius_mm)
