"""knee_refinement / knee_scribbles on a REAL server, driven by KneeAILib's client: the guarantees,
clear 4xx errors, the Update round trip with undo, and an Update without a server."""

from __future__ import annotations

import numpy as np
import pytest

from KneeAILib.client import KneeAIClient, ServerError, ServerUnreachable
from KneeAILib.refinement import ClickSet, UndoStack, refine_segment
from KneeAILib.volume import PixelVolume
from kneeai_testing import free_port
from lib.interactive.clicks import largest_error_click

CARTILAGE = "femoral_cartilage"


def _damaged(truth, value, centre_kji, radius=5):
    """The true labels with a ball of structure ``value`` missing (an automatic result's error)."""
    labels = truth.copy()
    zz, yy, xx = np.ogrid[: truth.shape[0], : truth.shape[1], : truth.shape[2]]
    k, j, i = centre_kji
    labels[((zz - k) ** 2 + (yy - j) ** 2 + (xx - i) ** 2 <= radius**2) & (truth == value)] = 0
    return labels


@pytest.fixture(scope="module")
def damaged(phantom_case, schema):
    image_id, image, truth = phantom_case
    value = schema.by_key[CARTILAGE].value
    voxels = np.argwhere(truth == value)
    labels = _damaged(truth, value, voxels[len(voxels) // 2])
    click = largest_error_click(labels == value, truth == value, image.GetSpacing()[::-1])
    return image_id, PixelVolume.from_sitk(image), truth, labels, value, click


def test_update_fixes_the_missed_region_changes_nothing_else_and_undo_restores(client, damaged, schema):
    image_id, image, truth, labels, value, click = damaged
    volume = image.with_array(labels.copy())
    clicks, undo = ClickSet(), UndoStack()
    clicks.add(CARTILAGE, click.ijk, click.positive)
    refinement = refine_segment(client, image_id, volume, CARTILAGE, clicks, {"femur"}, schema)
    undo.push(refinement.edit)
    params = refinement.params
    assert params["method"] == "random_walker" and params["structure"] == CARTILAGE
    after = volume.array
    changed = after != labels
    assert changed.any(), "the click added nothing"
    assert set(np.unique(labels[changed])) == {0} and set(np.unique(after[changed])) == {value}
    others = ~np.isin(labels, [0, value])  # femur (locked) and every other structure
    np.testing.assert_array_equal(after[others], labels[others])
    # The missed region is (partly) recovered. Dice itself is the benchmark's business: the random
    # walker fallback can leak into background (BENCHMARKS.md (Interactive)).
    i, j, k = click.ijk
    assert after[k, j, i] == value
    recovered = np.count_nonzero((after == value) & (truth == value))
    assert recovered > np.count_nonzero((labels == value) & (truth == value))
    undo.undo(after)
    np.testing.assert_array_equal(after, labels)


def test_server_never_writes_other_structures_even_when_clicked_on(client, damaged, schema, tmp_path):
    """A positive click ON a femur voxel, refining cartilage: the femur voxel stays femur."""
    image_id, image, truth, labels, value, click = damaged
    femur = np.argwhere(labels == schema.by_key["femur"].value)[0]
    volume = image.with_array(labels.copy())
    clicks = ClickSet()
    clicks.add(CARTILAGE, (int(femur[2]), int(femur[1]), int(femur[0])), True)
    refine_segment(client, image_id, volume, CARTILAGE, clicks, set(), schema)
    others = ~np.isin(labels, [0, value])
    np.testing.assert_array_equal(volume.array[others], labels[others])


@pytest.mark.parametrize("params, status, words", [
    ({"structure": "kneecap", "foreground": [[5, 5, 5]]}, 400, "Unknown structure"),
    ({"structure": CARTILAGE, "foreground": [[5, 5, 100000]]}, 422, "outside the image"),
    ({"structure": CARTILAGE, "foreground": [[-1, 5, 5]]}, 422, "outside the image"),
    ({"structure": CARTILAGE, "foreground": [[5, 5, 5]], "locked": [CARTILAGE]}, 409, "locked"),
    ({"structure": CARTILAGE}, 400, "No clicks"),
    # The client writes NaN into the JSON and MONAI Label reads it back: an empty 500 before.
    ({"structure": CARTILAGE, "foreground": [[float("nan"), 5, 5]]}, 400, "'foreground'[0]"),
])
def test_bad_requests_get_a_clear_4xx(client, damaged, tmp_path, params, status, words):
    image_id, image, truth, labels, value, click = damaged
    label_file = tmp_path / "label.nii.gz"
    from KneeAILib.volume import write_volume_atomically

    write_volume_atomically(image.with_array(labels), label_file)
    with pytest.raises(ServerError) as error:
        client.infer(image_id=image_id, model="knee_refinement", params=params, label_file=label_file)
    assert error.value.status_code == status and words in error.value.detail


def test_refinement_without_a_label_map_is_refused(client, damaged):
    with pytest.raises(ServerError) as error:
        client.infer(image_id=damaged[0], model="knee_refinement",
                     params={"structure": CARTILAGE, "foreground": [[5, 5, 5]]})
    assert error.value.status_code == 422 and "label" in error.value.detail


def test_scribbles_fill_the_missed_region_and_leave_other_structures(client, damaged, schema, tmp_path):
    image_id, image, truth, labels, value, click = damaged
    i, j, k = click.ijk
    stroke = [[i + d, j, k] for d in range(-2, 3) if truth[k, j, i + d] == value]
    from KneeAILib.volume import read_volume_file, write_volume_atomically

    label_file = tmp_path / "label.nii.gz"
    write_volume_atomically(image.with_array(labels), label_file)
    result = client.infer(image_id=image_id, model="knee_scribbles", label_file=label_file,
                          params={"structure": CARTILAGE, "foreground": stroke})
    answer = read_volume_file(result.label_path).array
    assert answer.shape == labels.shape and result.params["method"] == "random_walker_scribbles"
    others = ~np.isin(labels, [0, value])
    np.testing.assert_array_equal(answer[others], labels[others])
    recovered = np.count_nonzero((answer == value) & (truth == value))
    assert recovered > np.count_nonzero((labels == value) & (truth == value))


def test_update_without_a_server_keeps_the_users_edits(damaged, schema, tmp_path):
    image_id, image, truth, labels, value, click = damaged
    edited = labels.copy()
    edited[10:12, 10:12, 10:12] = value  # the user's own paint strokes
    volume = image.with_array(edited.copy())
    clicks = ClickSet()
    clicks.add(CARTILAGE, click.ijk, True)
    offline = KneeAIClient(f"http://127.0.0.1:{free_port()}", download_dir=tmp_path, connect_timeout=1, retries=0)
    with pytest.raises(ServerUnreachable):
        refine_segment(offline, image_id, volume, CARTILAGE, clicks, set(), schema)
    np.testing.assert_array_equal(volume.array, edited)


def test_the_label_must_be_the_uploaded_file_on_the_images_grid(client, damaged, sample_studies, tmp_path):
    """MONAI Label lays the request's params over the uploaded files' paths: a 'label' naming a file on
    the server (another case's label, a folder) is refused, and so is an upload of the right size whose
    origin is not the image's (it would be refined where it is not)."""
    image_id, image, truth, labels, value, click = damaged
    params = {"structure": CARTILAGE, "foreground": [list(click.ijk)]}
    for server_path in (sample_studies / "labels" / "final" / f"{image_id}.nii.gz", sample_studies):
        assert server_path.exists()
        with pytest.raises(ServerError) as error:
            client.infer(image_id=image_id, model="knee_refinement", params={**params, "label": str(server_path)})
        assert error.value.status_code == 422 and "label file sent with the request" in error.value.detail

    from KneeAILib.volume import write_volume_atomically

    shifted = PixelVolume(labels, image.spacing, tuple(o + 7.5 for o in image.origin), image.direction)
    label_file = write_volume_atomically(shifted, tmp_path / "shifted.nii.gz")
    with pytest.raises(ServerError) as error:
        client.infer(image_id=image_id, model="knee_refinement", params=params, label_file=label_file)
    assert error.value.status_code == 422 and "not on the image's grid" in error.value.detail
