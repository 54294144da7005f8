"""The KneeAI server, as a real process, driven by the stock MONAI Label Slicer plugin's client."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
import SimpleITK as sitk

from kneeai_testing import DESS_ECHO1, ROOT, load_stock_client, require
from KneeAILib.schema import KneeSchema

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(knee_server, tmp_path_factory):
    module = load_stock_client()
    return module.MONAILabelClient(knee_server, tmpdir=str(tmp_path_factory.mktemp("client")))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_info_serves_the_knee_schema(client):
    info = client.info()
    schema = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")
    assert info["labels"] == {s.name: s.value for s in schema.structures}
    served = KneeSchema.from_dict(info["knee_schema"])
    assert [(s.key, s.name, s.value, s.color) for s in served.structures] == [
        (s.key, s.name, s.value, s.color) for s in schema.structures
    ]
    assert "knee_segmentation" in info["models"] and "knee_segmentation" in info["trainers"]
    assert {"random", "knee_uncertainty"} <= set(info["strategies"])


def test_segmentation_of_real_dess_comes_back_in_its_original_geometry(client):
    image = sitk.ReadImage(str(require(DESS_ECHO1)))
    label_file, params = client.infer("knee_segmentation", "dess_3t_echo1", {})
    label = sitk.ReadImage(label_file)
    assert label.GetSize() == image.GetSize() == (512, 512, 80)
    np.testing.assert_allclose(label.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), image.GetDirection(), atol=1e-6)
    values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
    assert values <= set(range(11)), values
    assert params["model_version"] and "total_s" in params["latencies"]


@pytest.mark.parametrize("strategy", ["random", "knee_uncertainty"])
def test_next_sample_returns_an_unlabelled_case(client, strategy):
    sample = client.next_sample(strategy, {})
    datastore = client.datastore()
    unlabelled = [k for k, v in datastore["objects"].items() if "final" not in v.get("labels", {})]
    assert sample["id"] in unlabelled


def test_uncertainty_strategy_picks_the_highest_stored_score(client, knee_server):
    """Of the unlabelled cases no annotator holds (handed out in the last hour; the tests above took some),
    the one with the highest stored score; of all of them when every one is held."""
    from lib.activelearning.hand_outs import RESERVED_SECONDS, last_handed_out

    before = client.datastore()["objects"]
    unlabelled = {i: o for i, o in before.items() if "final" not in o.get("labels", {})}
    free = [i for i, o in unlabelled.items() if time.time() - last_handed_out(o["image"]["info"]) >= RESERVED_SECONDS]
    sample = client.next_sample("knee_uncertainty", {})
    objects = client.datastore()["objects"]
    scores = {image_id: objects[image_id]["image"]["info"]["knee_uncertainty"]["score"]
              for image_id in (free or unlabelled)}
    assert sample["id"] == max(scores, key=scores.get)


def test_submitted_label_is_stored_in_the_datastore(client, knee_server, sample_studies, tmp_path):
    image_id = "knee_phantom_004"
    image = sitk.ReadImage(str(sample_studies / f"{image_id}.nii.gz"))
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)
    labels[10:30, 20:40, 30:50] = 1
    labels[30:34, 20:40, 30:50] = 5
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    label_file = tmp_path / "edited.nii.gz"
    sitk.WriteImage(label_image, str(label_file))

    client.save_label(image_id, str(label_file), tag="final", params={})

    objects = client.datastore()["objects"]
    assert "final" in objects[image_id]["labels"]
    stored = sitk.ReadImage(str(sample_studies / "labels" / "final" / f"{image_id}.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(stored), labels)
    assert stored.GetSize() == image.GetSize()
    np.testing.assert_allclose(stored.GetOrigin(), image.GetOrigin(), atol=1e-4)


def test_training_round_writes_a_new_promoted_model_version(client, knee_server):
    before = get_json(f"{knee_server}/info/")["train_stats"]["knee_segmentation"]
    client.train_start("knee_segmentation", {"max_epochs": 2, "iterations_per_epoch": 2, "seed": 1})
    deadline = time.monotonic() + 600
    status = {}
    while time.monotonic() < deadline:
        status = client.train_status()
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(2)
    assert status.get("status") == "DONE", status
    log = "\n".join(status.get("details", []))
    assert "epoch 2/2" in log  # progress lines reach MONAI Label's train status

    info = get_json(f"{knee_server}/info/")
    stats = info["train_stats"]["knee_segmentation"]
    assert len(stats["versions"]) == len(before.get("versions", {})) + 1
    new_version = max(stats["versions"], key=lambda v: int(v[1:]))
    assert stats["version"] == new_version and stats["status"] == "done"
    assert set(stats["val_dice"]) >= {"femur", "tibia"}  # per-structure validation Dice
    assert info["model_version"] == stats["promoted_version"] is not None

    # Inference now runs the promoted version.
    _, params = client.infer("knee_segmentation", "knee_phantom_003", {})
    assert params["model_version"] == info["model_version"]


def test_uploaded_nrrd_volume_is_segmented_in_its_own_geometry(client, sample_studies, tmp_path):
    image = sitk.ReadImage(str(sample_studies / "knee_phantom_001.nii.gz"))
    # A different, oblique geometry, as a scanner would write it.
    image.SetDirection(sitk.VersorTransform((0.0, 0.0, 1.0), 0.3).GetMatrix())
    image.SetOrigin((10.0, -20.0, 5.5))
    path = tmp_path / "uploaded_knee.nrrd"
    sitk.WriteImage(image, str(path))
    assert client.upload_image(str(path), image_id="uploaded_knee")["image"] == "uploaded_knee"

    label_file, _ = client.infer("knee_segmentation", "uploaded_knee", {})
    label = sitk.ReadImage(label_file)
    assert label.GetSize() == image.GetSize()
    np.testing.assert_allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), image.GetDirection(), atol=1e-6)


def test_stopping_a_training_run_keeps_the_promoted_model(client, knee_server):
    promoted_before = get_json(f"{knee_server}/info/")["model_version"]
    client.train_start("knee_segmentation", {"max_epochs": 500, "iterations_per_epoch": 1, "init": "scratch"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        stats = get_json(f"{knee_server}/info/")["train_stats"]["knee_segmentation"]
        if stats.get("status") == "running" and stats.get("epoch", 0) >= 2:
            break
        time.sleep(1)
    assert stats.get("status") == "running", stats
    client.train_stop()
    deadline = time.monotonic() + 60
    while client.train_status(check_if_running=True) and time.monotonic() < deadline:
        time.sleep(1)

    info = get_json(f"{knee_server}/info/")
    promoted = info["train_stats"]["knee_segmentation"]["promoted_version"]
    assert promoted is not None
    # The promoted model is whole and is what inference runs, whichever run wrote it.
    _, params = client.infer("knee_segmentation", "knee_phantom_003", {})
    assert params["model_version"] == promoted == info["model_version"]
    assert promoted_before != "untrained"
