"""The write-back guarantees of a refinement, server side (refine_labels) and client side (merge):
only voxels of background or of the refined structure change, and only between the two."""

from __future__ import annotations

import numpy as np
import pytest

from KneeAILib.refinement import ClickSet, RefinementError, UndoStack, merge_into_segment, refinement_request
from KneeAILib.volume import PixelVolume
from lib.interactive.refine import Refiner, random_walker_proposer, refine_labels


def _noisy_labels(seed=0, shape=(24, 40, 40)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 11, shape).astype(np.uint8)


def _everything(image, current, fg, bg, spacing):
    return np.ones(current.shape, bool)  # a proposer that claims every voxel: the worst case


def _nothing(image, current, fg, bg, spacing):
    return np.zeros(current.shape, bool)


@pytest.mark.parametrize("propose", [_everything, _nothing, random_walker_proposer(8.0, 3000.0)])
def test_server_refinement_changes_only_background_and_the_structure(propose):
    labels = _noisy_labels()
    image = np.random.default_rng(1).normal(size=labels.shape).astype(np.float32)
    new, summary = refine_labels(image, labels, 5, [(20, 20, 12)], [(10, 10, 5)], (1.0, 1.0, 1.0), propose,
                                 radius_mm=6.0, local_clicks_only=False)
    changed = new != labels
    assert set(np.unique(labels[changed])) <= {0, 5} and set(np.unique(new[changed])) <= {0, 5}
    others = ~np.isin(labels, [0, 5])
    np.testing.assert_array_equal(new[others], labels[others])
    # Nothing changes farther than the radius from a click.
    k, j, i = np.nonzero(changed)
    far = np.minimum(np.sqrt((i - 20) ** 2 + (j - 20) ** 2 + (k - 12) ** 2),
                     np.sqrt((i - 10) ** 2 + (j - 10) ** 2 + (k - 5) ** 2))
    assert np.all(far <= 6.0)
    if labels[12, 20, 20] in (0, 5):
        assert new[12, 20, 20] == 5  # a positive click's voxel ends in the structure
    if labels[5, 10, 10] in (0, 5):
        assert new[5, 10, 10] == 0


def test_the_clicked_voxels_change_even_when_the_proposer_returns_the_current_mask_itself():
    """A proposer that proposes no change (an untrained network may) hands back its input array; the
    clicks are still the truth at their voxels, and the input is not written through."""
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[5, 5:15, 5:15] = 5
    new, summary = refine_labels(np.zeros(labels.shape, np.float32), labels, 5, [(2, 2, 5)], [(10, 10, 5)],
                                 (1.0, 1.0, 1.0), lambda image, current, fg, bg, spacing: current, radius_mm=6.0,
                                 local_clicks_only=False)
    assert new[5, 2, 2] == 5 and new[5, 10, 10] == 0
    assert summary["added"] == 1 and summary["removed"] == 1


def test_client_merge_never_touches_locked_or_other_segments_and_undo_restores_exactly():
    labels = _noisy_labels(2)
    before = labels.copy()
    roi = ((5, 5, 2), (30, 35, 20))
    block = np.full((18, 30, 25), 5, np.uint8)  # an answer that claims the whole ROI for structure 5
    undo = UndoStack()
    undo.push(merge_into_segment(labels, roi, block, 5, locked_values={1, 2}, structure="femoral_cartilage"))
    changed = labels != before
    assert changed.any() and set(np.unique(before[changed])) == {0}  # only background became cartilage
    assert np.array_equal(labels[~np.isin(before, [0, 5])], before[~np.isin(before, [0, 5])])
    outside = np.ones(labels.shape, bool)
    outside[2:20, 5:35, 5:30] = False
    assert not changed[outside].any()
    undo.undo(labels)
    np.testing.assert_array_equal(labels, before)
    assert undo.undo(labels) is None

    with pytest.raises(RefinementError, match="locked"):
        merge_into_segment(labels, roi, block, 1, locked_values={1})
    np.testing.assert_array_equal(labels, before)

    # An undo never takes voxels another segment was given after the refinement.
    undo.push(merge_into_segment(labels, roi, block, 5, locked_values={1, 2}, structure="femoral_cartilage"))
    refined = labels.copy()
    painted = np.zeros(labels.shape, bool)
    painted.reshape(-1)[np.flatnonzero(refined != before)[::2]] = True
    labels[painted] = 3  # the annotator paints another structure over half of what the Update added
    undo.undo(labels)
    assert (labels[painted] == 3).all()
    np.testing.assert_array_equal(labels[~painted], before[~painted])


def test_undo_of_a_locked_structures_step_changes_nothing_and_keeps_the_step():
    labels = _noisy_labels(3)
    undo = UndoStack()
    undo.push(merge_into_segment(labels, ((0, 0, 0), (10, 10, 10)), np.full((10, 10, 10), 5, np.uint8), 5,
                                 locked_values=set(), structure="femoral_cartilage"))
    refined = labels.copy()
    with pytest.raises(RefinementError, match="locked"):
        undo.undo(labels, locked={"femoral_cartilage"})
    np.testing.assert_array_equal(labels, refined)
    assert len(undo) == 1
    assert undo.undo(labels, locked={"femur"}).structure == "femoral_cartilage"


