"""Surface meshes of every labelled structure, in patient LPS millimetres, for export and display."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .labelmap import LabelMap
from .surface_nets import surface_nets, wound_for_physical

# Isotropic Gaussian (mm) before meshing: bones get 1 mm (a smooth, faithful model), which removes the
# 0.7 mm slice staircase; cartilage, only a few voxels thick, gets less so that it keeps its shape.
BONE_SMOOTHING_MM = 1.0
CARTILAGE_SMOOTHING_MM = 0.5
CARTILAGE_VALUES = (5, 6, 7, 8, 20)


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
    sigma = CARTILAGE_SMOOTHING_MM if set(values) <= set(CARTILAGE_VALUES) else BONE_SMOOTHING_MM
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, [sigma] * 3))
    verts, tris = surface_nets(smooth, 0.5)
    return labels.physical_points(verts + lo - 1), wound_for_physical(tris, labels.direction)
