"""Full-thickness cartilage loss: bare bone enclosed by a cartilage plate.

A bone-surface vertex is denuded when it is not covered by cartilage but lies inside the plate's
outline, i.e. its connected patch of uncovered bone (along mesh edges) is surrounded by covered bone
and does not reach the open bone around the plate (the edge of the measured crop). Loss that opens
onto the plate's rim cannot be told apart from the plate simply ending there, so it is not counted;
the report says so.
"""

from __future__ import annotations

import numpy as np


# Bare patches smaller than this (mm^2) are single-vertex specks between covered and thin cartilage,
# below what a label map at ~0.4 x 0.4 x 0.7 mm can show as full-thickness loss.
MIN_DEFECT_MM2 = 2.0


def enclosed_uncovered(triangles: np.ndarray, covered: np.ndarray, open_vertices: np.ndarray,
                       area: np.ndarray | None = None, min_area_mm2: float = MIN_DEFECT_MM2) -> np.ndarray:
    """Bool per vertex: uncovered and in a patch of uncovered vertices that touches no open vertex
    (and, when vertex areas are given, covers at least ``min_area_mm2``)."""
    n = len(covered)
    bare = ~covered
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = edges[bare[edges[:, 0]] & bare[edges[:, 1]]]
    component = np.arange(n)
    # Label propagation with pointer jumping: converges in O(log diameter) sweeps on meshes.
    while True:
        lo = np.minimum(component[edges[:, 0]], component[edges[:, 1]])
        before = component.copy()
        np.minimum.at(component, edges[:, 0], lo)
        np.minimum.at(component, edges[:, 1], lo)
        component = component[component]
        if np.array_equal(component, before):
            break
    open_components = np.unique(component[bare & open_vertices])
    enclosed = bare & ~np.isin(component, open_components)
    if area is not None:
        patch_area = np.bincount(component[enclosed], weights=area[enclosed], minlength=n)
        enclosed &= patch_area[component] >= min_area_mm2
    return enclosed
