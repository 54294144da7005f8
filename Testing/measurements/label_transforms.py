"""Re-voxelise, rotate and mirror real label maps, for the robustness checks (tests and benchmark).

All three keep the anatomy a measurement should see the same: resampling and rotating put the same
physical knee on another voxel grid by nearest neighbour, as label maps are usually resampled (ITK's
label-Gaussian interpolator was tried too: it erodes the one-voxel rims of the plates and moves the
regional means more);
mirroring flips the voxels left-right and keeps the header, which turns a right knee into a left one.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

INTERPOLATOR = sitk.sitkNearestNeighbor


def resample_to_spacing(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    # keep the grid centred on the same physical box
    old_first = np.array(image.GetSpacing()) * -0.5
    new_first = np.array(spacing) * -0.5
    origin = np.array(image.GetOrigin()) + np.array(image.GetDirection()).reshape(3, 3) @ (new_first - old_first)
    return sitk.Resample(image, size, sitk.Transform(), INTERPOLATOR, tuple(origin), tuple(spacing),
                         image.GetDirection(), 0, image.GetPixelID())


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
