"""Where the next correction click goes, and clicks as network input.

The benchmark and the refinement trainer both place clicks the same way (the usual simulated user of
interactive segmentation papers): at the centre of the largest error region, positive inside a missed
region, negative inside a false one. "Centre" is the voxel farthest from the region's boundary (in mm),
not the centroid: the centroid of a curved cartilage plate can lie outside it.
Arrays are (k, j, i); clicks are voxel indices (i, j, k), the order the server's API uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Click:
    ijk: tuple[int, int, int]
    positive: bool
    region_voxels: int  # size of the error region it corrects (0 when there was no error)


def largest_error_click(prediction: np.ndarray, truth: np.ndarray,
                        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Click | None:
    """The click a careful user makes next, or None when prediction == truth."""
    prediction = np.asarray(prediction, bool)
    truth = np.asarray(truth, bool)
    best = None  # (size, positive, component mask, offset)
    for positive, errors in ((True, truth & ~prediction), (False, prediction & ~truth)):
        if not errors.any():
            continue
        components, n = ndimage.label(errors)
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        # Ties between a missed and a false region go to the missed one (listed first).
        if best is None or sizes[largest - 1] > best[0]:
            best = (int(sizes[largest - 1]), positive, components, largest)
    if best is None:
        return None
    size, positive, components, largest = best
    region = ndimage.find_objects(components)[largest - 1]
    # Padded by one so that the crop's border counts as the region's boundary.
    mask = np.pad(components[region] == largest, 1)
    distance = ndimage.distance_transform_edt(mask, sampling=spacing_zyx)
    # Ties (a slab has a whole sheet of deepest voxels): the deepest voxel nearest their middle.
    deepest = np.argwhere(distance >= distance.max() - 1e-6)
    k, j, i = deepest[int(np.argmin(((deepest - deepest.mean(axis=0)) ** 2).sum(axis=1)))]
    k, j, i = k - 1 + region[0].start, j - 1 + region[1].start, i - 1 + region[2].start
    return Click((int(i), int(j), int(k)), positive, size)


def click_map(shape_zyx: tuple[int, int, int], clicks_ijk, spacing_zyx, sigma_mm: float = 3.0) -> np.ndarray:
    """A Gaussian blob (peak 1) around each click, in mm so it means the same at any voxel size."""
    out = np.zeros(shape_zyx, np.float32)
    if len(clicks_ijk) == 0:
        return out
    spacing = np.asarray(spacing_zyx, float)
    reach = np.ceil(3 * sigma_mm / spacing).astype(int)
    for i, j, k in clicks_ijk:
        centre = np.array([k, j, i])
        lo = np.maximum(centre - reach, 0)
        hi = np.minimum(centre + reach + 1, shape_zyx)
        if np.any(hi <= lo):
            continue
        axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing)]
        dz, dy, dx = np.meshgrid(*axes, indexing="ij")
        blob = np.exp(-(dz**2 + dy**2 + dx**2) / (2 * sigma_mm**2)).astype(np.float32)
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        np.maximum(out[window], blob, out=out[window])
    return out
