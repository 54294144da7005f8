"""Random spatial deformation of a label map: a small affine (rotation, scaling) plus a smooth elastic
displacement, resampled with nearest neighbour onto the SAME grid, so image and labels stay paired."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .fields import smooth_random_field


def deform_labels(
    labels: sitk.Image,
    seed: int,
    max_rotation_deg: float = 8.0,
    max_scaling: float = 0.08,
    elastic_mm: float = 2.0,
    elastic_correlation_mm: float = 25.0,
) -> sitk.Image:
    """``labels`` moved by a random affine + elastic transform drawn from ``seed`` (same geometry)."""
    rng = np.random.default_rng([seed, 2])  # its own stream: independent of the intensity draws
    dimension = labels.GetDimension()
    if dimension != 3:
        raise ValueError("deform_labels expects a 3D label map")
    size = np.array(labels.GetSize())
    centre = labels.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())

    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    angles = np.radians(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    rotation = sitk.Euler3DTransform((0, 0, 0), *angles.tolist()).GetMatrix()
    scaling = np.diag(1.0 + rng.uniform(-max_scaling, max_scaling, 3))
    affine.SetMatrix((np.asarray(rotation).reshape(3, 3) @ scaling).ravel().tolist())

    spacing_zyx = tuple(reversed(labels.GetSpacing()))
    shape = tuple(reversed(labels.GetSize()))
    # Displacements in physical (LPS) mm; components last, as SimpleITK vector images want.
    components = [elastic_mm * smooth_random_field(shape, spacing_zyx, rng, elastic_correlation_mm) for _ in range(3)]
    displacement = sitk.GetImageFromArray(np.stack(components, axis=-1).astype(np.float64), isVector=True)
    displacement.CopyInformation(labels)
    elastic = sitk.DisplacementFieldTransform(displacement)

    transform = sitk.CompositeTransform([affine, elastic])
    return sitk.Resample(labels, labels, transform, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
