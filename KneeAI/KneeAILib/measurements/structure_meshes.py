"""Surface meshes of every labelled structure, in patient LPS millimetres, for export and display."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .labelmap import LabelMap
from .surface_nets import surface_nets

# Lighter smoothing than for thickness: these meshes are for looking at and printing, and thin
# cartilage must keep its shape; half a voxel removes the staircase that a voxel mesh would show.
DISPLAY_SMOOTHING_FRACTION = 0.5


def structure_mesh(labels: LabelMap, values: tuple[int, ...] | int, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(vertices mm LPS, triangles) of the union of ``values``; empty arrays if none is present."""
    values = (values,) if isinstance(values, int) else tuple(values)
    mask = np.isin(labels.array, values)
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    crop = np.pad(mask[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32), 1)
    img = sitk.GetImageFromArray(crop)
    img.SetSpacing(tuple(labels.spacing))
    smooth = sitk.GetArrayFromImage(
        sitk.SmoothingRecursiveGaussian(img, list(DISPLAY_SMOOTHING_FRACTION * labels.spacing)))
    verts, tris = surface_nets(smooth, 0.5)
    return labels.physical_points(verts + lo - 1), tris
