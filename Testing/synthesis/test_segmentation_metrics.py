"""Dice / HD95 / ASD on cases with known answers, anisotropic spacing, empty and grouped structures."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
from lib.evaluation.metrics import (
    EMPTY_BOTH, EMPTY_PREDICTION, EMPTY_REFERENCE, NO_SURFACE, OK, UNSPLIT_IN_REFERENCE,
    score_label_maps, score_masks, surface_distances,
)
from lib.synthesis.phantom import make_knee_phantom

SPACING_ZYX = (2.0, 0.8, 0.5)  # deliberately anisotropic


def plate(shape, axis, start, thickness):
    """A slab across the whole field of view, ``thickness`` voxels thick along ``axis``."""
    mask = np.zeros(shape, bool)
    index = [slice(None)] * 3
    index[axis] = slice(start, start + thickness)
    mask[tuple(index)] = True
    return mask


def test_identical_maps_score_perfectly():
    labels = make_knee_phantom(0, spacing=(0.8, 0.8, 0.8), size=(80, 80, 80))
    scores = score_label_maps(labels, labels)
    for key in ("femur", "tibia", "femoral_cartilage", "medial_meniscus", "tibial_cartilage"):
        assert scores[key].status == OK
        assert (scores[key].dice, scores[key].hd95_mm, scores[key].asd_mm) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [1, 3])
def test_shift_by_k_voxels_gives_k_times_spacing(axis, shift):
    shape, thickness = (30, 40, 50), 10
    reference = plate(shape, axis, 8, thickness)
    prediction = plate(shape, axis, 8 + shift, thickness)
    score = score_masks(prediction, reference, SPACING_ZYX)
    # Both faces of the plate move by k voxels; the field-of-view edge is not a surface.
    assert score.hd95_mm == pytest.approx(shift * SPACING_ZYX[axis])
    assert score.asd_mm == pytest.approx(shift * SPACING_ZYX[axis])
    assert score.dice == pytest.approx((thickness - shift) / thickness)


def test_images_use_their_own_spacing_in_numpy_order():
    reference = plate((30, 40, 50), 0, 8, 10)
    images = []
    for mask in (plate((30, 40, 50), 0, 10, 10), reference):
        image = sitk.GetImageFromArray(mask.astype(np.uint8) * 2)  # value 2 = tibia
        image.SetSpacing((0.5, 0.8, 2.0))  # (x, y, z): numpy axis 0 is z at 2 mm
        images.append(image)
    score = score_label_maps(*images, structures={"tibia": [2]})["tibia"]
    assert score.hd95_mm == pytest.approx(4.0) and score.asd_mm == pytest.approx(4.0)


def test_hd95_ignores_a_rare_outlier_that_asd_counts():
    shape = (30, 40, 50)
    reference = plate(shape, 0, 5, 6)
    prediction = plate(shape, 0, 6, 6)
    prediction[25, 20, 25] = True  # one stray voxel 15 slices (30 mm) above the reference's top face (z = 10)
    to_reference, to_prediction = surface_distances(prediction, reference, SPACING_ZYX)
    assert sorted(set(np.round(to_reference, 6))) == [2.0, 30.0]
    score = score_masks(prediction, reference, SPACING_ZYX)
    assert score.hd95_mm == pytest.approx(2.0)
    n_faces = 2 * 40 * 50
    assert score.asd_mm == pytest.approx((2 * n_faces * 2.0 + 30.0) / (2 * n_faces + 1))


def test_sphere_distances_match_geometry():
    zyx = np.indices((41, 41, 41)).astype(float)
    radius = lambda c: np.sqrt(((zyx - np.array(c)[:, None, None, None]) ** 2).sum(axis=0))  # noqa: E731
    reference, prediction = radius((20, 20, 20)) <= 10, radius((20, 20, 20)) <= 13
    score = score_masks(prediction, reference, (1.0, 1.0, 1.0))
    assert score.hd95_mm == pytest.approx(3.0, abs=0.5)  # concentric: surfaces 3 mm apart
    assert score.asd_mm == pytest.approx(3.0, abs=0.5)
    assert score.dice == pytest.approx(2 * 10**3 / (10**3 + 13**3), abs=0.03)


def test_empty_structures_are_flagged_not_raised():
    empty, full = np.zeros((10, 10, 10), bool), plate((10, 10, 10), 0, 2, 4)
    cases = {
        EMPTY_BOTH: score_masks(empty, empty, (1, 1, 1)),
        EMPTY_PREDICTION: score_masks(empty, full, (1, 1, 1)),
        EMPTY_REFERENCE: score_masks(full, empty, (1, 1, 1)),
    }
    for status, score in cases.items():
        assert score.status == status and not score.ok
        assert math.isnan(score.hd95_mm) and math.isnan(score.asd_mm)
    assert math.isnan(cases[EMPTY_BOTH].dice)
    assert cases[EMPTY_PREDICTION].dice == 0.0 and cases[EMPTY_REFERENCE].dice == 0.0
    assert cases[EMPTY_BOTH].to_dict()["hd95_mm"] is None
    everything = np.ones((10, 10, 10), bool)
    assert score_masks(everything, everything, (1, 1, 1)).status == NO_SURFACE
    assert score_masks(everything, everything, (1, 1, 1), fov_border_is_surface=True).status == OK


def test_unsplit_tibial_cartilage_is_scored_as_a_group():
    labels = sitk.GetArrayFromImage(make_knee_phantom(1, size=(80, 80, 80)))
    reference = np.where(np.isin(labels, (6, 7)), 20, labels)
    scores = score_label_maps(labels, reference, spacing_zyx=(0.8, 0.8, 0.8))
    assert scores["medial_tibial_cartilage"].status == UNSPLIT_IN_REFERENCE
    assert scores["lateral_tibial_cartilage"].status == UNSPLIT_IN_REFERENCE
    assert scores["tibial_cartilage"].dice == 1.0 and scores["tibial_cartilage"].asd_mm == 0.0
    assert scores["femur"].dice == 1.0


def test_mismatched_grids_are_refused():
    a = sitk.Image(10, 10, 10, sitk.sitkUInt8)
    b = sitk.Image(10, 10, 10, sitk.sitkUInt8)
    b.SetSpacing((1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="spacing"):
        score_label_maps(a, b)
    with pytest.raises(ValueError, match="shape"):
        score_label_maps(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), spacing_zyx=(1, 1, 1))
