"""Fixtures for the interactive-correction tests: a phantom case of the shared sample studies (its
image id, true labels and a corrupted "automatic" result) and a client of the shared knee server."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

CASE = "knee_phantom_000"  # labelled in the sample studies (tests elsewhere never replace its label)


@pytest.fixture(scope="session")
def schema():
    from KneeAILib.schema import KneeSchema

    return KneeSchema.load()


@pytest.fixture(scope="session")
def phantom_case(sample_studies):
    """(image id, image, true label array (k, j, i))."""
    image = sitk.ReadImage(str(sample_studies / f"{CASE}.nii.gz"))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_studies / "labels" / "final" / f"{CASE}.nii.gz")))
    return CASE, image, truth.astype(np.uint8)


@pytest.fixture(scope="session")
def client(knee_server, tmp_path_factory):
    from KneeAILib.client import KneeAIClient

    return KneeAIClient(knee_server, download_dir=tmp_path_factory.mktemp("refine_downloads"))


@pytest.fixture
def scene():
    """A fresh MRML scene of the real MRML library (slicer-core), segmentation converters registered."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML library) is not installed")
    from KneeAILib.mrml_adapter import ensure_segmentation_converters

    ensure_segmentation_converters()
    return slicer.vtkMRMLScene()
