"""Inputs that cannot be measured get a typed error whose message says what is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
from phantoms import KneePhantom

from KneeAILib.measurements import (CartilageNotOnBoneError, LabelMap, MissingBoneError, NoCartilageError,
                                    UnknownLabelError, measure_knee)
from KneeAILib.measurements.cli import main


def _image(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(like)
    return img


def test_label_map_without_cartilage():
    labels = LabelMap.from_image(KneePhantom(with_cartilage=False).image())
    with pytest.raises(NoCartilageError, match="no cartilage"):
        measure_knee(labels)


def test_cartilage_not_touching_its_bone():
    labels = LabelMap.from_image(KneePhantom(tibial_gap_mm=2.0).image())
    with pytest.raises(CartilageNotOnBoneError, match="does not touch its bone"):
        measure_knee(labels)


def test_unknown_label_value_names_the_value_and_the_conventions():
    img = KneePhantom().image()
    array = sitk.GetArrayFromImage(img)
    array[0, 0, :3] = 42
    with pytest.raises(UnknownLabelError, match=r"\[42\].*oai_zib"):
        LabelMap.from_image(_image(array, img))


def test_wrong_convention_is_reported_not_silently_mapped():
    # schema value 20 (unsplit tibial cartilage) has no meaning in OAI-ZIB's convention
    with pytest.raises(UnknownLabelError, match="20"):
        LabelMap.from_image(KneePhantom().image(), "oai_zib")


def test_missing_bone_for_the_frame():
    img = KneePhantom().image()
    array = sitk.GetArrayFromImage(img)
    array[array == 1] = 0  # no femur
    with pytest.raises(MissingBoneError, match="femur"):
        measure_knee(LabelMap.from_image(_image(array, img)))


def test_cli_reports_bad_input_with_exit_status_2(tmp_path, capsys):
    path = tmp_path / "no_cartilage.nii.gz"
    sitk.WriteImage(KneePhantom(with_cartilage=False).image(), str(path))
    assert main(["measure", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "no cartilage" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "missing.nii.gz")]) == 2


def test_cli_refuses_a_file_that_is_no_image_an_out_that_is_a_file_and_an_mri_with_a_short_message(tmp_path, capsys):
    """Before: a traceback (exit 1) for the unreadable file; the file as --out failed after the whole
    measurement; an MRI given as a label map listed all its thousands of values in one line."""
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all")
    assert main(["measure", str(junk), "--out", str(tmp_path / "out")]) == 2
    assert "junk.nii.gz: not a readable label map" in capsys.readouterr().err
    knee = tmp_path / "knee.nii.gz"
    sitk.WriteImage(KneePhantom().image(), str(knee))
    report = tmp_path / "report"
    report.write_text("mine")
    assert main(["measure", str(knee), "--out", str(report)]) == 2
    assert "is a file" in capsys.readouterr().err and report.read_text() == "mine"
    mri = tmp_path / "mri.nii.gz"
    img = KneePhantom().image()
    sitk.WriteImage(_image(np.arange(sitk.GetArrayViewFromImage(img).size, dtype=np.int32).reshape(
        sitk.GetArrayViewFromImage(img).shape) % 3000, img), str(mri))
    assert main(["measure", str(mri), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert re.search(r"\.\.\. \(\d{4} values\)", error) and len(error) < 600, error