def test_request_refuses_locked_unknown_and_outside_clicks(schema):
    volume = PixelVolume(np.zeros((10, 20, 30), np.uint8), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0),
                         (1, 0, 0, 0, 1, 0, 0, 0, 1))
    clicks = ClickSet()
    clicks.add("femur", (3, 4, 5), True)
    with pytest.raises(RefinementError, match="locked"):
        refinement_request(volume, "femur", clicks, {"femur"}, schema)
    with pytest.raises(RefinementError, match="Unknown structure"):
        refinement_request(volume, "kneecap", clicks, set(), schema)
    clicks.add("femur", (30, 4, 5), False)  # i = 30 is past the last column (29)
    with pytest.raises(RefinementError, match="outside the image"):
        refinement_request(volume, "femur", clicks, set(), schema)
    clicks.remove_last("femur")
    params, block = refinement_request(volume, "femur", clicks, {"tibia"}, schema, reach_mm=4.0)
    assert params["roi"] == [[0, 0, 3], [8, 9, 8]] and block.shape == (5, 9, 8)  # 4 mm = 2 slices along k
    assert params["foreground"] == [[3, 4, 5]] and params["last"] == [3, 4, 5] and params["locked"] == ["tibia"]


@pytest.mark.parametrize("newest_positive", [True, False])
def test_a_voxel_clicked_both_ways_takes_the_sign_of_the_newer_click(newest_positive, schema):
    """The annotator clicked a voxel with one sign, saw the update, and clicked it again with the other:
    the newer click (the focus) wins at its own voxel, on the server and in what the client sends."""
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[3:7, 3:7, 3:7] = 2
    voxel = (5, 5, 5)
    labels[5, 5, 5] = 0 if newest_positive else 2  # what the older click made of it
    unchanged = lambda image, current, fg, bg, spacing: current  # noqa: E731  (proposes nothing new)
    new, _ = refine_labels(np.zeros(labels.shape, np.float32), labels, 2, [voxel], [voxel], (1.0, 1.0, 1.0),
                           unchanged, focus=[voxel])
    assert new[5, 5, 5] == (2 if newest_positive else 0)

    volume = PixelVolume(labels, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    clicks = ClickSet()
    clicks.add("femur", (1, 1, 1), True)
    clicks.add("femur", voxel, not newest_positive)
    clicks.add("femur", voxel, newest_positive)
    params, _ = refinement_request(volume, "femur", clicks, set(), schema)
    newer, older = ("foreground", "background") if newest_positive else ("background", "foreground")
    assert [5, 5, 5] in params[newer] and [5, 5, 5] not in params[older] and params["last"] == [5, 5, 5]
    assert [1, 1, 1] in params["foreground"]


def _two_blobs(image, current, fg, bg, spacing):
    """A proposal of two separate blobs: one around the positive click at (10, 10, 10), one apart."""
    proposal = np.zeros(current.shape, bool)
    proposal[8:13, 8:13, 8:13] = True
    proposal[8:13, 8:13, 16:20] = True
    return proposal


def test_a_refiner_keeps_only_connected_changes_unless_told_to_trust_its_proposer():
    labels = np.zeros((20, 20, 24), np.uint8)
    image = np.zeros(labels.shape, np.float32)
    connected = Refiner("test", _two_blobs, radius_mm=15.0)
    new, _ = connected(image, labels, 5, [(10, 10, 10)], [], (1.0, 1.0, 1.0))
    assert new[10, 10, 10] == 5 and not new[10, 10, 18]  # the blob apart from the click is dropped
    trusting = Refiner("test", _two_blobs, radius_mm=15.0, keep_connected=False)
    new, _ = trusting(image, labels, 5, [(10, 10, 10)], [], (1.0, 1.0, 1.0))
    assert new[10, 10, 18] == 5 and np.count_nonzero(new) == 125 + 100


@pytest.mark.parametrize("positive", [True, False])
def test_a_refiner_that_follows_the_click_sign_only_adds_for_a_positive_click_and_only_removes_for_a_negative(positive):
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[4:16, 4:16, 4:10] = 5  # the structure: left half of a box; the proposer wants the right half
    image = np.zeros(labels.shape, np.float32)

    def right_half(image, current, fg, bg, spacing):
        proposal = np.zeros(current.shape, bool)
        proposal[4:16, 4:16, 8:16] = True
        return proposal

    click = (12, 10, 10) if positive else (5, 10, 10)  # inside the proposal's new part / its dropped part
    fg, bg = ([click], []) if positive else ([], [click])
    for follow in (False, True):
        refiner = Refiner("test", right_half, radius_mm=30.0, keep_connected=False, follow_click_sign=follow)
        new, summary = refiner(image, labels, 5, fg, bg, (1.0, 1.0, 1.0), focus=[click])
        if follow:
            assert summary["removed" if positive else "added"] == 0
            assert summary["added" if positive else "removed"] > 0
        else:
            assert summary["added"] > 0 and summary["removed"] > 0
