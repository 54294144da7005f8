"""The sample dataset: MONAI Label LocalDatastore layout, paired geometry, idempotent, atomic."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from lib.synthesis.sample_dataset import case_name, generate_sample_dataset

APP_DIR = Path(__file__).resolve().parents[2] / "MonaiLabelApp"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    paths = generate_sample_dataset(out, n_cases=3, n_labelled=2, seed=0)
    return out, paths


def _geometry(image: sitk.Image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def test_layout_is_images_plus_final_labels(dataset):
    out, paths = dataset
    assert paths == [str(out / case_name(i)) for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == sorted([case_name(i) for i in range(3)] + ["labels"])
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["final"]
    assert sorted(p.name for p in (out / "labels" / "final").iterdir()) == [case_name(0), case_name(1)]


def test_labels_pair_with_images(dataset):
    out, paths = dataset
    for index in range(2):
        image = sitk.ReadImage(paths[index])
        labels = sitk.ReadImage(str(out / "labels" / "final" / case_name(index)))
        assert _geometry(image) == _geometry(labels)
        assert labels.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayViewFromImage(labels))) == set(range(11))
        pixels = sitk.GetArrayViewFromImage(image)
        assert image.GetPixelID() == sitk.sitkInt16
        # MRI-like: the bright structures are well above the noise floor of the darkest ones.
        assert np.percentile(pixels, 99) > 5 * max(np.percentile(pixels, 1), 1)


def test_contrasts_differ_between_cases(dataset):
    out, paths = dataset
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels" / "final" / case_name(0))))
    images = [sitk.GetArrayFromImage(sitk.ReadImage(p)).astype(float) for p in paths[:2]]
    labels1 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels" / "final" / case_name(1))))
    # Case 0 is DESS-like (cartilage brighter than bone marrow), case 1 PD fat-suppressed: compare
    # cartilage-to-femur ratios rather than absolute values.
    ratio0 = images[0][labels == 5].mean() / images[0][labels == 1].mean()
    ratio1 = images[1][labels1 == 5].mean() / images[1][labels1 == 1].mean()
    assert ratio0 > 1.5 and ratio1 > 1.5
    assert abs(ratio0 - ratio1) > 0.05


def test_rerun_keeps_existing_files_and_restores_missing_ones(dataset):
    out, paths = dataset
    label_path = out / "labels" / "final" / case_name(1)
    before = {p: Path(p).stat().st_mtime_ns for p in paths}
    original_label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    label_path.unlink()

    assert generate_sample_dataset(out, n_cases=3, n_labelled=2, seed=0) == paths
    assert {p: Path(p).stat().st_mtime_ns for p in paths} == before
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))), original_label)
    assert not list(out.glob(".partial*"))  # no temporary folder left behind


def test_command_line_entry(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lib.synthesis.sample_dataset", str(tmp_path), "--cases", "1", "--labelled", "1"],
        cwd=APP_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / case_name(0)).is_file()
    assert (tmp_path / "labels" / "final" / case_name(0)).is_file()


def test_rejects_more_labels_than_cases(tmp_path):
    with pytest.raises(ValueError, match="n_labelled"):
        generate_sample_dataset(tmp_path, n_cases=1, n_labelled=2)
