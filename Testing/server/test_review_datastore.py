"""A lab with several annotators: what the datastore, the uncertainty strategy, the scores, the DICOM import
and the model records must hold when processes and people work at the same time."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
from kneeai_testing import MESE_DICOM, ROOT, TINY_MODEL_CONF, require

from KneeAILib.schema import KneeSchema
from lib.datastore import KneeDatastore
from lib.model_store import ModelStore

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")
SHAPE = (24, 28, 32)


def write_volume(path, seed: int) -> None:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).normal(100, 30, SHAPE).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(path))


def write_label(path) -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:10, 5:10, 5:10] = 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(path))


@pytest.fixture
def studies(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    for k in range(3):
        write_volume(folder / f"knee_{k}.nii.gz", k)
    return folder


def open_datastore(studies) -> KneeDatastore:
    return KneeDatastore(str(studies), SCHEMA, extensions=["*.nii.gz"])


# -- the datastore record shared by the server and its task processes ---------------------------------------
def test_what_another_process_writes_to_the_record_is_kept_and_seen(studies, tmp_path):
    """The server and MONAI Label's scoring process each hold a datastore on the folder. Each rewrote the
    record from its own memory: a label submitted while scoring ran vanished from the record, and the
    scores were dropped by the server's next write (and never seen by the server)."""
    server = open_datastore(studies)
    scoring = open_datastore(studies)  # started before the label below was submitted
    write_label(tmp_path / "label.nii.gz")
    server.save_label("knee_0", str(tmp_path / "label.nii.gz"), "final", {"client_id": "anna"})
    scoring.update_image_info("knee_1", {"knee_uncertainty": {"score": 0.5}})

    record = json.loads((studies / "datastore_v2.json").read_text())
    assert record["objects"]["knee_0"]["labels"]["final"]["info"]["client_id"] == "anna"
    assert server.get_image_info("knee_1")["knee_uncertainty"] == {"score": 0.5}

    server.update_image_info("knee_2", {"strategy": {"random": {"ts": 1}}})
    record = json.loads((studies / "datastore_v2.json").read_text())
    assert record["objects"]["knee_1"]["image"]["info"]["knee_uncertainty"] == {"score": 0.5}
    assert "final" in record["objects"]["knee_0"]["labels"]
    assert sorted(scoring.get_unlabeled_images()) == ["knee_1", "knee_2"]


# -- the uncertainty strategy and its scores -----------------------------------------------------------------
@pytest.fixture
def uncertainty(tmp_path):
    from lib.activelearning.uncertainty import MostUncertain
    from lib.configs.knee_segmentation import model_config_from_conf
    from lib.infers.knee_segmentation import KneeSegmentation
    from lib.networks import KneeNetworks
    from lib.scoring.tta_uncertainty import TTAUncertaintyScoring

    config = model_config_from_conf(TINY_MODEL_CONF)
    store = ModelStore(tmp_path / "model")
    version = store.new_version()
    store.save(version, KneeNetworks.create(config, seed=1).state(), {"mean_dice": 0.5})
    store.promote(version, 0.5)
    scoring = TTAUncertaintyScoring(KneeSegmentation(store, SCHEMA, config, "segmentation"))
    return store, config, scoring, MostUncertain(scoring)


def hand_out(strategy, datastore, client_id=None):
    """What MONAI Label's /activelearning endpoint does: ask the strategy, then record the hand-out in the
    image's info (monailabel.endpoints.activelearning.sample)."""
    result = strategy({"strategy": "knee_uncertainty", "client_id": client_id, "device": "cpu"}, datastore)
    if result:
        datastore.update_image_info(result["id"], {"strategy": {"knee_uncertainty": {
            "ts": int(time.time()), "client_id": client_id}}})
    return result


def test_two_annotators_asking_one_after_the_other_get_different_cases(studies, uncertainty):
    strategy = uncertainty[3]
    datastore = open_datastore(studies)
    first = hand_out(strategy, datastore, "anna")
    second = hand_out(strategy, datastore, "ben")
    third = hand_out(strategy, datastore, None)
    assert len({first["id"], second["id"], third["id"]}) == 3
    # The first was the most uncertain of all, the second the most uncertain of the rest.
    scores = {i: datastore.get_image_info(i)["knee_uncertainty"]["score"] for i in datastore.list_images()}
    assert first["id"] == max(scores, key=scores.get)
    assert scores[first["id"]] >= scores[second["id"]] >= scores[third["id"]]
    # Every case is with an annotator: rather than none, the most uncertain again (the one asking may be
    # the annotator who was handed it, back after a restart).
    assert hand_out(strategy, datastore, "carl")["id"] == first["id"]


