"""Per-structure Dice, 95% Hausdorff distance and average symmetric surface distance (mm).

Definitions (the same as MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``):
- surface of a mask: its voxels with at least one 6-neighbour outside the mask;
- d(A->B): for every surface voxel of A, the Euclidean distance in mm (voxel spacing honoured, so
  anisotropic grids are measured correctly) to the nearest surface voxel of B;
- HD95 = max(95th percentile of d(A->B), 95th percentile of d(B->A));
- ASD  = mean of d(A->B) and d(B->A) pooled (average symmetric surface distance).
The edge of the field of view is NOT a surface by default: bones cut by the image border (femoral and
tibial shafts) would otherwise add a face where prediction and reference trivially agree.

Empty structures never raise: Dice is 0 when exactly one side is empty and NaN when both are; distances
are NaN whenever a side has no surface; ``status`` says which case applied, so averages can skip them
(``numpy.nanmean``) knowingly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

OK = "ok"
EMPTY_REFERENCE = "empty_reference"  # prediction has voxels the reference does not label at all
EMPTY_PREDICTION = "empty_prediction"
EMPTY_BOTH = "empty_both"
NO_SURFACE = "no_surface"  # a mask fills the whole field of view: no boundary to measure
UNSPLIT_IN_REFERENCE = "unsplit_in_reference"  # reference labels this structure only as a group

_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class StructureScore:
    key: str
    dice: float
    hd95_mm: float
    asd_mm: float
    status: str = OK

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict:
        """JSON-safe: NaN becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing_zyx: Sequence[float], fov_border_is_surface: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(d(A->B), d(B->A)) in mm for two non-empty boolean masks in numpy [z, y, x] order."""
    # Nearest surface voxels lie inside the union's bounding box: crop for speed, keeping one voxel of
    # margin so that a crop edge is never mistaken for the field-of-view edge.
    box = _bounding_box(a | b, margin=1)
    a, b = a[box], b[box]
    if fov_border_is_surface:
        a, b = np.pad(a, 1), np.pad(b, 1)
    surface_a, surface_b = _surface(a), _surface(b)
    if not surface_a.any() or not surface_b.any():
        return np.empty(0), np.empty(0)
    to_b = _distance_to(surface_b, spacing_zyx)
    to_a = _distance_to(surface_a, spacing_zyx)
    return to_b[surface_a], to_a[surface_b]


def score_masks(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing_zyx: Sequence[float],
    key: str = "mask",
    fov_border_is_surface: bool = False,
) -> StructureScore:
    """Dice, HD95 and ASD of one structure given as two boolean masks."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"Masks differ in shape: {prediction.shape} vs {reference.shape}")
    d = dice(prediction, reference)
    has_prediction, has_reference = bool(prediction.any()), bool(reference.any())
    if not has_prediction or not has_reference:
        status = EMPTY_BOTH if not (has_prediction or has_reference) else (
            EMPTY_PREDICTION if has_reference else EMPTY_REFERENCE
        )
        return StructureScore(key, d, math.nan, math.nan, status)
    to_reference, to_prediction = surface_distances(prediction, reference, spacing_zyx, fov_border_is_surface)
    if to_reference.size == 0:
        return StructureScore(key, d, math.nan, math.nan, NO_SURFACE)
    hd95 = max(float(np.percentile(to_reference, 95)), float(np.percentile(to_prediction, 95)))
    asd = float(np.concatenate([to_reference, to_prediction]).mean())
    return StructureScore(key, d, hd95, asd)


