"""Fixtures for the Slicer-module tests: the real MRML library (slicer-core) and real servers.

``annotator_server`` is a server of its own on a studies folder holding only the real DESS knee: the
annotator round trip submits a label for it and the privacy test uploads a volume, and neither should
change what the shared ``knee_server`` (used by other test files) holds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kneeai_testing import DESS_ECHO1, MESE_DICOM, require  # Testing/ is on sys.path (its conftest)


@pytest.fixture(scope="session")
def dess_path() -> Path:
    return require(DESS_ECHO1)


@pytest.fixture(scope="session")
def mese_dicom_path() -> Path:
    return require(MESE_DICOM)


@pytest.fixture(scope="session")
def schema():
    from KneeAILib.schema import KneeSchema

    return KneeSchema.load()


@pytest.fixture
def scene():
    """A fresh MRML scene of the real MRML library, with Slicer's segmentation converters registered."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML library) is not installed")
    from KneeAILib.mrml_adapter import ensure_segmentation_converters

    ensure_segmentation_converters()
    return slicer.vtkMRMLScene()


@pytest.fixture(scope="session")
def annotator_studies(tmp_path_factory, dess_path) -> Path:
    studies = tmp_path_factory.mktemp("annotator_studies")
    # A copy, not a link: nothing the server does to its studies folder can reach the shared data.
    shutil.copy(dess_path, studies / dess_path.name)
    return studies


@pytest.fixture(scope="session")
def annotator_server(server_pool, annotator_studies, tmp_path_factory) -> str:
    return server_pool.start(annotator_studies, tmp_path_factory.mktemp("annotator_model"))


@pytest.fixture(scope="session")
def annotator_client(annotator_server, tmp_path_factory):
    from KneeAILib.client import KneeAIClient

    return KneeAIClient(annotator_server, download_dir=tmp_path_factory.mktemp("downloads"))
