"""KneeAITest (the self-test inside KneeAI.py) run on the real MRML library, here without Slicer.

KneeAI.py needs the Slicer application (qt, the module base classes), which cannot run here. Its
test class needs only ``slicer.mrmlScene`` and unittest, so its source is taken from KneeAI.py and
run with a fresh slicer-core scene as ``slicer.mrmlScene``: the same test bodies Slicer runs, proving
they pass and are not stubs. The server part runs against the real test server."""

from __future__ import annotations

import unittest

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML library) is not installed")
from kneeai_testing import class_from_kneeai_py  # noqa: E402


def load_self_test_class(delay_messages: list[str]):
    # ScriptedLoadableModuleTest is a unittest.TestCase
    cls = class_from_kneeai_py("KneeAITest", {"TestCase": unittest.TestCase, "_": lambda text: text}, ["TestCase"])
    cls.delayDisplay = lambda self, message: delay_messages.append(message)  # Slicer shows it in a popup
    return cls


@pytest.fixture
def slicer_scene(monkeypatch, scene):
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    return scene


def test_self_test_passes_and_skips_the_server_part_with_a_reason(slicer_scene, monkeypatch):
    monkeypatch.delenv("KNEEAI_TEST_SERVER", raising=False)
    messages: list[str] = []
    cls = load_self_test_class(messages)
    result = unittest.TextTestRunner(verbosity=0).run(unittest.TestLoader().loadTestsFromTestCase(cls))
    assert result.wasSuccessful() and result.testsRun == 3
    assert [reason for _, reason in result.skipped] == [cls.SERVER_SKIPPED]
    cls("runTest").runTest()  # what "Reload and Test" runs
    assert messages == [cls.SERVER_SKIPPED]


@pytest.mark.server
def test_self_test_server_part(slicer_scene, monkeypatch, knee_server):
    monkeypatch.setenv("KNEEAI_TEST_SERVER", knee_server)
    messages: list[str] = []
    cls = load_self_test_class(messages)
    suite = unittest.TestLoader().loadTestsFromName("test_server_proposal", cls)
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    assert result.wasSuccessful() and not result.skipped
    assert messages and messages[0].startswith("Server proposal for ")
    assert slicer_scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1
