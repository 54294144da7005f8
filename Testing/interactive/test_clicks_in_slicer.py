"""Clicks placed in Slicer (markups, world RAS) under transformed volumes reach the right voxels, the
points standing when an Update starts are exactly what it sends, the Update writes back into the clicked
segment only, and Undo takes back the change with the points that made it (real MRML library, real
server)."""

from __future__ import annotations

import numpy as np
import pytest

from KneeAILib.refinement import RefinementError, refinement_request
from KneeAILib.volume import PixelVolume
from kneeai_testing import linear_transform_node, rotation
from lib.interactive.clicks import largest_error_click

vtk = pytest.importorskip("vtk", reason="slicer-core (VTK) is not installed")
from KneeAILib import mrml_adapter  # noqa: E402  (needs slicer-core)
from KneeAILib.refinement_mrml import SceneRefinement  # noqa: E402

CARTILAGE = "femoral_cartilage"


def test_markup_click_under_transforms_refines_the_right_voxels_of_that_segment_only(
        scene, schema, client, phantom_case):
    image_id, image, truth = phantom_case
    value = schema.by_key[CARTILAGE].value
    labels = truth.copy()
    voxels = np.argwhere(truth == value)
    k0, j0, i0 = voxels[len(voxels) // 3]
    zz, yy, xx = np.ogrid[: truth.shape[0], : truth.shape[1], : truth.shape[2]]
    labels[((zz - k0) ** 2 + (yy - j0) ** 2 + (xx - i0) ** 2 <= 25) & (truth == value)] = 0
    click = largest_error_click(labels == value, truth == value, image.GetSpacing()[::-1])

    volume = PixelVolume.from_sitk(image)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    to_parent = np.eye(4)
    to_parent[:3, :3] = rotation("y", 25) @ rotation("z", -40)
    to_parent[:3, 3] = [30.0, -10.0, 55.0]
    volume_node.SetAndObserveTransformNodeID(linear_transform_node(scene, to_parent).GetID())
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)

    # The annotator clicks where they SEE the missed voxel: through the volume's transform, while the
    # markups node sits under a transform of its own.
    errors: list[str] = []
    session = SceneRefinement(image_id, segmentation, volume_node, schema, locked={"femur", "tibia"},
                              on_click_error=errors.append)
    positive = session.points_node(CARTILAGE, True)
    markups_parent = np.eye(4)
    markups_parent[:3, :3] = rotation("x", 30)
    markups_parent[:3, 3] = [-4.0, 6.0, 2.0]
    positive.SetAndObserveTransformNodeID(linear_transform_node(scene, markups_parent).GetID())
    world = to_parent @ volume.ijk_to_ras() @ np.array([*(np.array(click.ijk) + [0.2, -0.3, 0.1]), 1.0])
    positive.AddControlPointWorld(vtk.vtkVector3d(*world[:3]))
    assert session.clicks_now().of(CARTILAGE) == [(click.ijk, True)] and errors == []

    before = mrml_adapter.labels_from_segmentation(segmentation, volume_node, schema).labels.array
    np.testing.assert_array_equal(before, labels)
    params = session.update(client, CARTILAGE)
    assert params["method"] == "random_walker"
    after = mrml_adapter.labels_from_segmentation(segmentation, volume_node, schema).labels.array
    i, j, k = click.ijk
    assert after[k, j, i] == value and labels[k, j, i] == 0
    changed = after != labels
    assert set(np.unique(labels[changed])) == {0} and set(np.unique(after[changed])) == {value}
    others = ~np.isin(labels, [0, value])
    np.testing.assert_array_equal(after[others], labels[others])

    # Undo puts the segment back exactly, in the scene, and takes the point back with it.
    assert session.undo() == CARTILAGE
    np.testing.assert_array_equal(mrml_adapter.labels_from_segmentation(segmentation, volume_node, schema).labels.array,
                                  labels)
    assert positive.GetNumberOfControlPoints() == 0
    assert session.undo() is None

    # A point placed outside the volume is reported when placed, and no Update is sent while it stands.
    outside = to_parent @ volume.ijk_to_ras() @ np.array([-30.0, 5.0, 5.0, 1.0])
    positive.AddControlPointWorld(vtk.vtkVector3d(*outside[:3]))
    assert len(errors) == 1 and "outside the volume" in errors[0]
    with pytest.raises(RefinementError, match="outside the volume"):
        session.update(client, CARTILAGE)


