"""pytest fixtures shared by the whole suite; the helpers they use live in kneeai_testing.py
(a uniquely named module, so test files can import it: several folders have a conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kneeai_testing import DESS_ECHO1, ServerPool, require


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory):
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def sample_studies(tmp_path_factory) -> Path:
    """A studies folder: the real DESS knee (echo 1) plus generated phantoms, three of them labelled."""
    from lib.synthesis.sample_dataset import generate_sample_dataset

    studies = tmp_path_factory.mktemp("studies")
    generate_sample_dataset(studies, n_cases=5, n_labelled=3, seed=0)
    shutil.copy(require(DESS_ECHO1), studies / "dess_3t_echo1.nii.gz")
    return studies


@pytest.fixture(scope="session")
def knee_server(server_pool, sample_studies, tmp_path_factory) -> str:
    """URL of a real KneeAI server on the sample studies, with a tiny model configuration."""
    return server_pool.start(sample_studies, tmp_path_factory.mktemp("model"))