def test_the_random_strategy_skips_cases_with_an_annotator_and_never_fails_when_all_are(studies):
    """MONAI Label's Random weighed cases by the time since its own last hand-out: a case the uncertainty
    strategy handed out counted as never handed out, and when every case was handed out within the same
    second all weights were 0 and /activelearning/random answered with a server error."""
    from lib.activelearning.hand_outs import RandomUnreserved

    strategy, datastore = RandomUnreserved(), open_datastore(studies)
    now = int(time.time())
    datastore.update_image_info("knee_0", {"strategy": {"knee_uncertainty": {"ts": now}}})
    datastore.update_image_info("knee_1", {"strategy": {"random": {"ts": now}}})
    picked = {strategy({"strategy": "random"}, datastore)["id"] for _ in range(20)}
    assert picked == {"knee_2"}
    datastore.update_image_info("knee_2", {"strategy": {"random": {"ts": now}}})
    picked = {strategy({"strategy": "random"}, datastore)["id"] for _ in range(40)}
    assert picked == {"knee_0", "knee_1", "knee_2"}  # all with annotators: any of them, no error


def test_scores_are_made_again_when_the_promoted_version_is_saved_again_with_better_weights(studies, uncertainty):
    """Training saves each better epoch under the same version name: scores stamped with the version name
    alone passed for current and ranked the cases by the first epoch's weights."""
    from lib.networks import KneeNetworks

    store, config, scoring, _ = uncertainty
    datastore = open_datastore(studies)
    first = scoring({"device": "cpu"}, datastore)["scored"]
    assert set(first) == {"knee_0", "knee_1", "knee_2"}
    assert scoring({"device": "cpu"}, datastore)["scored"] == {}  # nothing changed: nothing to do

    time.sleep(0.01)
    store.save("v0001", KneeNetworks.create(config, seed=7).state(), {"mean_dice": 0.6})  # a better epoch
    store.promote("v0001", 0.6)
    again = scoring({"device": "cpu"}, datastore)["scored"]
    assert set(again) == {"knee_0", "knee_1", "knee_2"}
    assert again != first
    for image_id, score in again.items():
        assert datastore.get_image_info(image_id)["knee_uncertainty"]["score"] == score


def test_an_image_without_contrast_is_not_scored(studies, uncertainty):
    """A constant image (or NaN voxels) gave a score from NaN probabilities; it is skipped, the others scored."""
    flat = sitk.GetImageFromArray(np.full(SHAPE, 100.0, np.float32))
    flat.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(flat, str(studies / "knee_flat.nii.gz"))
    scored = uncertainty[2]({"device": "cpu"}, open_datastore(studies))["scored"]
    assert set(scored) == {"knee_0", "knee_1", "knee_2"}


# -- DICOM folders in the studies folder ---------------------------------------------------------------------
def test_a_dicom_folder_is_imported_beside_a_study_whose_name_begins_with_its_own(tmp_path):
    """'knee1' was taken for imported because 'knee10.nii.gz' matched the pattern knee1*.nii.gz; a folder
    named with characters an id may not hold became an image every request about it refused."""
    from lib.datastore import check_id
    from lib.dicom_import import import_dicom_folders

    studies = tmp_path / "studies"
    studies.mkdir()
    write_volume(studies / "knee10.nii.gz", 0)
    shutil.copytree(require(MESE_DICOM), studies / "knee1")
    shutil.copytree(MESE_DICOM, studies / "Patient [2]")
    written = import_dicom_folders(studies)
    names = sorted(p.name for p in written)
    assert "knee1_echo1.nii.gz" in names
    assert "Patient__2__echo1.nii.gz" in names
    for path in written:
        check_id(path.name[: -len(".nii.gz")])
    assert import_dicom_folders(studies) == []  # imported once, not again at every start


# -- model records -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["[0.7]", "null", "3"])
def test_a_version_record_that_is_not_an_object_is_reported_not_a_crash(uncertainty, text, capsys):
    """/info shows the training stats (every version's Dice): a metrics.json edited by hand into a list
    raised AttributeError there, and in the model_versions.py listing used to repair the folder."""
    import model_versions

    store = uncertainty[0]
    (store.versions_dir / "v0001" / "metrics.json").write_text(text)
    (store.root / "train_stats.json").write_text(text)
    stats = store.training_stats()
    assert stats["versions"] == {"v0001": None} and stats["promoted_version"] == "v0001"
    assert "not a record" in stats["damaged"]
    assert "not a record" in store.metrics("v0001")["damaged"]
    rows = model_versions.main([str(store.root)])
    assert [(r["version"], r["serving"]) for r in rows] == [("v0001", True)]
