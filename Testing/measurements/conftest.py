"""Fixtures for the measurement tests: phantoms are built here; real OAI-ZIB maps come from ../shared."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(HERE) not in sys.path:  # phantoms.py and label_transforms.py sit beside the tests
    sys.path.insert(0, str(HERE))
if str(ROOT / "KneeAI") not in sys.path:
    sys.path.insert(0, str(ROOT / "KneeAI"))

OAI_ZIB = ROOT.parent / "shared" / "data" / "labels" / "oai_zib"


@pytest.fixture(scope="session")
def oai_zib_knee() -> Path:
    path = OAI_ZIB / "oai_zib_9001104.nii.gz"
    if not path.is_file():
        pytest.skip(f"real OAI-ZIB label maps not found at {OAI_ZIB}")
    return path
