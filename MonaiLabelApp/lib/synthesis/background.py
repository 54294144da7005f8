"""Which tissue every voxel is, derived from the label geometry and a few random smooth fields.

Labelled voxels keep their structure (bones get a dark cortical rim of random thickness around their
marrow). Unlabelled voxels are split, so that a network cannot learn "background = one grey value":
- air outside a leg outline at a random, smoothly varying distance from the bones,
- subcutaneous fat just inside that outline,
- joint fluid in a thin random layer on cartilage and menisci, plus effusion pockets near bone,
- dark tendon/ligament sheets (zero-level sets of a smooth field) near the joint,
- fat and muscle elsewhere, split by another smooth field.
Every threshold and field comes from the caller's random generator, so the map is deterministic.
Only cartilage/menisci move the fluid layer and only bones move the outline: relabelling a cartilage
patch changes tissues within a few millimetres of that patch and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.special import ndtri

from .fields import smooth_random_field
from .tissues import Tissue

# Class codes of the class map: schema label values (< 100) keep their own intensity; background and
# cortical bone use BACKGROUND_CODE + Tissue.
BACKGROUND_CODE = 100


@dataclass(frozen=True)
class BackgroundLayout:
    """The random geometry of the unlabelled tissues (mm, fractions, field correlation lengths)."""

    cortex_mm: float
    leg_radius_mm: float
    leg_wobble_mm: float
    subcutaneous_fat_mm: float
    fluid_layer_mm: float
    fluid_coverage: float
    effusion_reach_mm: float
    effusion_fraction: float
    tendon_reach_mm: float
    tendon_half_width: float
    fat_fraction: float
    fat_correlation_mm: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "BackgroundLayout":
        return cls(
            cortex_mm=rng.uniform(0.6, 2.0),
            leg_radius_mm=rng.uniform(15.0, 40.0),
            leg_wobble_mm=rng.uniform(2.0, 10.0),
            subcutaneous_fat_mm=rng.uniform(3.0, 12.0),
            fluid_layer_mm=rng.uniform(0.7, 2.5),
            fluid_coverage=rng.uniform(0.2, 0.9),
            effusion_reach_mm=rng.uniform(4.0, 15.0),
            effusion_fraction=rng.uniform(0.0, 0.15),
            tendon_reach_mm=rng.uniform(5.0, 25.0),
            tendon_half_width=rng.uniform(0.02, 0.08),
            fat_fraction=rng.uniform(0.2, 0.7),
            fat_correlation_mm=rng.uniform(6.0, 20.0),
        )


def build_class_map(
    labels: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    kinds: dict[int, str],
    layout: BackgroundLayout,
    rng: np.random.Generator,
) -> np.ndarray:
    """uint8 class map: label values where labelled (bones' rims -> cortex), 100 + Tissue elsewhere."""
    shape = labels.shape
    values_of = lambda kind: [v for v, k in kinds.items() if k == kind]  # noqa: E731
    bone = np.isin(labels, values_of("bone"))
    soft_labelled = np.isin(labels, values_of("cartilage") + values_of("meniscus"))
    labelled = labels > 0
    anchor = bone if bone.any() else labelled

    classes = labels.astype(np.uint8)
    if bone.any() and not bone.all():
        depth_in_bone = distance_outside(~bone, spacing_zyx)  # distance to the nearest non-bone voxel
        classes[bone & (depth_in_bone <= layout.cortex_mm)] = BACKGROUND_CODE + Tissue.CORTEX

    # Fields are always drawn, in a fixed order, so the random stream does not depend on the labels.
    leg_field = smooth_random_field(shape, spacing_zyx, rng, 40.0)
    fluid_field = smooth_random_field(shape, spacing_zyx, rng, 8.0)
    effusion_field = smooth_random_field(shape, spacing_zyx, rng, 12.0)
    tendon_field = smooth_random_field(shape, spacing_zyx, rng, 15.0)
    fat_field = smooth_random_field(shape, spacing_zyx, rng, layout.fat_correlation_mm)

    distance_to_anchor = distance_outside(anchor, spacing_zyx)
    distance_to_soft = distance_outside(soft_labelled, spacing_zyx)

    leg_outline = layout.leg_radius_mm + layout.leg_wobble_mm * leg_field
    air = distance_to_anchor > leg_outline
    subcutaneous = ~air & (distance_to_anchor > leg_outline - layout.subcutaneous_fat_mm)
    fluid = (distance_to_soft <= layout.fluid_layer_mm) & (fluid_field > ndtri(1.0 - layout.fluid_coverage))
    if layout.effusion_fraction > 0:
        effusion = effusion_field > ndtri(1.0 - layout.effusion_fraction)
        fluid |= effusion & (distance_to_anchor <= layout.effusion_reach_mm)
    tendon = (np.abs(tendon_field) < layout.tendon_half_width) & (distance_to_anchor <= layout.tendon_reach_mm)
    fat = fat_field > ndtri(1.0 - layout.fat_fraction)

    # Later assignments win; labelled voxels are never touched.
    background = np.full(shape, Tissue.MUSCLE, dtype=np.uint8)
    background[fat] = Tissue.FAT
    background[tendon] = Tissue.TENDON
    background[fluid] = Tissue.FLUID
    background[subcutaneous] = Tissue.FAT
    background[air] = Tissue.AIR
    classes[~labelled] = BACKGROUND_CODE + background[~labelled]
    return classes


def distance_outside(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Distance in mm from every voxel outside ``mask`` to the nearest mask voxel (<= 0 inside; +inf
    everywhere when the mask is empty). ITK's Maurer transform: multi-threaded, ~4x faster than
    scipy's EDT on a full-resolution knee and equal to it outside the mask."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(distance)
