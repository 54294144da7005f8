"""Scribbles: the client's request (painted voxels thinned, the region around them, refusals before any
request), and the Slicer side: strokes painted in the scribbles node drive an Update of one segment on a
real server (real MRML library), are erased once used, and never reach another segment."""

from __future__ import annotations

import numpy as np
import pytest

from KneeAILib.refinement import (MAX_SCRIBBLE_SPAN_MM, REACH_MM, RefinementError, Scribbles, scribble_request,
                                  thinned_voxels)
from KneeAILib.volume import PixelVolume

CARTILAGE = "femoral_cartilage"
SPACING = (0.4, 0.4, 0.8)  # (i, j, k) mm, anisotropic like a DESS


def _labels(shape_kji=(40, 120, 120)) -> PixelVolume:
    return PixelVolume(np.zeros(shape_kji, np.uint8), SPACING, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _stroke(shape_kji, kji_from, kji_to, radius=2) -> np.ndarray:
    """A painted line of voxels between two voxels, ``radius`` voxels wide in-plane (a brush)."""
    mask = np.zeros(shape_kji, bool)
    for t in np.linspace(0, 1, 200):
        k, j, i = np.round(np.asarray(kji_from) + t * (np.asarray(kji_to) - np.asarray(kji_from))).astype(int)
        mask[k, max(j - radius, 0):j + radius + 1, max(i - radius, 0):i + radius + 1] = True
    return mask


def test_the_request_thins_the_strokes_but_seeds_the_same_region_and_its_roi_holds_their_reach(schema):
    labels = _labels()
    foreground = _stroke(labels.array.shape, (20, 30, 20), (22, 60, 70))
    background = _stroke(labels.array.shape, (18, 80, 30), (18, 80, 60), radius=1)
    params, block = scribble_request(labels, CARTILAGE, Scribbles(foreground, background), {"femur"}, schema)

    assert params["structure"] == CARTILAGE and params["locked"] == ["femur"] and "last" not in params
    for name, mask in (("foreground", foreground), ("background", background)):
        sent = np.array(params[name])
        assert 0 < len(sent) < np.count_nonzero(mask) / 2, "the painted voxels are not thinned"
        assert all(mask[k, j, i] for i, j, k in sent), "a voxel that was not painted was sent"
        # Every painted voxel lies within 1.5 mm of a sent one: the server's 1.5 mm seed balls around the
        # sent voxels cover the whole stroke.
        painted_mm = np.argwhere(mask)[:, ::-1] * SPACING
        sent_mm = sent * SPACING
        nearest = np.min(np.linalg.norm(painted_mm[:, None, :] - sent_mm[None, :, :], axis=2), axis=1)
        assert nearest.max() <= 1.5 + 1e-6
    (lo, hi) = params["roi"]
    painted = np.argwhere(foreground | background)[:, ::-1]
    reach = np.ceil(REACH_MM / np.asarray(SPACING)).astype(int)
    size = np.array(labels.array.shape[::-1])
    np.testing.assert_array_equal(lo, np.maximum(painted.min(axis=0) - reach, 0))
    np.testing.assert_array_equal(hi, np.minimum(painted.max(axis=0) + reach + 1, size))
    assert block.shape == tuple(b - a for a, b in zip(lo, hi))[::-1]


def test_thinning_keeps_one_voxel_per_cell():
    mask = np.ones((5, 10, 10), bool)  # 4 x 4 x 4 mm at 0.4 x 0.4 x 0.8 mm
    voxels = thinned_voxels(mask, SPACING, cell_mm=1.0)
    assert len(voxels) == 4 * 4 * 4
    cells = {tuple(int(c) for c in np.floor(np.array(v) * SPACING)) for v in voxels}
    assert len(cells) == len(voxels)


@pytest.mark.parametrize("case, message", [
    ("nothing painted", "No scribbles"),
    ("locked", "locked"),
    ("unknown structure", "Unknown structure"),
    ("too wide", "update one region at a time"),
    ("another grid", "grid"),
])
def test_a_scribble_update_the_server_could_not_do_is_refused_before_asking(schema, case, message):
    labels = _labels()
    shape = labels.array.shape
    nothing = np.zeros(shape, bool)
    stroke = _stroke(shape, (20, 30, 20), (20, 40, 30))
    scribbles, structure, locked = Scribbles(stroke, nothing), CARTILAGE, set()
    if case == "nothing painted":
        scribbles = Scribbles(nothing, nothing)
    elif case == "locked":
        locked = {CARTILAGE}
    elif case == "unknown structure":
        structure = "kneecap"
    elif case == "too wide":
        span_voxels = int(MAX_SCRIBBLE_SPAN_MM / SPACING[0]) + 2
        labels = _labels((40, 40, span_voxels + 10))
        wide = np.zeros(labels.array.shape, bool)
        wide[20, 20, [2, span_voxels + 2]] = True
        scribbles = Scribbles(wide, np.zeros(labels.array.shape, bool))
    elif case == "another grid":
        scribbles = Scribbles(stroke[:, :, :-1], nothing[:, :, :-1])
    with pytest.raises(RefinementError, match=message):
        scribble_request(labels, structure, scribbles, locked, schema)


# -- in the scene, against a real server -------------------------------------------------------------
@pytest.fixture
def scribble_case(scene, schema, phantom_case):
    """The phantom knee in the scene with its femoral cartilage missing a ball, and a session on it."""
    from KneeAILib import mrml_adapter
    from KneeAILib.refinement_mrml import SceneRefinement

    image_id, image, truth = phantom_case
    value = schema.by_key[CARTILAGE].value
    voxels = np.argwhere(truth == value)
    centre = voxels[len(voxels) // 2]
    zz, yy, xx = np.ogrid[: truth.shape[0], : truth.shape[1], : truth.shape[2]]
    ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 4 ** 2
    labels = truth.copy()
    labels[ball & (truth == value)] = 0
    volume = PixelVolume.from_sitk(image)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)
    session = SceneRefinement(image_id, segmentation, volume_node, schema)
    return session, truth, labels, value, ball


def _scene_labels(session):
    from KneeAILib import mrml_adapter

    export = mrml_adapter.labels_from_segmentation(session.segmentation_node, session.volume_node, session.schema)
    assert export.overlapping_segments == {}
    return export.labels.array


def _paint(session, sid, mask):
    from KneeAILib import mrml_adapter

    node = session.scribbles_node()
    now = mrml_adapter.segment_mask(node, sid, session.volume_node)
    mrml_adapter.set_segment_mask(node, sid, now | mask, session.volume_node)


def _painted(session, sid):
    from KneeAILib import mrml_adapter

    return mrml_adapter.segment_mask(session.scribbles_node(), sid, session.volume_node)


def test_a_foreground_stroke_fills_the_missed_cartilage_in_that_segment_only_and_is_used_up(client, scribble_case):
    session, truth, labels, value, ball = scribble_case
    stroke = ball & (truth == value)  # the annotator paints over the missed cartilage
    _paint(session, "foreground", stroke)
    snapshot = session.export()
    assert snapshot.scribbles is not None and snapshot.clicks.of(CARTILAGE) == []
    refinement = session.refine(client, CARTILAGE, snapshot)
    assert refinement.from_scribbles and refinement.params["method"] == "random_walker_scribbles"
    later = np.zeros(truth.shape, bool)
    later[1:3, 1:3, 1:3] = True  # a stroke painted while the server worked, far from the first
    _paint(session, "foreground", later)

    assert session.apply(refinement, snapshot) > 0
    after = _scene_labels(session)
    others = ~np.isin(labels, [0, value])
    np.testing.assert_array_equal(after[others], labels[others])  # no other segment changed
    assert (after[stroke] == value).all(), "the painted cartilage did not become cartilage"
    recovered = np.count_nonzero((after == value) & (truth == value))
    assert recovered > np.count_nonzero((labels == value) & (truth == value))
    np.testing.assert_array_equal(_painted(session, "foreground"), later)  # used strokes erased, the later one kept
    assert session.export().scribbles is not None  # the later stroke drives the next Update

    assert session.undo() == CARTILAGE
    np.testing.assert_array_equal(_scene_labels(session), labels)


def test_a_background_stroke_alone_removes_a_false_region_it_touches(client, scribble_case):
    session, truth, labels, value, ball = scribble_case
    # A false blob of cartilage in the background, away from every structure.
    far = np.argwhere(truth == 0)
    free = far[np.all(far >= 6, axis=1) & np.all(far < np.array(truth.shape) - 6, axis=1)]
    centre = next(p for p in free[:: max(len(free) // 500, 1)]
                  if not truth[p[0] - 5:p[0] + 6, p[1] - 5:p[1] + 6, p[2] - 5:p[2] + 6].any())
    blob = np.zeros(truth.shape, bool)
    blob[centre[0] - 2:centre[0] + 3, centre[1] - 2:centre[1] + 3, centre[2] - 2:centre[2] + 3] = True
    from KneeAILib import mrml_adapter
    mask = mrml_adapter.segment_mask(session.segmentation_node, CARTILAGE, session.volume_node)
    mrml_adapter.set_segment_mask(session.segmentation_node, CARTILAGE, mask | blob, session.volume_node)
    stroke = np.zeros(truth.shape, bool)
    stroke[centre[0], centre[1] - 1:centre[1] + 2, centre[2] - 1:centre[2] + 2] = True
    _paint(session, "background", stroke)

    params = session.update(client, CARTILAGE)
    after = _scene_labels(session)
    assert params["removed"] > 0 and not (after[stroke] == value).any()
    assert np.count_nonzero(after[blob] == value) < np.count_nonzero(blob) / 2, "the false blob stayed"
    np.testing.assert_array_equal(after[~blob], labels[~blob])  # nothing else changed
    assert not _painted(session, "background").any()


def test_a_scribble_update_of_a_locked_segment_is_refused_and_keeps_the_strokes(client, scribble_case):
    session, truth, labels, value, ball = scribble_case
    stroke = ball & (truth == value)
    _paint(session, "foreground", stroke)
    session.locked.add(CARTILAGE)
    with pytest.raises(RefinementError, match="locked"):
        session.update(client, CARTILAGE)
    np.testing.assert_array_equal(_scene_labels(session), labels)
    np.testing.assert_array_equal(_painted(session, "foreground"), stroke)
    assert len(session.undo_stack) == 0


def test_the_scribbles_node_of_an_earlier_case_is_replaced(scene, schema, scribble_case):
    from KneeAILib.refinement_mrml import SCRIBBLES_NODE_NAME, SceneRefinement

    session, truth, labels, value, ball = scribble_case
    _paint(session, "foreground", ball)
    first = session.scribbles_node()
    next_case = SceneRefinement("another", session.segmentation_node, session.volume_node, schema)
    assert next_case.export().scribbles is None  # a new case starts with no strokes
    second = next_case.scribbles_node()
    assert second is not first and first.GetScene() is None
    assert scene.GetNodesByName(SCRIBBLES_NODE_NAME).GetNumberOfItems() == 1
    assert {second.GetSegmentation().GetNthSegmentID(n) for n in range(2)} == {"foreground", "background"}