def score_label_maps(
    prediction: sitk.Image | np.ndarray,
    reference: sitk.Image | np.ndarray,
    spacing_zyx: Sequence[float] | None = None,
    structures: Mapping[str, Sequence[int]] | None = None,
    schema=None,
    fov_border_is_surface: bool = False,
) -> dict[str, StructureScore]:
    """Scores per structure of two label maps in schema values.

    Give SimpleITK images (spacing read from them, geometry checked) or numpy arrays plus
    ``spacing_zyx``. ``structures`` maps a name to the label values that make it up; by default every
    schema structure by its key plus every schema group (e.g. "tibial_cartilage" = 6, 7 and 20). Where
    the reference uses a group value (unsplit tibial cartilage), the group's members are reported as
    ``unsplit_in_reference`` and only the group is scored.
    """
    prediction_array, reference_array, spacing = _arrays_and_spacing(prediction, reference, spacing_zyx)
    unsplit_members: set[int] = set()
    if structures is None:
        structures, unsplit_members = _schema_structures(schema, reference_array)
    scores = {}
    for key, values in structures.items():
        values = list(values)
        if set(values) & unsplit_members and len(values) == 1:
            scores[key] = StructureScore(key, math.nan, math.nan, math.nan, UNSPLIT_IN_REFERENCE)
            continue
        scores[key] = score_masks(
            np.isin(prediction_array, values), np.isin(reference_array, values), spacing, key, fov_border_is_surface
        )
    return scores


def structure_dice(prediction: np.ndarray, reference: np.ndarray, schema=None) -> dict[str, float]:
    """Dice only (cheap enough for every validation round) per structure present in the reference.
    Where the reference labels a group (unsplit tibial cartilage), the group is scored instead of its
    members; otherwise groups are left out so no structure counts twice in a mean."""
    structures, unsplit = _schema_structures(schema, reference)
    present = set(np.unique(reference).tolist())
    scores = {}
    for key, values in structures.items():
        is_group = len(values) > 1
        if (is_group and not set(values) & unsplit) or (not is_group and values[0] in unsplit):
            continue
        if present & set(values):
            scores[key] = dice(np.isin(prediction, values), np.isin(reference, values))
    return scores


def _schema_structures(schema, reference: np.ndarray) -> tuple[dict[str, list[int]], set[int]]:
    if schema is None:
        from KneeAILib.schema import KneeSchema  # server side: the project's schema file

        schema = KneeSchema.load()
    structures = {s.key: [s.value] for s in schema.structures}
    present = set(np.unique(reference).tolist())
    unsplit: set[int] = set()
    for group, members in schema.group_members().items():
        key = next(g.key for g in schema.groups if g.value == group)
        structures[key] = list(members) + [group]
        if group in present:
            unsplit.update(members)
    return structures, unsplit


def _arrays_and_spacing(prediction, reference, spacing_zyx):
    if isinstance(prediction, sitk.Image) and isinstance(reference, sitk.Image):
        _check_same_grid(prediction, reference)
        spacing = tuple(reversed(reference.GetSpacing()))
        return sitk.GetArrayViewFromImage(prediction), sitk.GetArrayViewFromImage(reference), spacing
    if isinstance(prediction, sitk.Image) or isinstance(reference, sitk.Image):
        raise TypeError("Give two SimpleITK images or two numpy arrays, not one of each")
    if spacing_zyx is None:
        raise ValueError("spacing_zyx is required with numpy arrays")
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"Label maps differ in shape: {prediction.shape} vs {reference.shape}")
    return prediction, reference, tuple(float(s) for s in spacing_zyx)


def _check_same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> None:
    if a.GetSize() != b.GetSize():
        raise ValueError(f"Label maps differ in size: {a.GetSize()} vs {b.GetSize()}")
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        if not np.allclose(getattr(a, name)(), getattr(b, name)(), atol=tolerance):
            raise ValueError(f"Label maps differ in {name[3:].lower()}: {getattr(a, name)()} vs {getattr(b, name)()}")


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    index = np.nonzero(mask)
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + 1 + margin, n)) for i, n in zip(index, mask.shape))


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value=1: outside the array counts as "inside", so the field-of-view edge is no surface.
    return mask & ~ndimage.binary_erosion(mask, _SIX_NEIGHBOURS, border_value=1)


def _distance_to(surface: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Distance in mm from every voxel to the nearest ``surface`` voxel (ITK Maurer, multi-threaded)."""
    image = sitk.GetImageFromArray(surface.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.clip(sitk.GetArrayFromImage(distance), 0.0, None)  # <= 0 on the surface itself
