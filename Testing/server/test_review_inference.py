"""Inference inputs the knee_segmentation task must refuse or read right: non-finite or constant
intensities, the echo of a multi-echo (4D) file, an absurd field of view."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi import HTTPException

from kneeai_testing import DESS_ECHO1, ROOT, TINY_MODEL_CONF, require
from KneeAILib.schema import KneeSchema
from lib.configs.knee_segmentation import model_config_from_conf
from lib.infers.knee_segmentation import KneeSegmentation
from lib.model_store import ModelStore
from lib.transforms.image_io import InputError, read_volume

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")


def knee_like(shape=(24, 32, 32)) -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 20.0, shape).astype(np.float32)


def written(tmp_path, name: str, image: sitk.Image) -> str:
    path = str(tmp_path / name)
    sitk.WriteImage(image, path)
    return path


@pytest.fixture
def task(tmp_path):
    return KneeSegmentation(ModelStore(tmp_path / "model"), SCHEMA, model_config_from_conf(TINY_MODEL_CONF), "test")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_a_clear_4xx_not_an_all_background_answer(task, tmp_path, bad):
    array = knee_like()
    array[5:8] = bad  # NRRD keeps NaN and infinity (ITK's NIfTI reader turns them into 0)
    path = written(tmp_path, "bad.nrrd", sitk.GetImageFromArray(array))
    with pytest.raises(HTTPException) as raised:
        task({"image": path})
    assert raised.value.status_code == 422 and "NaN or infinite" in raised.value.detail


def test_constant_image_is_a_clear_4xx(task, tmp_path):
    path = written(tmp_path, "flat.nii.gz", sitk.GetImageFromArray(np.full((24, 32, 32), 7, np.int16)))
    with pytest.raises(HTTPException) as raised:
        task({"image": path})
    assert raised.value.status_code == 422 and "constant" in raised.value.detail


def test_each_echo_of_a_4d_file_is_read_and_a_missing_echo_refused(tmp_path):
    first, second = knee_like(), knee_like() * 0.25 + 3.0
    echoes = sitk.JoinSeries([sitk.GetImageFromArray(first), sitk.GetImageFromArray(second)])
    echoes.SetSpacing((0.5, 0.6, 1.5, 1.0))
    path = written(tmp_path, "two_echoes.nii.gz", echoes)
    for echo, expected in ((None, first), (1, first), (2, second)):
        volume = read_volume(path, echo=echo)
        assert volume.GetDimension() == 3 and volume.GetSpacing() == pytest.approx((0.5, 0.6, 1.5))
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(volume), expected)
    with pytest.raises(InputError, match="echo 3 requested, the image has 2"):
        read_volume(path, echo=3)


def test_asking_a_single_echo_file_for_another_echo_is_refused_not_ignored(task, tmp_path):
    path = written(tmp_path, "one_echo.nii.gz", sitk.GetImageFromArray(knee_like()))
    assert read_volume(path, echo=1).GetSize() == (32, 32, 24)
    with pytest.raises(InputError, match="echo 2 requested, the image has 1"):
        read_volume(path, echo=2)
    with pytest.raises(HTTPException) as raised:
        task({"image": path, "echo": 2})
    assert raised.value.status_code == 422


def test_a_field_of_view_larger_than_any_knee_is_refused_before_it_is_resampled(tmp_path):
    # 40 voxels of 60 mm: 2.4 m wide. Resampled at the coarse spacing it took over 9 GB of memory.
    image = sitk.GetImageFromArray(knee_like((30, 40, 40)))
    image.SetSpacing((60.0, 60.0, 60.0))
    with pytest.raises(InputError, match="field of view"):
        read_volume(written(tmp_path, "huge.nii.gz", image))
    assert read_volume(require(DESS_ECHO1)).GetSize() == (512, 512, 80)  # a real knee still reads


def test_the_refinement_tasks_refuse_an_image_without_finite_contrast_too(tmp_path):
    """The click and scribble tasks read the image through their cache: a NaN image would normalise to
    NaN and the walker or network would answer silently."""
    from lib.infers.knee_refinement import ImageCache

    array = knee_like()
    array[5:8] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ImageCache().get(written(tmp_path, "bad.nrrd", sitk.GetImageFromArray(array)))
    with pytest.raises(InputError, match="constant"):
        ImageCache().get(written(tmp_path, "flat.nrrd", sitk.GetImageFromArray(np.full((8, 8, 8), 7.0, np.float32))))
