"""Working grids: where the networks see an MRI, and the way back to the image's own grid.

A working grid is axis-aligned in world (LPS) coordinates with a fixed spacing, so every input
orientation (sagittal, coronal, axial, oblique) reaches the network in one canonical orientation and
scale. Going back is a resampling onto the original grid, so the result has the input's exact shape,
spacing, origin and direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in world LPS coordinates (mm)."""

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]

    @property
    def extent(self) -> np.ndarray:
        return np.asarray(self.upper) - np.asarray(self.lower)

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.upper) + np.asarray(self.lower)) / 2

    def intersect(self, other: "Box") -> "Box":
        lo = np.maximum(self.lower, other.lower)
        hi = np.minimum(self.upper, other.upper)
        return Box(tuple(lo), tuple(np.maximum(hi, lo)))

    def grown(self, margin_mm: float) -> "Box":
        return Box(tuple(np.asarray(self.lower) - margin_mm), tuple(np.asarray(self.upper) + margin_mm))

    def clamped(self, max_extent_mm: float) -> "Box":
        """The box shrunk about its centre to at most ``max_extent_mm`` along each axis."""
        half = np.minimum(self.extent, max_extent_mm) / 2
        return Box(tuple(self.center - half), tuple(self.center + half))


@dataclass(frozen=True)
class Grid:
    """Geometry of an image: what SimpleITK's resampler needs as a reference."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def world_box(image: sitk.Image) -> Box:
    """The world-space bounding box of the image's voxels (voxel edges, not centres)."""
    size = np.asarray(image.GetSize(), dtype=float)
    corners = []
    for i in (-0.5, size[0] - 0.5):
        for j in (-0.5, size[1] - 0.5):
            for k in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
    corners = np.asarray(corners)
    return Box(tuple(corners.min(axis=0)), tuple(corners.max(axis=0)))


def grid_for_box(box: Box, spacing: tuple[float, float, float], multiple_of: int = 1) -> Grid:
    """An axis-aligned grid of the given spacing covering ``box``; sizes rounded up to ``multiple_of``."""
    spacing_arr = np.asarray(spacing, dtype=float)
    size = np.maximum(np.ceil(box.extent / spacing_arr).astype(int), 1)
    size = (np.ceil(size / multiple_of) * multiple_of).astype(int)
    # Centre the (possibly enlarged) grid on the box.
    origin = box.center - (size - 1) * spacing_arr / 2
    return Grid(tuple(int(s) for s in size), tuple(float(s) for s in spacing_arr), tuple(float(o) for o in origin))


def resample(image: sitk.Image, grid: Grid, interpolator=sitk.sitkLinear, default: float = 0.0,
             pixel_type=None) -> sitk.Image:
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in grid.size])
    f.SetOutputSpacing(grid.spacing)
    f.SetOutputOrigin(grid.origin)
    f.SetOutputDirection(grid.direction)
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(default)
    f.SetOutputPixelType(image.GetPixelID() if pixel_type is None else pixel_type)
    return f.Execute(image)


def index_region(image: sitk.Image, box: Box) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The index range (start, size) of ``image``'s own grid that covers a world box."""
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    corners = [
        image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in (x, y, z)))
        for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])
    ]
    corners = np.asarray(corners)
    size = np.asarray(image.GetSize())
    start = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, size - 1)
    stop = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, size - 1)
    return tuple(int(s) for s in start), tuple(int(s) for s in (stop - start + 1))


def sub_grid(image: sitk.Image, start: tuple[int, int, int], size: tuple[int, int, int]) -> Grid:
    """The geometry of a block of ``image``'s own voxels."""
    return Grid(size, image.GetSpacing(), image.TransformIndexToPhysicalPoint(start), image.GetDirection())


def normalize_intensity(array: np.ndarray) -> np.ndarray:
    """Robust MRI normalisation: 1st..99.5th percentile to 0..1 (no CT windows: MRI has no units)."""
    flat = array.ravel()
    sample = flat[:: max(1, flat.size // 2_000_000)]  # percentiles of ~2M voxels are plenty and fast
    lo, hi = np.percentile(sample, [1.0, 99.5])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((array.astype(np.float32) - lo) / scale, -0.5, 2.0).astype(np.float32)


def box_of_mask(mask: np.ndarray, grid_image: sitk.Image) -> Box | None:
    """World box of the True voxels of a numpy mask (z, y, x) laid on ``grid_image``'s grid."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    lo_zyx, hi_zyx = idx.min(axis=0), idx.max(axis=0)
    points = [
        grid_image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
        for x in (lo_zyx[2] - 0.5, hi_zyx[2] + 0.5)
        for y in (lo_zyx[1] - 0.5, hi_zyx[1] + 0.5)
        for z in (lo_zyx[0] - 0.5, hi_zyx[0] + 0.5)
    ]
    points = np.asarray(points)
    return Box(tuple(points.min(axis=0)), tuple(points.max(axis=0)))
