"""How an MR scanner degrades an ideal tissue image: resolution, slice thickness, bias field, noise.

All functions work on numpy arrays in SimpleITK's [k, j, i] order and keep the grid unchanged, so the
synthetic image always has the label map's geometry.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .fields import smooth_random_field

PLANES = ("sagittal", "coronal", "axial")
# The physical LPS axis that each plane's slices are stacked along (sagittal slices: along L-R).
_SLICE_DIRECTION = {"sagittal": 0, "coronal": 1, "axial": 2}


def slice_axis(direction: tuple[float, ...], plane: str) -> int:
    """The numpy axis of an image with ``direction`` (SimpleITK, row-major 3x3) closest to ``plane``'s
    slice-select direction. Oblique images get the nearest axis."""
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, not {plane!r}")
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # columns = index axes i, j, k
    index_axis = int(np.argmax(np.abs(matrix[_SLICE_DIRECTION[plane], :])))
    return 2 - index_axis  # numpy order is k, j, i


def thick_slice_operator(n: int, spacing_mm: float, thickness_mm: float, offset_mm: float) -> np.ndarray:
    """(n, n) matrix along one axis: average over Gaussian slice profiles (FWHM = thickness, one slice
    every ``thickness_mm``), then linear interpolation back to the voxel grid."""
    positions = np.arange(n) * spacing_mm
    # The offset only sets the phase of the slice grid; wrapped into one thickness, the first centre
    # lies before the first voxel, so every voxel has slices on both sides (none comes out NaN).
    offset_mm = offset_mm % thickness_mm
    centres = np.arange(offset_mm - thickness_mm, positions[-1] + 2 * thickness_mm, thickness_mm)
    sigma = thickness_mm / 2.355
    profile = np.exp(-0.5 * ((centres[:, None] - positions[None, :]) / sigma) ** 2)
    acquire = profile / profile.sum(axis=1, keepdims=True)  # (slices, n)
    # Linear interpolation from slice centres back to voxel positions (hat functions).
    distance = np.abs(positions[:, None] - centres[None, :]) / thickness_mm
    reconstruct = np.clip(1.0 - distance, 0.0, None)
    reconstruct /= reconstruct.sum(axis=1, keepdims=True)  # (n, slices)
    return (reconstruct @ acquire).astype(np.float32)


def apply_along_axis(volume: np.ndarray, operator: np.ndarray, axis: int) -> np.ndarray:
    """``operator`` (n, n) applied to every line of ``volume`` along ``axis``."""
    moved = np.moveaxis(volume, axis, -1)
    return np.moveaxis(moved @ operator.T, -1, axis)


def simulate_resolution(
    image: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    axis: int,
    slice_thickness_mm: float,
    in_plane_blur_mm: float,
    slice_offset_mm: float,
) -> np.ndarray:
    """Thick slices along ``axis`` plus Gaussian in-plane blur (sigma in mm)."""
    out = image
    if in_plane_blur_mm > 0:
        sigma = [0.0 if a == axis else in_plane_blur_mm / s for a, s in enumerate(spacing_zyx)]
        out = ndimage.gaussian_filter(out, sigma=sigma, mode="nearest")
    # Slices thinner than ~1.2 voxels change nothing visible at this grid: skip the work.
    if slice_thickness_mm > 1.2 * spacing_zyx[axis]:
        op = thick_slice_operator(image.shape[axis], spacing_zyx[axis], slice_thickness_mm, slice_offset_mm)
        out = apply_along_axis(out, op, axis)
    return out.astype(np.float32, copy=False)


def bias_field(
    shape: tuple[int, int, int], spacing_zyx, rng: np.random.Generator, strength: float, correlation_mm: float
) -> np.ndarray:
    """Multiplicative coil-sensitivity field exp(strength * smooth field); 1 everywhere if strength 0."""
    field = smooth_random_field(shape, spacing_zyx, rng, correlation_mm)
    return np.exp(strength * field).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: Rician, so air is not zero but ~ sigma."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)
