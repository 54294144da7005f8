"""The annotator's round trip on the real DESS knee, through the real MRML library and a real server:
next case -> volume node -> auto-segmentation -> segmentation node -> an edit -> submit -> the label the
server stores equals the edited segmentation voxel for voxel, in the image's own geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML library) is not installed")
from KneeAILib import annotator, mrml_adapter
from KneeAILib.client import BadResponse
from KneeAILib.jobs import JobRunner
from KneeAILib.session import AnnotationSession, IllegalTransition, State
from KneeAILib.upload import JsonConsentStore
from KneeAILib.volume import PixelVolume

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def round_trip(annotator_client, schema):
    """Runs the whole annotator flow once (the server steps on worker threads, as the Widget does);
    the tests below check its results."""
    from KneeAILib.mrml_adapter import ensure_segmentation_converters

    ensure_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    session = AnnotationSession()
    runner = JobRunner()
    results = {}

    info = annotator_client.info()
    session.connect(annotator_client.server_url, info["model_version"])

    job = runner.submit("next case", annotator.fetch_case, annotator_client, "random",
                        on_done=lambda case: results.__setitem__("case", case))
    session.begin_job("next case", job)
    runner.wait(timeout=300)
    session.end_job()
    case = results["case"]
    session.load_case(case.image_id)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, case.image, case.image_id)

    job = runner.submit("segment", annotator.propose_segmentation, annotator_client, case.image_id, schema,
                        on_done=lambda proposal: results.__setitem__("proposal", proposal))
    session.begin_job("segment", job)
    runner.wait(timeout=600)
    session.end_job()
    proposal = results["proposal"]
    segmentation_node = mrml_adapter.segmentation_from_labels(scene, proposal.labels, schema, volume_node)
    session.segmented(proposal.model_version)

    # The edit: the structure with the most voxels loses those in the upper half of the slices and
    # gains a block that was background, as the Segment Editor's erase and paint would do.
    values, counts = np.unique(proposal.labels.array, return_counts=True)
    pick = {int(v): int(c) for v, c in zip(values, counts) if v in schema.by_value}
    value = max(pick, key=pick.get) if pick else schema.value_of("femur")
    structure = schema.by_value[value]
    mask = mrml_adapter.segment_mask(segmentation_node, structure.key, volume_node)
    assert np.array_equal(mask, proposal.labels.array == value)
    depth = mask.shape[0]
    erased = mask.copy()
    erased[depth // 2:] = False
    block = np.zeros_like(mask)
    block[depth // 2 - 2: depth // 2 + 2, 100:110, 120:135] = True
    block &= proposal.labels.array == 0
    edited_mask = erased | block
    mrml_adapter.set_segment_mask(segmentation_node, structure.key, edited_mask, volume_node)
    session.edited()

    expected = proposal.labels.array.copy()
    expected[mask & ~edited_mask] = 0
    expected[block] = value

    export = mrml_adapter.require_known_segments(
        mrml_adapter.labels_from_segmentation(segmentation_node, volume_node, schema))
    annotator.submit_labels(annotator_client, case.image_id, export.labels, case.image, schema)
    session.submitted()
    stored_path = annotator_client.download_label(case.image_id, "final")
    stored = sitk.ReadImage(str(stored_path))
    runner.shutdown()
    return dict(case=case, proposal=proposal, export=export, expected=expected, stored=stored,
                session=session, scene=scene, volume_node=volume_node, segmentation_node=segmentation_node,
                value=value, block=block)


def test_next_case_is_the_real_dess_in_its_own_geometry(round_trip, dess_path):
    case = round_trip["case"]
    assert case.image_id == "dess_3t_echo1"
    original = sitk.ReadImage(str(dess_path))
    assert case.image.size == original.GetSize() == (512, 512, 80)
    assert np.allclose(case.image.spacing, original.GetSpacing())
    # The volume node's IJK->RAS is the file's LPS geometry with x and y negated.
    ijk_to_ras = vtk.vtkMatrix4x4()
    round_trip["volume_node"].GetIJKToRASMatrix(ijk_to_ras)
    matrix = slicer.util.arrayFromVTKMatrix(ijk_to_ras)
    index = np.array([10, 20, 30])
    lps = np.array(original.TransformIndexToPhysicalPoint([int(i) for i in index]))
    ras = (matrix @ np.array([*index, 1.0]))[:3]
    assert np.allclose(ras, lps * [-1, -1, 1], atol=1e-4)


def test_segmentation_node_carries_the_schema(round_trip, schema):
    segmentation = round_trip["segmentation_node"].GetSegmentation()
    for structure in schema.structures:
        segment = segmentation.GetSegment(structure.key)
        assert segment is not None, f"no segment for {structure.key}"
        assert segment.GetName() == structure.name
        assert np.allclose(segment.GetColor(), structure.color_float)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTypeObject().GetCodeValue() == structure.type.value
        assert entry.GetCategoryObject().GetCodeValue() == structure.category.value


def test_stored_label_equals_the_edited_segmentation(round_trip):
    stored = round_trip["stored"]
    case = round_trip["case"]
    expected = round_trip["expected"]
    assert not np.array_equal(expected, round_trip["proposal"].labels.array), "the edit changed nothing"
    assert round_trip["block"].any()
    assert np.array_equal(round_trip["export"].labels.array, expected)
    assert stored.GetSize() == case.image.size
    assert np.allclose(stored.GetSpacing(), case.image.spacing, atol=1e-6)
    assert np.allclose(stored.GetOrigin(), case.image.origin, atol=1e-5)
    assert np.allclose(stored.GetDirection(), case.image.direction, atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(stored), expected)


def test_session_walked_the_states_and_refuses_skips(round_trip):
    session = round_trip["session"]
    assert session.state is State.SUBMITTED
    assert session.image_id == "dess_3t_echo1"
    with pytest.raises(IllegalTransition):
        session.submitted()  # nothing new to submit


def test_a_proposal_on_another_grid_than_the_image_is_refused(round_trip, annotator_client, schema, tmp_path):
    # The image as Slicer holds it, resampled to another spacing: the server's labels of the case
    # would not line up with it, so they are refused instead of shown.
    case = round_trip["case"]
    coarser = PixelVolume(case.image.array, tuple(2 * s for s in case.image.spacing), case.image.origin,
                          case.image.direction)
    with pytest.raises(BadResponse, match=r"does not have the image's grid: spacing"):
        annotator.upload_and_propose(annotator_client, case.image_id, coarser, JsonConsentStore(tmp_path / "c.json"),
                                     schema)
