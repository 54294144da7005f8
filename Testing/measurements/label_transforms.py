"""Re-voxelise, rotate and mirror real label maps, for the robustness checks (tests and benchmark).

All three keep the anatomy a measurement should see the same: resampling and rotating put the same
physical knee on another voxel grid; mirroring flips the voxels left-right and keeps the header, which
turns a right knee into a left one.

Re-voxelisation comes in two kinds. `resample_to_spacing` (nearest neighbour) copies one source voxel
per new voxel: going coarser it drops one-voxel rims and, on flat grid-aligned plates, shifts a whole
surface by a voxel fraction. `resample_labels_linear` is label-aware: each label's 0/1 indicator is
resampled with linear interpolation and every new voxel takes the label with the largest value
(background included), i.e. the "generic label interpolator" approach of ITK (linear per label, then
argmax). A new voxel then takes the label that covers most of its neighbourhood instead of whichever
source voxel happens to be nearest. (ITK's label-Gaussian interpolator was tried earlier: its Gaussian
widens the neighbourhood and erodes the one-voxel rims of the plates; it moved the regional means more.)
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

INTERPOLATOR = sitk.sitkNearestNeighbor


def resample_to_spacing(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """Nearest-neighbour re-voxelisation (kept for comparison with `resample_labels_linear`)."""
    size, origin = _revoxelised_grid(image, spacing)
    return sitk.Resample(image, size, sitk.Transform(), INTERPOLATOR, origin, tuple(spacing),
                         image.GetDirection(), 0, image.GetPixelID())


def _revoxelised_grid(image: sitk.Image, spacing: tuple[float, float, float]):
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    # keep the grid centred on the same physical box: the outer voxel faces stay where they were
    old_first = np.array(image.GetSpacing()) * -0.5
    new_first = np.array(spacing) * -0.5
    origin = np.array(image.GetOrigin()) + np.array(image.GetDirection()).reshape(3, 3) @ (new_first - old_first)
    return size, tuple(origin)


def resample_labels_linear(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """Label-aware re-voxelisation: linear interpolation of each label's indicator, then per-voxel argmax.

    Memory: one float32 volume of the new grid for the running best value, plus the uint16 labels.
    Ties (e.g. exactly half cartilage, half background) go to the lower label value, background first,
    because only a strictly larger value replaces the running best; with non-commensurate spacings
    (0.365 -> 0.3 or 0.42 mm) exact ties are rare.
    """
    size, origin = _revoxelised_grid(image, spacing)
    array = sitk.GetArrayViewFromImage(image)
    best_label = None
    best_value = None
    for label in np.unique(array):  # background (0) is a label like the others
        indicator = sitk.Cast(image == int(label), sitk.sitkFloat32)
        value = sitk.GetArrayFromImage(sitk.Resample(indicator, size, sitk.Transform(), sitk.sitkLinear, origin,
                                                     tuple(spacing), image.GetDirection(), 0.0, sitk.sitkFloat32))
        if best_value is None:
            best_value = value
            best_label = np.full(value.shape, label, dtype=array.dtype)
        else:
            better = value > best_value
            best_value[better] = value[better]
            best_label[better] = label
    out = sitk.GetImageFromArray(best_label)
    out.SetOrigin(origin)
    out.SetSpacing(tuple(spacing))
    out.SetDirection(image.GetDirection())
    return sitk.Cast(out, image.GetPixelID())


def rotate_grid(image: sitk.Image, angles_deg: tuple[float, float, float]) -> sitk.Image:
    """The same physical anatomy on a voxel grid rotated about the image centre (same spacing)."""
    rot = sitk.Euler3DTransform()
    rot.SetRotation(*np.deg2rad(angles_deg))
    m = np.array(rot.GetMatrix()).reshape(3, 3)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    new_direction = m @ direction
    size = np.array(image.GetSize())
    spacing = np.array(image.GetSpacing())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2.0)))
    # grow the grid so the rotated box still holds the whole knee
    extent = np.abs(np.linalg.inv(new_direction) @ direction) @ (size * spacing)
    new_size = np.ceil(extent / spacing).astype(int)
    origin = centre - new_direction @ (spacing * (new_size - 1) / 2.0)
    return sitk.Resample(image, [int(s) for s in new_size], sitk.Transform(), INTERPOLATOR,
                         tuple(origin), tuple(spacing), tuple(new_direction.ravel()), 0, image.GetPixelID())


def mirror_left_right(image: sitk.Image) -> sitk.Image:
    """Flip the voxel axis that points most along patient left-right; the header is unchanged."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[0])))  # column with the largest x (L-R) component
    array = sitk.GetArrayFromImage(image)
    flipped = sitk.GetImageFromArray(np.flip(array, axis=2 - axis).copy())
    flipped.CopyInformation(image)
    return flipped
