"""Defects found in review of the synthesis and evaluation code, each pinned by a test that failed before
its fix: echo agreement on grids equal within header rounding, a group's volume, the Dice of a mask
without surface in the summary, a clear error for a 2D label map, label maps checked before any knee is
segmented, and a JSON that says when its figures are not a test result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from KneeAILib.schema import KneeSchema
from lib.evaluation.agreement import prediction_agreement
from lib.evaluation.metrics import NO_SURFACE, score_masks
from lib.evaluation.summary import markdown_table, summarise
from lib.model_store import ModelStore
from lib.networks import KneeModelConfig, KneeNetworks
from lib.synthesis import make_knee_phantom, synthesize_image

SCHEMA = KneeSchema.load()


@pytest.fixture(scope="module")
def small_knee() -> sitk.Image:
    return make_knee_phantom(1, size=(40, 40, 40), spacing=(2.0, 2.0, 2.0))


def test_agreement_accepts_two_grids_that_differ_only_by_header_rounding(small_knee):
    """The echoes' predictions were called one grid by same_geometry (no resampling) and then refused by
    score_label_maps' stricter check: 'Label maps differ in origin', after both segmentations."""
    second = sitk.Image(small_knee)
    origin = np.asarray(small_knee.GetOrigin())
    second.SetOrigin(tuple(origin + (5e-4, 0.0, -5e-4)))
    agreement = prediction_agreement(small_knee, second, SCHEMA)
    assert agreement["femur"]["dice"] == 1.0 and agreement["femur"]["hd95_mm"] == 0.0


def test_agreement_volume_of_a_group_counts_voxels_labelled_with_the_group_value(small_knee):
    """A map with unsplit tibial cartilage (20) agreed with itself: Dice 1.0 next to 0.0 mL volumes."""
    array = sitk.GetArrayFromImage(small_knee)
    array[np.isin(array, (6, 7))] = 20
    grouped = sitk.GetImageFromArray(array)
    grouped.CopyInformation(small_knee)
    row = prediction_agreement(grouped, grouped, SCHEMA)["tibial_cartilage"]
    expected_ml = round(int((array == 20).sum()) * 8.0 / 1000.0, 3)  # 2 mm voxels: 8 mm^3
    assert expected_ml > 0
    assert row["dice"] == 1.0
    assert row["volume_first_ml"] == row["volume_second_ml"] == expected_ml


def test_summary_counts_the_dice_of_a_prediction_that_fills_the_field_of_view():
    """Femur predicted everywhere: Dice 0.12 was measured, but the knee was left out of the femur row
    (n = 0, 'not labelled in the reference'), flattering the model."""
    reference = np.zeros((20, 20, 20), bool)
    reference[5:10, 5:15, 5:15] = True
    score = score_masks(np.ones_like(reference), reference, (1.0, 1.0, 1.0), key="femur")
    assert score.status == NO_SURFACE
    row = summarise([{"femur": score}], ["femur"])["femur"]
    assert row["n"] == 1 and row["dice_mean"] == pytest.approx(score.dice, abs=1e-4) and row["dice_mean"] < 0.2
    assert row["hd95_mm_mean"] is None  # no surface: no distance, and none invented
    assert "not labelled" not in markdown_table({"femur": row}, {"femur": "Femur"})


def test_synthesis_refuses_a_2d_label_map_with_a_clear_error():
    """A 2D map failed deep inside the background fields with 'IndexError: list index out of range'."""
    flat = sitk.GetImageFromArray(np.ones((20, 20), np.uint8))
    with pytest.raises(ValueError, match="3D label map"):
        synthesize_image(flat, 0)


# -- evaluate.py with a real (untrained, tiny) model version ------------------------------------------

TINY = KneeModelConfig(coarse_spacing=(4.0, 4.0, 4.0), fine_spacing=(2.0, 2.0, 2.0), coarse_filters=8,
                       fine_filters=8, coarse_patch=(32, 32, 32), fine_patch=(48, 48, 48), max_roi_mm=100.0)


def _model(folder, trained_on: list[str]) -> str:
    store = ModelStore(folder)
    version = store.new_version()
    store.save(version, KneeNetworks.create(TINY).state(), {"train_cases": trained_on, "validation_cases": []})
    return version


def test_evaluate_reads_every_label_map_before_segmenting_any_knee(small_knee, tmp_path):
    """An empty map sorted after a good one stopped the run only after the good knee was segmented (hours
    for 20 knees on a CPU), with no evaluation.json written."""
    import evaluate

    labels = tmp_path / "labels"
    labels.mkdir()
    sitk.WriteImage(small_knee, str(labels / "a_good.nii.gz"))
    sitk.WriteImage(sitk.Image(40, 40, 40, sitk.sitkUInt8), str(labels / "z_empty.nii.gz"))
    version = _model(tmp_path / "model", [])
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="knee z_empty: .*no labelled structure"):
        evaluate.main(["--model-dir", str(tmp_path / "model"), "--version", version, "--labels", str(labels),
                       "--convention", "schema", "--out", str(out), "--device", "cpu"])
    assert not (out / "overlays").exists()  # refused before the first knee was segmented


def test_evaluate_json_says_when_its_figures_are_not_a_test_result(small_knee, tmp_path):
    """With --allow-seen-knees, evaluation.json's held_out summary and mean Dice carried no sign that the
    model trained on those knees (only the Markdown and each case said so)."""
    import evaluate

    labels = tmp_path / "labels"
    labels.mkdir()
    sitk.WriteImage(small_knee, str(labels / "knee_a.nii.gz"))
    version = _model(tmp_path / "model", ["knee_a__v00.nii.gz"])
    out = tmp_path / "out"
    evaluate.main(["--model-dir", str(tmp_path / "model"), "--version", version, "--labels", str(labels),
                   "--convention", "schema", "--out", str(out), "--device", "cpu", "--allow-seen-knees"])
    held_out = json.loads((out / "evaluation.json").read_text())["held_out"]
    assert held_out["test_result"] is False
    assert held_out["seen_in_training"] == ["knee_a"]