def test_points_placed_in_a_segments_markups_node_become_its_clicks_and_a_new_case_starts_clean(scene, schema):
    """What the module's + / - point buttons rely on: the points placed are the clicks (newest last), one
    outside the volume is reported when placed and refuses the Update until it is moved or deleted, and
    the next case's refinement replaces the earlier case's point nodes (their points meant the earlier
    image)."""
    volume = PixelVolume(np.zeros((20, 30, 40), np.int16), (0.5, 0.5, 1.0), (3.0, -4.0, 5.0),
                         (1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(np.zeros((20, 30, 40), np.uint8)),
                                                         schema, volume_node)
    errors: list[str] = []
    session = SceneRefinement("case_a", segmentation, volume_node, schema, on_click_error=errors.append)
    plus, minus = session.points_node(CARTILAGE, True), session.points_node(CARTILAGE, False)
    assert session.points_node(CARTILAGE, True) is plus and plus is not minus

    def world(ijk):
        return vtk.vtkVector3d(*(volume.ijk_to_ras() @ np.array([*ijk, 1.0]))[:3])

    plus.AddControlPointWorld(world((10, 12, 7)))
    minus.AddControlPointWorld(world((30, 20, 15)))
    plus.AddControlPointWorld(world((-8, 12, 7)))  # outside the image: refused with a message
    assert session.clicks_now().of(CARTILAGE) == [((10, 12, 7), True), ((30, 20, 15), False)]
    assert len(errors) == 1 and "outside the volume" in errors[0]
    with pytest.raises(RefinementError, match="outside the volume"):  # before any server is asked
        session.refine(None, CARTILAGE, session.export())
    plus.RemoveNthControlPoint(1)  # the point outside, deleted
    assert not session.export().refused

    following = SceneRefinement("case_b", segmentation, volume_node, schema, on_click_error=errors.append)
    renewed = following.points_node(CARTILAGE, True)
    assert plus.GetScene() is None and renewed.GetNumberOfControlPoints() == 0
    renewed.AddControlPointWorld(world((1, 2, 3)))
    assert following.clicks_now().of(CARTILAGE) == [((1, 2, 3), True)]
    # The earlier case's '+' points went with their node; its session never sees the new case's points.
    assert session.clicks_now().of(CARTILAGE) == [((30, 20, 15), False)]


def test_an_update_sends_the_points_as_they_stand_not_as_they_were_placed(scene, schema):
    """The annotator deletes a wrong point and drags another: the Update sends neither the deleted point
    nor the dragged one's old voxel, and acts on the newest point still standing."""
    volume = PixelVolume(np.zeros((20, 30, 40), np.int16), (0.5, 0.5, 1.0), (3.0, -4.0, 5.0),
                         (1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(np.zeros((20, 30, 40), np.uint8)),
                                                         schema, volume_node)
    session = SceneRefinement("case", segmentation, volume_node, schema)
    plus, minus = session.points_node(CARTILAGE, True), session.points_node(CARTILAGE, False)

    def world(ijk):
        return vtk.vtkVector3d(*(volume.ijk_to_ras() @ np.array([*ijk, 1.0]))[:3])

    def sent():
        params, _ = refinement_request(session.export(), CARTILAGE, session.export().clicks, set(), schema)
        return params["foreground"], params["background"], params["last"]

    plus.AddControlPointWorld(world((10, 12, 7)))
    minus.AddControlPointWorld(world((30, 20, 15)))
    assert sent() == ([[10, 12, 7]], [[30, 20, 15]], [30, 20, 15])
    minus.RemoveNthControlPoint(0)  # the wrong negative point, deleted
    plus.SetNthControlPointPositionWorld(0, world((20, 25, 3)))  # the positive point, dragged
    assert sent() == ([[20, 25, 3]], [], [20, 25, 3])
    minus.AddControlPointWorld(world((5, 5, 5)))
    plus.AddControlPointWorld(world((6, 6, 6)))
    plus.SetNthControlPointPositionWorld(0, world((21, 25, 3)))  # dragging keeps a point's place in the order
    assert sent() == ([[21, 25, 3], [6, 6, 6]], [[5, 5, 5]], [6, 6, 6])
    plus.RemoveNthControlPoint(1)  # the newest point deleted: the Update acts on the one before it
    assert sent()[2] == [5, 5, 5]


def _refined_in_the_background(scene, schema, client, phantom_case):
    """A segmentation missing its femoral cartilage, one positive click in it, and the Update's first two
    steps done (``export``, then ``refine`` as the worker thread runs it): (session, snapshot,
    refinement, the labels before, the voxels the refinement adds)."""
    image_id, image, truth = phantom_case
    value = schema.by_key[CARTILAGE].value
    labels = truth.copy()
    labels[truth == value] = 0
    voxels = np.argwhere(truth == value)
    k, j, i = voxels[len(voxels) // 2]
    volume = PixelVolume.from_sitk(image)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(labels), schema, volume_node)
    session = SceneRefinement(image_id, segmentation, volume_node, schema)
    _place(session, CARTILAGE, True, (i, j, k))
    snapshot = session.export()
    refinement = session.refine(client, CARTILAGE, snapshot)
    added = (snapshot.array == value) & (labels != value)
    assert added[k, j, i] and refinement.params["method"] == "random_walker"
    return session, snapshot, refinement, labels, added


def _place(session, structure, positive, ijk):
    """A point placed in ``structure``'s positive (negative) points node at the centre of voxel ``ijk``."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    session.volume_node.GetIJKToRASMatrix(ijk_to_ras)  # the volume is under no transform here
    ras = ijk_to_ras.MultiplyPoint((*(float(c) for c in ijk), 1.0))
    session.points_node(structure, positive).AddControlPointWorld(vtk.vtkVector3d(*ras[:3]))


def _scene_labels(session):
    export = mrml_adapter.labels_from_segmentation(session.segmentation_node, session.volume_node, session.schema)
    assert export.overlapping_segments == {}, "two segments hold the same voxels"
    return export.labels.array


def test_a_stroke_made_while_the_server_works_is_kept_by_the_update(scene, schema, client, phantom_case):
    """The module exports, refines off the main thread, then applies: the annotator may paint the same
    segment in between. Only the voxels the refinement changed are written, so the stroke stays."""
    session, snapshot, refinement, labels, added = _refined_in_the_background(scene, schema, client, phantom_case)
    value = schema.by_key[CARTILAGE].value
    stroke = np.zeros(labels.shape, bool)
    stroke[1:3, 1:3, 1:3] = True  # a corner far from the click, painted while the server worked
    assert not (labels[stroke] != 0).any()
    mrml_adapter.set_segment_mask(session.segmentation_node, CARTILAGE, stroke, session.volume_node)
    assert session.apply(refinement, snapshot) == np.count_nonzero(added)

    after = _scene_labels(session)
    assert (after[stroke] == value).all(), "the stroke made during the Update was overwritten"
    np.testing.assert_array_equal((after == value) & ~stroke, added)  # exactly the refinement's voxels


def test_an_update_never_takes_voxels_another_segment_gained_or_was_locked_while_the_server_worked(
        scene, schema, client, phantom_case):
    session, snapshot, refinement, labels, added = _refined_in_the_background(scene, schema, client, phantom_case)
    value, femur = schema.by_key[CARTILAGE].value, schema.by_key["femur"].value
    # While the server worked: the annotator gave some of those voxels to the femur and locked it.
    taken = np.zeros(labels.shape, bool)
    taken.reshape(-1)[np.flatnonzero(added)[::3]] = True
    mrml_adapter.set_segment_mask(session.segmentation_node, "femur", (labels == femur) | taken, session.volume_node)
    session.locked.add("femur")
    assert len(session.undo_stack) == 0, "a refinement not yet in the scene must not be undoable"

    assert session.apply(refinement, snapshot) == np.count_nonzero(added & ~taken)
    after = _scene_labels(session)
    assert (after[taken] == femur).all(), "the Update overwrote voxels the femur gained meanwhile"
    np.testing.assert_array_equal(after == value, added & ~taken)

    # Undo gives back exactly what the Update wrote; the femur keeps its voxels.
    assert session.undo() == CARTILAGE
    expected = labels.copy()
    expected[taken] = femur
    np.testing.assert_array_equal(_scene_labels(session), expected)


def test_an_update_whose_segment_was_locked_meanwhile_changes_nothing_and_leaves_no_undo_step(
        scene, schema, client, phantom_case):
    session, snapshot, refinement, labels, added = _refined_in_the_background(scene, schema, client, phantom_case)
    session.locked.add(CARTILAGE)
    with pytest.raises(ValueError, match="locked while the server worked"):
        session.apply(refinement, snapshot)
    np.testing.assert_array_equal(_scene_labels(session), labels)
    assert len(session.undo_stack) == 0 and session.undo() is None


def test_a_segment_the_schema_does_not_know_keeps_its_voxels_through_an_update_and_its_undo(
        scene, schema, client, phantom_case):
    """The annotator's own segment (a note, a lesion) exports as background; an Update must still treat
    its voxels as another segment's."""
    session, snapshot, refinement, labels, added = _refined_in_the_background(scene, schema, client, phantom_case)
    value = schema.by_key[CARTILAGE].value
    mine = np.zeros(labels.shape, bool)
    mine.reshape(-1)[np.flatnonzero(added)[::4]] = True
    session.segmentation_node.GetSegmentation().AddEmptySegment("my_notes", "my notes")
    mrml_adapter.set_segment_mask(session.segmentation_node, "my_notes", mine, session.volume_node)

    assert session.apply(refinement, snapshot) == np.count_nonzero(added & ~mine)
    after = _scene_labels(session)  # no two segments on one voxel
    np.testing.assert_array_equal(after == value, added & ~mine)
    assert session.undo() == CARTILAGE
    np.testing.assert_array_equal(_scene_labels(session), labels)
    np.testing.assert_array_equal(mrml_adapter.segment_mask(session.segmentation_node, "my_notes",
                                                            session.volume_node), mine)


def _intact_case(scene, schema, phantom_case):
    """A session on the true labels (femoral cartilage intact) and three cartilage voxels (i, j, k) a few
    voxels apart: where the annotator clicks."""
    image_id, image, truth = phantom_case
    value = schema.by_key[CARTILAGE].value
    volume = PixelVolume.from_sitk(image)
    volume_node = mrml_adapter.volume_node_from_pixels(scene, volume, "knee")
    segmentation = mrml_adapter.segmentation_from_labels(scene, volume.with_array(truth), schema, volume_node)
    voxels = np.argwhere(truth == value)
    first = voxels[len(voxels) // 2]
    distance = np.linalg.norm(voxels - first, axis=1)
    near = voxels[(distance >= 2) & (distance <= 4)]
    clicked = [tuple(int(c) for c in kji[::-1]) for kji in (first, near[0], near[-1])]
    return SceneRefinement(image_id, segmentation, volume_node, schema), truth, value, clicked


def test_undo_takes_back_the_points_of_the_update_so_the_next_update_does_not_redo_it(
        scene, schema, client, phantom_case):
    """A mistaken negative click, its Update undone: the next Update must not send that click again (the
    server makes every click's voxel follow its sign, so it would cut the cartilage there again)."""
    session, truth, value, (wrong, right, more) = _intact_case(scene, schema, phantom_case)
    minus, plus = session.points_node(CARTILAGE, False), session.points_node(CARTILAGE, True)
    _place(session, CARTILAGE, False, wrong)
    session.update(client, CARTILAGE)
    i, j, k = wrong
    assert _scene_labels(session)[k, j, i] == 0
    assert session.undo() == CARTILAGE
    np.testing.assert_array_equal(_scene_labels(session), truth)
    assert minus.GetNumberOfControlPoints() == 0, "the undone Update's point still stands"

    _place(session, CARTILAGE, True, right)
    assert session.export().clicks.of(CARTILAGE) == [(right, True)]
    session.update(client, CARTILAGE)
    assert _scene_labels(session)[k, j, i] == value, "the undone negative click was applied again"

    # Each Undo takes back only the points of its own Update: the earlier point was that Update's.
    _place(session, CARTILAGE, True, more)
    session.update(client, CARTILAGE)
    assert session.undo() == CARTILAGE
    assert session.clicks_now().of(CARTILAGE) == [(right, True)] and plus.GetNumberOfControlPoints() == 1
    assert session.undo() == CARTILAGE
    assert session.clicks_now().of(CARTILAGE) == [] and session.undo() is None


def test_undo_refuses_to_change_a_locked_segment_and_keeps_the_step(scene, schema, client, phantom_case):
    session, snapshot, refinement, labels, added = _refined_in_the_background(scene, schema, client, phantom_case)
    session.apply(refinement, snapshot)
    refined = _scene_labels(session)
    session.locked.add(CARTILAGE)  # the annotator is done with it
    with pytest.raises(RefinementError, match="'Femoral cartilage' is locked"):
        session.undo()
    np.testing.assert_array_equal(_scene_labels(session), refined)
    assert len(session.undo_stack) == 1 and session.points_node(CARTILAGE, True).GetNumberOfControlPoints() == 1

    session.locked.discard(CARTILAGE)
    assert session.undo() == CARTILAGE
    np.testing.assert_array_equal(_scene_labels(session), labels)
