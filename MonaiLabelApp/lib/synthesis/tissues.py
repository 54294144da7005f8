"""Tissue classes and their MR intensity ranges per contrast family (relative units, fluid ~ 1).

Labelled structures become tissues through their schema ``kind`` (bone -> marrow with a cortical rim,
cartilage, meniscus); groups (value 20, unsplit tibial cartilage) take the tissue of their members.
Unlabelled voxels become air, fat, muscle, fluid or tendon/ligament from the label geometry
(see ``background.py``).

The ranges are rough readings of typical knee protocols, not measurements:
- ``dess``: water-excitation double-echo steady state (OAI): cartilage bright, fluid brighter, fat and
  marrow suppressed, menisci and tendons black.
- ``pdfs``: proton-density fat-suppressed FSE: fluid very bright, cartilage intermediate, fat/marrow dark.
- ``t2``: T2-weighted FSE without fat suppression: fluid and fat/marrow bright, cartilage dark-intermediate.
A fourth family, ``random``, draws every tissue uniformly in [0, 1] (SynthSeg's full randomisation), so
a network cannot rely on any particular ordering of intensities.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    AIR = 0
    FAT = 1
    MUSCLE = 2
    FLUID = 3
    TENDON = 4
    CORTEX = 5
    MARROW = 6
    CARTILAGE = 7
    MENISCUS = 8


CONTRAST_FAMILIES = ("dess", "pdfs", "t2", "random")

# (low, high) mean intensity per tissue and family.
INTENSITY_RANGES: dict[str, dict[Tissue, tuple[float, float]]] = {
    "dess": {
        Tissue.AIR: (0.0, 0.02), Tissue.FAT: (0.05, 0.2), Tissue.MUSCLE: (0.2, 0.35),
        Tissue.FLUID: (0.75, 1.0), Tissue.TENDON: (0.0, 0.06), Tissue.CORTEX: (0.0, 0.04),
        Tissue.MARROW: (0.08, 0.22), Tissue.CARTILAGE: (0.45, 0.7), Tissue.MENISCUS: (0.02, 0.1),
    },
    "pdfs": {
        Tissue.AIR: (0.0, 0.02), Tissue.FAT: (0.04, 0.15), Tissue.MUSCLE: (0.2, 0.35),
        Tissue.FLUID: (0.8, 1.0), Tissue.TENDON: (0.0, 0.05), Tissue.CORTEX: (0.0, 0.03),
        Tissue.MARROW: (0.05, 0.15), Tissue.CARTILAGE: (0.35, 0.55), Tissue.MENISCUS: (0.02, 0.08),
    },
    "t2": {
        Tissue.AIR: (0.0, 0.02), Tissue.FAT: (0.55, 0.8), Tissue.MUSCLE: (0.12, 0.25),
        Tissue.FLUID: (0.8, 1.0), Tissue.TENDON: (0.0, 0.05), Tissue.CORTEX: (0.0, 0.03),
        Tissue.MARROW: (0.45, 0.7), Tissue.CARTILAGE: (0.15, 0.35), Tissue.MENISCUS: (0.01, 0.06),
    },
    "random": {t: (0.0, 1.0) for t in Tissue},
}

# Schema "kind" -> tissue inside a labelled structure (bones also get a cortical rim).
TISSUE_OF_KIND = {"bone": Tissue.MARROW, "cartilage": Tissue.CARTILAGE, "meniscus": Tissue.MENISCUS}


def draw_tissue_means(family: str, rng: np.random.Generator) -> dict[Tissue, float]:
    """One mean intensity per tissue for this family."""
    if family not in INTENSITY_RANGES:
        raise ValueError(f"Unknown contrast {family!r}; choose from {CONTRAST_FAMILIES} or None")
    return {t: float(rng.uniform(*INTENSITY_RANGES[family][t])) for t in Tissue}
