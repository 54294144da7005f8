"""KneeAILogic (the module's Logic in KneeAI.py) on the real MRML library against a real KneeAI server:
the Segment Editor stays usable while a background job runs, so edits made during a job must survive
its result (a proposal, the next case, a reconnection) and must not be marked submitted by an upload
that did not contain them; an image id counts only on the server that gave it.

A job's result is applied when ``runner.wait`` polls, so an edit made right after starting a job
always comes before its result, however fast the server is.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML library) is not installed")
from kneeai_testing import kneeai_logic_class  # noqa: E402
from KneeAILib import mrml_adapter  # noqa: E402
from KneeAILib.session import State  # noqa: E402
from KneeAILib.upload import JsonConsentStore  # noqa: E402

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def logic_server(server_pool, tmp_path_factory):
    """A server of its own (the tests submit labels and upload an image): six unlabelled phantom knees."""
    from lib.synthesis.sample_dataset import generate_sample_dataset

    studies = tmp_path_factory.mktemp("logic_studies")
    generate_sample_dataset(studies, n_cases=6, n_labelled=0, seed=3)
    return server_pool.start(studies, tmp_path_factory.mktemp("logic_model"))


@pytest.fixture
def logic(monkeypatch, scene, logic_server, tmp_path):
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    consent = JsonConsentStore(tmp_path / "consent.json")
    messages = []
    logic = kneeai_logic_class()(consent, changed=lambda message=None, error=False: messages.append((message, error)))
    logic.messages, logic.parameters = messages, types.SimpleNamespace(
        inputVolume=None, segmentation=None, secondVisit=None, strategy="random", epochs=1)
    run(logic, logic.connect, logic_server)
    assert logic.session.state is State.CONNECTED, messages
    return logic


def run(logic, action, *args):
    action(*args)
    logic.runner.wait(timeout=300)


def segmented_case(logic):
    run(logic, logic.nextCase, logic.parameters)
    run(logic, logic.segment, logic.parameters)
    assert logic.session.state is State.SEGMENTED, logic.messages
    return logic.parameters.segmentation, logic.parameters.inputVolume


def paint(logic, block):
    """A Segment Editor stroke: ``block`` of femur voxels added to the case's segmentation, taken from any
    other segment there as the editor's default (overwrite other segments) does: the untrained model's
    proposal may hold anything at those voxels, and overlapping segments are refused at Submit."""
    node, volume = logic.parameters.segmentation, logic.parameters.inputVolume
    segmentation = node.GetSegmentation()
    for sid in (segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())):
        other = mrml_adapter.segment_mask(node, sid, volume)
        if sid != "femur" and other[block].any():
            other[block] = False
            mrml_adapter.set_segment_mask(node, sid, other, volume)
    mask = mrml_adapter.segment_mask(node, "femur", volume)
    mask[block] = True
    mrml_adapter.set_segment_mask(node, "femur", mask, volume)
    return mask


def test_edits_made_during_the_upload_still_need_a_submit(logic):
    segmented_case(logic)
    paint(logic, np.s_[2:4, 2:4, 2:4])
    assert logic.session.state is State.EDITED
    logic.submit(logic.parameters)
    paint(logic, np.s_[5:7, 5:7, 5:7])  # while the label uploads
    logic.runner.wait(timeout=300)
    assert logic.session.state is State.EDITED
    assert "not on the server yet" in logic.messages[-1][0]
    run(logic, logic.submit, logic.parameters)
    assert logic.session.state is State.SUBMITTED


def test_a_proposal_never_overwrites_edits_made_while_the_server_segmented(logic):
    segmented_case(logic)
    logic.segment(logic.parameters)
    painted = paint(logic, np.s_[2:5, 2:5, 2:5])  # while the server segments
    logic.runner.wait(timeout=300)
    assert logic.session.state is State.EDITED
    message, error = logic.messages[-1]
    assert error and "was edited while this ran; the edits are kept" in message
    node, volume = logic.parameters.segmentation, logic.parameters.inputVolume
    assert np.array_equal(mrml_adapter.segment_mask(node, "femur", volume), painted)


def test_edits_made_while_the_next_case_downloads_keep_their_case(logic):
    segmented_case(logic)
    case = logic.session.image_id
    paint(logic, np.s_[2:4, 2:4, 2:4])
    logic.nextCase(logic.parameters)  # the Widget asked, and the user discarded the edits so far
    paint(logic, np.s_[5:7, 5:7, 5:7])  # then painted again while the next case downloads
    logic.runner.wait(timeout=300)
    assert (logic.session.state, logic.session.image_id) == (State.EDITED, case)
    assert logic.messages[-1][1] and "edited while this ran" in logic.messages[-1][0]


def test_reconnecting_to_the_same_server_keeps_the_case_and_its_edits(logic, logic_server):
    segmented_case(logic)
    case = logic.session.image_id
    painted = paint(logic, np.s_[2:4, 2:4, 2:4])
    run(logic, logic.connect, logic_server)  # e.g. after the server was unreachable
    assert (logic.session.state, logic.session.image_id) == (State.EDITED, case)
    run(logic, logic.submit, logic.parameters)
    assert logic.session.state is State.SUBMITTED, logic.messages
    from KneeAILib.volume import read_volume_file

    stored = read_volume_file(logic.client.download_label(case, "final")).array
    assert np.array_equal(stored == logic.schema.value_of("femur"), painted)  # the edit reached the server


def test_an_image_id_of_another_server_is_uploaded_not_reused(logic, logic_server):
    _, volume = segmented_case(logic)
    case = logic.session.image_id
    other = logic_server.replace("127.0.0.1", "localhost")  # the same process, but to the client another server
    run(logic, logic.connect, other)
    assert (logic.session.state, logic.session.image_id) == (State.CONNECTED, None)
    assert mrml_adapter.case_image_id(volume, other) is None
    with pytest.raises(ValueError, match="not to the current case None of http://localhost"):
        logic.submit(logic.parameters)  # the segmentation belongs to the first server's case
    logic.consent.set_consent(other, True)  # the Widget asks before an upload
    run(logic, logic.segment, logic.parameters)
    assert logic.session.state is State.SEGMENTED, logic.messages
    assert logic.session.image_id != case  # uploaded: a new image, not the first server's id
    assert mrml_adapter.case_image_id(volume, other) == logic.session.image_id


def test_an_update_with_painted_scribbles_refines_from_them_and_uses_them_up(logic):
    """The module's scribbles: strokes painted in the node ``scribblesNode`` hands the Segment Editor, then
    Update (the Logic's refine): that segment gains the painted voxels, the strokes are erased, Undo works."""
    node, volume = segmented_case(logic)
    before = mrml_adapter.segment_mask(node, "femoral_cartilage", volume)
    labels_before = mrml_adapter.labels_from_segmentation(node, volume, logic.schema).labels.array
    scribbles, painted_on = logic.scribblesNode()
    assert painted_on is volume and logic.scribblesNode()[0] is scribbles  # one node per case
    stroke = np.zeros(before.shape, bool)
    k, j, i = (s // 2 for s in before.shape)
    stroke[k, j - 1:j + 2, i - 3:i + 4] = True
    mrml_adapter.set_segment_mask(scribbles, "foreground", stroke, volume)
    run(logic, logic.refine, "femoral_cartilage")
    message, error = logic.messages[-1]
    assert not error and "updated from scribbles" in message, logic.messages
    after = mrml_adapter.segment_mask(node, "femoral_cartilage", volume)
    # Every painted voxel no other segment held is cartilage now (other segments never change).
    free = stroke & np.isin(labels_before, (0, logic.schema.value_of("femoral_cartilage")))
    assert free.any() and after[free].all()
    assert not mrml_adapter.segment_mask(scribbles, "foreground", volume).any()
    logic.undoRefinement()
    assert np.array_equal(mrml_adapter.segment_mask(node, "femoral_cartilage", volume), before)
