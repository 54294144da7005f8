"""MRI-like images synthesised from knee label maps, with domain randomisation in the spirit of SynthSeg
(Billot et al., Medical Image Analysis 2023): every seed draws new tissue intensities, background
tissues, texture, bias field, resolution/slice thickness/plane, contrast curve and Rician noise, so a
network trained on them has to rely on shape, not on one scanner's contrast.

Entry points:
- ``synthesize_image(labels, seed, contrast=None, **options)``: float32 image, same geometry as labels.
- ``synthesize_pair(labels, seed, contrast=None, deform=True, **options)``: (image, labels) after a
  random spatial deformation of the labels.
- ``draw_parameters(seed, contrast=None, **options)`` and ``render(labels, parameters)``: the same in two
  steps, for tests and for callers that want to see or fix what was drawn.
- ``load_label_map(path, convention)`` (re-exported from ``label_source``): a schema-valued label map.

``options`` override any field of ``SynthesisParameters`` (e.g. ``plane="axial"``,
``slice_thickness_mm=3.0``, ``noise_sigma=0.0``, ``bias_strength=0.0``). Output intensities are in
relative units (fluid ~ 1); no step depends on image statistics, so relabelling one region changes the
image only near that region. Everything is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .acquisition import PLANES, add_rician_noise, bias_field, simulate_resolution, slice_axis
from .background import BACKGROUND_CODE, BackgroundLayout, build_class_map
from .deformation import deform_labels
from .fields import smooth_random_field
from .label_source import knee_schema, load_label_map, tissue_kind_by_value
from .tissues import CONTRAST_FAMILIES, TISSUE_OF_KIND, Tissue, draw_tissue_means

__all__ = [
    "SynthesisParameters",
    "draw_parameters",
    "render",
    "synthesize_image",
    "synthesize_pair",
    "deform_labels",
    "load_label_map",
    "CONTRAST_FAMILIES",
    "PLANES",
]


@dataclass(frozen=True)
class SynthesisParameters:
    """Everything one synthetic image is made from, drawn from a seed."""

    contrast: str
    tissue_means: dict[Tissue, float]
    structure_means: dict[int, float]  # schema value (structures and groups) -> mean intensity
    texture_amplitude: float
    marrow_texture_amplitude: float
    texture_correlation_mm: float
    layout: BackgroundLayout
    plane: str
    slice_thickness_mm: float
    slice_offset_mm: float
    in_plane_blur_mm: float
    bias_strength: float
    bias_correlation_mm: float
    gamma: float
    noise_sigma: float
    field_seed: int = field(repr=False)


def draw_parameters(seed: int, contrast: str | None = None, **options) -> SynthesisParameters:
    """Draw all parameters from ``seed``; ``contrast`` None picks a family at random (incl. "random")."""
    rng = np.random.default_rng([seed, 1])
    family = str(rng.choice(CONTRAST_FAMILIES))  # always drawn, so the stream is the same either way
    if contrast is not None:
        family = contrast
    tissue_means = draw_tissue_means(family, rng)
    kinds = tissue_kind_by_value()
    structure_means = {}
    for value in sorted(kinds):
        base = tissue_means[TISSUE_OF_KIND[kinds[value]]]
        # Each structure gets its own mean around its tissue's (as SynthSeg does per label); in the
        # "random" family structures are independent altogether.
        structure_means[value] = float(rng.uniform(0, 1)) if family == "random" else base * float(rng.uniform(0.9, 1.1))
    parameters = SynthesisParameters(
        contrast=family,
        tissue_means=tissue_means,
        structure_means=structure_means,
        texture_amplitude=float(rng.uniform(0.02, 0.1)),
        marrow_texture_amplitude=float(rng.uniform(0.05, 0.25)),
        texture_correlation_mm=float(rng.uniform(1.0, 3.0)),
        layout=BackgroundLayout.draw(rng),
        plane=str(rng.choice(PLANES)),
        slice_thickness_mm=float(rng.uniform(0.3, 4.0)),
        slice_offset_mm=float(rng.uniform(0.0, 4.0)),
        in_plane_blur_mm=float(rng.uniform(0.0, 0.6)),
        bias_strength=float(rng.uniform(0.0, 0.35)),
        bias_correlation_mm=float(rng.uniform(50.0, 120.0)),
        gamma=float(np.exp(rng.normal(0.0, 0.2))),
        noise_sigma=float(rng.uniform(0.01, 0.06)),
        field_seed=int(rng.integers(0, 2**31 - 1)),
    )
    return dataclasses.replace(parameters, **options) if options else parameters


def render(labels: sitk.Image, parameters: SynthesisParameters) -> sitk.Image:
    """The image of ``labels`` under ``parameters`` (float32, labels' geometry)."""
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        # Every step below works on (z, y, x) arrays; anything else fails deep inside with an IndexError.
        raise ValueError(f"synthesis needs a 3D label map of one value per voxel, not a {labels.GetDimension()}D "
                         f"image with {labels.GetNumberOfComponentsPerPixel()} value(s) per voxel")
    label_array = sitk.GetArrayViewFromImage(labels)
    knee_schema().check_label_values(label_array)
    spacing_zyx = tuple(float(s) for s in reversed(labels.GetSpacing()))
    rng = np.random.default_rng(parameters.field_seed)

    classes = build_class_map(label_array, spacing_zyx, tissue_kind_by_value(), parameters.layout, rng)
    lookup = np.zeros(256, dtype=np.float32)
    for value, mean in parameters.structure_means.items():
        lookup[value] = mean
    for tissue, mean in parameters.tissue_means.items():
        lookup[BACKGROUND_CODE + tissue] = mean
    image = lookup[classes]

    # Texture: a fine multiplicative pattern, stronger in marrow (trabeculae) than elsewhere.
    texture = smooth_random_field(classes.shape, spacing_zyx, rng, parameters.texture_correlation_mm)
    bone_values = [v for v, kind in tissue_kind_by_value().items() if kind == "bone"]
    marrow = np.isin(classes, bone_values)
    amplitude = np.where(marrow, parameters.marrow_texture_amplitude, parameters.texture_amplitude)
    image *= np.clip(1.0 + amplitude * texture, 0.0, None)

    image *= bias_field(classes.shape, spacing_zyx, rng, parameters.bias_strength, parameters.bias_correlation_mm)
    axis = slice_axis(labels.GetDirection(), parameters.plane)
    image = simulate_resolution(
        image, spacing_zyx, axis, parameters.slice_thickness_mm, parameters.in_plane_blur_mm, parameters.slice_offset_mm
    )
    image = np.power(np.clip(image, 0.0, None), parameters.gamma, dtype=np.float32)
    image = add_rician_noise(image, parameters.noise_sigma, rng)

    out = sitk.GetImageFromArray(image.astype(np.float32, copy=False))
    out.CopyInformation(labels)
    return out


def synthesize_image(labels: sitk.Image, seed: int, contrast: str | None = None, **options) -> sitk.Image:
    """A randomised MRI-like image of ``labels`` (schema values; group 20 is cartilage)."""
    return render(labels, draw_parameters(seed, contrast, **options))


def synthesize_pair(
    labels: sitk.Image, seed: int, contrast: str | None = None, deform: bool = True, **options
) -> tuple[sitk.Image, sitk.Image]:
    """(image, labels) where both are randomly deformed the same way (when ``deform``)."""
    moved = deform_labels(labels, seed) if deform else labels
    return synthesize_image(moved, seed, contrast, **options), moved
