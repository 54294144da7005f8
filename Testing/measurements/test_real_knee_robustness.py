"""Robustness on a real OAI-ZIB label map: the same knee on another grid, rotated, or mirrored into a
left knee must give the same regional values (medial and lateral in their right places)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from label_transforms import mirror_left_right, resample_labels_linear, rotate_grid

from KneeAILib.measurements import LabelMap, measure_knee

MIN_AREA_MM2 = 50.0  # regions smaller than this (e.g. an empty anterior condyle region) are not compared


@pytest.fixture(scope="module")
def knee(oai_zib_knee):
    image = sitk.ReadImage(str(oai_zib_knee))
    return image, measure_knee(LabelMap.from_image(image, "oai_zib"))


def _relative_changes(base, other):
    out = {}
    for r in base.rows:
        if r["cab_mm2"] >= MIN_AREA_MM2:
            o = other.row(r["structure"], r["region"])
            out[f"{r['structure']}/{r['region']}"] = o["mean_thickness_mm"] / r["mean_thickness_mm"] - 1
    return out


def test_real_knee_values_are_plausible(knee):
    _, m = knee
    assert m.frame.side == "right"
    for r in m.rows:
        if r["region"] == "all":
            assert 1.0 < r["mean_thickness_mm"] < 3.0, r["structure"]  # adult knee cartilage, mm
            assert r["volume_mm3"] > 500


def test_rotated_grid_changes_regional_means_by_at_most_3_percent(knee):
    image, base = knee
    rotated = measure_knee(LabelMap.from_image(rotate_grid(image, (15, -10, 25)), "oai_zib"))
    changes = _relative_changes(base, rotated)
    assert len(changes) >= 20
    worst = max(changes, key=lambda k: abs(changes[k]))
    assert abs(changes[worst]) <= 0.03, f"{worst}: {100 * changes[worst]:+.2f} %"


def test_finer_voxels_change_regional_means_by_at_most_3_percent(knee):
    # label-aware re-voxelisation (linear per label, then argmax): on the 5 benchmark knees it keeps
    # every subregion within 2.4 % (nearest neighbour: up to 3.8 %, its rims depend on voxel phase).
    # Coarser voxels are not tested: label-aware still gives 3.2 % on one of the 5 knees (BENCHMARKS.md).
    image, base = knee
    resampled = measure_knee(LabelMap.from_image(resample_labels_linear(image, (0.6, 0.3, 0.3)), "oai_zib"))
    changes = _relative_changes(base, resampled)
    worst = max(changes, key=lambda k: abs(changes[k]))
    assert abs(changes[worst]) <= 0.03, f"{worst}: {100 * changes[worst]:+.2f} %"


def test_mirrored_right_knee_is_a_left_knee_with_the_same_regional_values(knee):
    image, base = knee
    mirrored = measure_knee(LabelMap.from_image(mirror_left_right(image), "oai_zib"))
    assert mirrored.frame.side == "left"
    changes = _relative_changes(base, mirrored)
    worst = max(changes, key=lambda k: abs(changes[k]))
    assert abs(changes[worst]) <= 0.01, f"{worst}: {100 * changes[worst]:+.2f} %"
    # medial stays medial: the (thinner) medial tibial plate keeps its value, not the lateral one's
    assert mirrored.row("medial_tibial_cartilage")["mean_thickness_mm"] == pytest.approx(
        base.row("medial_tibial_cartilage")["mean_thickness_mm"], rel=0.01)
