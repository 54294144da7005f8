"""The procedural knee phantom: all structures, plausible anatomy, sides, determinism, speed."""

import time

import numpy as np
import pytest
import SimpleITK as sitk
from lib.synthesis.phantom import ALL_STRUCTURES, RAS_DIRECTION_IN_LPS, make_knee_phantom
from scipy import ndimage

FEMUR, TIBIA, PATELLA, FIBULA = 1, 2, 3, 4
FEMORAL_CART, MEDIAL_TIBIAL_CART, LATERAL_TIBIAL_CART, PATELLAR_CART = 5, 6, 7, 8
MEDIAL_MENISCUS, LATERAL_MENISCUS = 9, 10
CARTILAGE_ON_BONE = {FEMORAL_CART: FEMUR, MEDIAL_TIBIAL_CART: TIBIA, LATERAL_TIBIAL_CART: TIBIA, PATELLAR_CART: PATELLA}


@pytest.fixture(scope="module", params=[(0, "right"), (1, "left"), (7, "right")])
def phantom(request):
    seed, side = request.param
    return side, make_knee_phantom(seed, side)


def _centroid_lps(image: sitk.Image, value: int) -> np.ndarray:
    kji = np.argwhere(sitk.GetArrayViewFromImage(image) == value).mean(axis=0)
    return np.array(image.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist()))


def test_geometry_is_ras_centred_on_isocentre(phantom):
    _, image = phantom
    assert image.GetPixelID() == sitk.sitkUInt8
    assert image.GetSize() == (112, 112, 112)
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 0.8))
    assert image.GetDirection() == RAS_DIRECTION_IN_LPS
    centre = image.TransformContinuousIndexToPhysicalPoint([55.5, 55.5, 55.5])
    assert np.allclose(centre, 0.0, atol=1e-6)


def test_all_ten_structures_present(phantom):
    _, image = phantom
    counts = np.bincount(sitk.GetArrayViewFromImage(image).ravel(), minlength=11)
    assert len(counts) == 11  # no value above 10
    assert all(counts[v] > 500 for v in ALL_STRUCTURES), counts


def test_each_cartilage_touches_its_bone_everywhere(phantom):
    _, image = phantom
    labels = sitk.GetArrayFromImage(image)
    for cartilage, bone in CARTILAGE_ON_BONE.items():
        near_bone = ndimage.binary_dilation(labels == bone)
        components, n = ndimage.label(labels == cartilage)
        touching = np.unique(components[near_bone & (components > 0)])
        sizes = ndimage.sum(np.ones_like(components), components, index=np.arange(1, n + 1))
        # Every sizeable piece of cartilage lies on its bone (specks of a few voxels are discretisation).
        floating = [i + 1 for i, size in enumerate(sizes) if size > 20 and i + 1 not in touching]
        assert not floating, f"cartilage {cartilage}: pieces {floating} do not touch bone {bone}"


def test_femoral_cartilage_thickness_is_two_to_three_mm(phantom):
    _, image = phantom
    labels = sitk.GetArrayFromImage(image)
    distance_from_femur = ndimage.distance_transform_edt(labels != FEMUR, sampling=(0.8, 0.8, 0.8))
    depth = distance_from_femur[labels == FEMORAL_CART]
    assert depth.max() <= 3.0 + 1e-6
    assert np.percentile(depth, 95) >= 1.6


def test_anatomical_layout(phantom):
    side, image = phantom
    c = {v: _centroid_lps(image, v) for v in ALL_STRUCTURES}
    # LPS: x grows to the patient's left, y posterior, z superior.
    assert c[FEMUR][2] > c[TIBIA][2] + 15  # femur above tibia
    assert c[PATELLA][1] < c[FEMUR][1] - 15  # patella in front of femur
    assert c[PATELLAR_CART][1] > c[PATELLA][1]  # patellar cartilage behind the patella
    assert c[FIBULA][1] > c[TIBIA][1]  # fibula posterior
    assert c[FIBULA][2] < c[TIBIA][2]  # and below the plateau
    for meniscus in (MEDIAL_MENISCUS, LATERAL_MENISCUS):  # menisci in the joint line
        assert c[TIBIA][2] < c[meniscus][2] < c[FEMUR][2]
    lateral_is_left = side == "left"  # in LPS, lateral of a left knee has larger x
    for medial, lateral in ((MEDIAL_TIBIAL_CART, LATERAL_TIBIAL_CART), (MEDIAL_MENISCUS, LATERAL_MENISCUS), (TIBIA, FIBULA)):
        assert (c[lateral][0] > c[medial][0]) == lateral_is_left, (side, medial, lateral)


def test_left_and_right_put_the_fibula_on_opposite_sides():
    right, left = make_knee_phantom(3, "right"), make_knee_phantom(3, "left")
    right_x = _centroid_lps(right, FIBULA)[0] - _centroid_lps(right, TIBIA)[0]
    left_x = _centroid_lps(left, FIBULA)[0] - _centroid_lps(left, TIBIA)[0]
    assert right_x < -10 and left_x > 10  # LPS x: patient's right is negative


def test_same_seed_same_phantom_other_seed_other_shape():
    a = sitk.GetArrayFromImage(make_knee_phantom(11))
    np.testing.assert_array_equal(a, sitk.GetArrayFromImage(make_knee_phantom(11)))
    b = sitk.GetArrayFromImage(make_knee_phantom(12))
    assert (a != b).mean() > 0.01


def test_custom_grid_and_side_validation():
    image = make_knee_phantom(0, spacing=(0.5, 0.6, 1.0), size=(160, 150, 90))
    assert image.GetSize() == (160, 150, 90) and image.GetSpacing() == pytest.approx((0.5, 0.6, 1.0))
    assert set(np.unique(sitk.GetArrayViewFromImage(image))) == set(range(11))
    with pytest.raises(ValueError, match="side"):
        make_knee_phantom(0, side="middle")


def test_phantom_is_fast():
    start = time.perf_counter()
    make_knee_phantom(5)
    assert time.perf_counter() - start < 2.0
