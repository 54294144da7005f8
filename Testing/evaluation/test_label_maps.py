"""A user's folder of label maps: knee ids, conventions (schema values included), the working grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from kneeai_testing import TINY_MODEL_CONF

from KneeAILib.schema import SchemaError
from lib.evaluation.label_maps import find_label_maps, read_knee_labels, resample_labels
from lib.evaluation.training_datastore import image_id, knee_of
from lib.datastore import SAFE_ID
from lib.synthesis import make_knee_phantom


def test_a_folder_of_schema_valued_maps_is_read_as_is(tmp_path):
    phantom = make_knee_phantom(1, size=(48, 48, 48), spacing=(2.0, 2.0, 2.0))
    sitk.WriteImage(phantom, str(tmp_path / "Knee of patient #7.nii.gz"))
    sitk.WriteImage(phantom, str(tmp_path / "second.nrrd"))
    (tmp_path / "notes.txt").write_text("not a label map")
    found = find_label_maps(tmp_path)
    assert list(found) == ["Knee_of_patient__7", "second"]
    for knee, path in found.items():
        assert SAFE_ID.match(image_id(knee, 3)) and knee_of(image_id(knee, 3)) == knee  # a valid datastore id
        labels = read_knee_labels(path, "schema")
        assert np.array_equal(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(phantom))


def test_values_outside_the_schema_or_convention_are_refused(tmp_path):
    array = np.zeros((8, 8, 8), np.uint8)
    array[2:4, 2:4, 2:4] = 42
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "odd.nii.gz"))
    with pytest.raises(SchemaError, match="42"):
        read_knee_labels(tmp_path / "odd.nii.gz", "schema")
    with pytest.raises(SchemaError, match="42"):
        read_knee_labels(tmp_path / "odd.nii.gz", "oai_zib")
    with pytest.raises(SchemaError, match="Unknown label convention"):
        read_knee_labels(tmp_path / "odd.nii.gz", "no_such_convention")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label maps"):
        find_label_maps(tmp_path)


def test_working_grid_keeps_orientation_and_field_of_view():
    labels = make_knee_phantom(2, size=(60, 50, 40), spacing=(0.5, 0.6, 1.0))
    labels.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))  # an oblique-free but permuted frame
    out = resample_labels(labels, 1.5)
    assert out.GetSpacing() == (1.5, 1.5, 1.5) and out.GetDirection() == labels.GetDirection()
    assert out.GetSize() == (20, 20, 27)  # ceil(30/1.5), ceil(30/1.5), ceil(40/1.5)
    # The first voxel's outer edge lies on the original first voxel's outer edge.
    edge_in = labels.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5))
    edge_out = out.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5))
    assert np.allclose(edge_in, edge_out)
    # Structure volumes survive nearest-neighbour resampling to within a few percent for the bones.
    for value in (1, 2):
        before = (sitk.GetArrayViewFromImage(labels) == value).sum() * np.prod(labels.GetSpacing())
        after = (sitk.GetArrayViewFromImage(out) == value).sum() * 1.5 ** 3
        assert before > 1000 and after == pytest.approx(before, rel=0.05)
    assert resample_labels(labels, 0) is labels


def test_synthesised_images_are_finite_even_when_the_slice_offset_exceeds_two_slices():
    from lib.synthesis import draw_parameters, synthesize_image

    # Seed 67 (dess) draws 1.38 mm slices with a 3.62 mm offset: the first slice centre used to fall
    # past the first voxels, leaving ~0.85 mm of voxels with no slice at all (NaN).
    drawn = draw_parameters(67, "dess")
    assert drawn.slice_offset_mm > 2 * drawn.slice_thickness_mm + 0.8
    labels = make_knee_phantom(0, size=(64, 64, 64), spacing=(0.8, 0.8, 0.8))
    image = sitk.GetArrayFromImage(synthesize_image(labels, 67, "dess"))
    assert np.isfinite(image).all()
    # The same slice grid as an offset wrapped into one thickness: identical images.
    wrapped = drawn.slice_offset_mm % drawn.slice_thickness_mm
    same = sitk.GetArrayFromImage(synthesize_image(labels, 67, "dess", slice_offset_mm=wrapped))
    assert np.allclose(image, same, atol=1e-5)


def test_an_mri_or_an_empty_map_is_refused_whatever_the_convention(tmp_path):
    """A float MRI in a folder of OAI-ZIB maps was truncated to whole values and trained on as a knee of
    background; an all-zero map became a validation knee and a version was promoted on nothing."""
    mri = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    sitk.WriteImage(mri, str(tmp_path / "mri.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.uint8)), str(tmp_path / "empty.nii.gz"))
    for convention in ("oai_zib", "schema"):
        with pytest.raises(SchemaError, match="mri.nii.gz: .*not whole numbers"):
            read_knee_labels(tmp_path / "mri.nii.gz", convention)
        with pytest.raises(ValueError, match="empty.nii.gz: no labelled structure"):
            read_knee_labels(tmp_path / "empty.nii.gz", convention)


def _folder_of_knees(folder, count: int = 3):
    folder.mkdir()
    for k in range(count):
        sitk.WriteImage(make_knee_phantom(k, size=(32, 32, 32), spacing=(3.0, 3.0, 3.0)), str(folder / f"k{k}.nii.gz"))
    return folder


@pytest.mark.parametrize("problem, message", [
    ("value 12", "knee k1: k1.nii.gz: .*\\[12\\]"),
    ("2D map", "knee k1: k1.nii.gz: a knee label map is a 3D image"),
    ("damaged split", "--split/--fold: .*cv_split.json cannot be read"),
    ("fold 7", "--split/--fold: fold 7 does not exist"),
])
def test_the_training_command_refuses_bad_maps_and_splits_before_committing_its_work_folder(tmp_path, problem,
                                                                                             message):
    """Before: a bad map was found during synthesis, after the work folder's plan was recorded, so the
    corrected command was refused ("prepared with other data settings"); a damaged split or a fold out
    of range ended in a traceback."""
    import train_from_label_maps

    labels, work = _folder_of_knees(tmp_path / "labels"), tmp_path / "work"
    work.mkdir()
    if problem == "value 12":
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / "k1.nii.gz")))
        array[0, 0, 0] = 12
        sitk.WriteImage(sitk.GetImageFromArray(array), str(labels / "k1.nii.gz"))
    elif problem == "2D map":
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.uint8)), str(labels / "k1.nii.gz"))
    elif problem == "damaged split":
        (work / "cv_split.json").write_text('{"format": ')
    split = {"damaged split": ["--folds", "2", "--fold", "0"], "fold 7": ["--folds", "2", "--fold", "7"]}
    tiny = [f"--conf={k}={v}" for k, v in TINY_MODEL_CONF.items()]  # should a check not fire: a short run
    with pytest.raises(SystemExit, match=message):
        train_from_label_maps.main([str(labels), "--convention", "schema", "--out", str(work), "--epochs", "1",
                                    "--iterations-per-epoch", "1", "--device", "cpu", *split.get(problem, []), *tiny])
    assert not (work / "run_plan.json").exists() and not (work / "studies").exists()


def test_the_training_command_refuses_an_empty_folder_and_an_out_that_is_a_file_without_writing(tmp_path):
    import train_from_label_maps

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no label maps"):
        train_from_label_maps.main([str(tmp_path / "empty"), "--convention", "schema", "--out", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
    (tmp_path / "file").write_text("mine")
    with pytest.raises(SystemExit, match="is a file"):
        train_from_label_maps.main([str(_folder_of_knees(tmp_path / "labels")), "--convention", "schema",
                                    "--out", str(tmp_path / "file")])
    assert (tmp_path / "file").read_text() == "mine"
