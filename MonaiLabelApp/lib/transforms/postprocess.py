"""Anatomical clean-up of a predicted knee label map.

- each bone and each meniscus keeps only its largest connected component;
- a cartilage keeps only the components that touch its own bone (cartilage floating in fluid or
  stuck to the wrong bone is a false positive);
- the label map is one value per voxel, so structures cannot overlap.
Removed voxels become background. Works on crops around each structure, so it is cheap on big volumes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_FULL = ndimage.generate_binary_structure(3, 3)


def _bbox(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...] | None:
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return None
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(found[0], mask.shape))


def keep_largest_component(labels: np.ndarray, value: int) -> None:
    mask = labels == value
    box = _bbox(mask)
    if box is None:
        return
    components, count = ndimage.label(mask[box], structure=_FULL)
    if count <= 1:
        return
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    crop = labels[box]
    crop[(components != np.argmax(sizes)) & (components > 0)] = 0


def keep_components_touching(labels: np.ndarray, value: int, anchor_value: int) -> None:
    mask = labels == value
    box = _bbox(mask, margin=3)
    if box is None:
        return
    crop = labels[box]
    components, count = ndimage.label(crop == value, structure=_FULL)
    if count == 0:
        return
    near_anchor = ndimage.binary_dilation(crop == anchor_value, structure=_FULL, iterations=2)
    touching = np.unique(components[near_anchor & (components > 0)])
    crop[(components > 0) & ~np.isin(components, touching)] = 0


def anatomical_cleanup(labels: np.ndarray, schema) -> np.ndarray:
    """Cleans ``labels`` (schema values) in place and returns it."""
    for s in schema.structures:
        if s.kind in ("bone", "meniscus"):
            keep_largest_component(labels, s.value)
    for s in schema.structures:
        if s.kind == "cartilage" and s.bone:
            keep_components_touching(labels, s.value, schema.value_of(s.bone))
    return labels
