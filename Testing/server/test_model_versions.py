"""Choosing the model version by hand: promote a kept version (roll back), train on from one that was
not promoted, and clear refusals for names that are not kept versions (paths among them)."""

from __future__ import annotations

import pytest
import torch
from kneeai_testing import ROOT, TINY_MODEL_CONF

from KneeAILib.schema import KneeSchema
from lib.configs.knee_segmentation import model_config_from_conf
from lib.model_store import DamagedFile, ModelStore
from lib.networks import KneeNetworks

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")


@pytest.fixture
def store(tmp_path):
    """v0001 promoted by training; v0002 trained on from it, better elsewhere, not promoted; v0003
    reserved by a run that was stopped before it saved anything."""
    store = ModelStore(tmp_path / "model")
    config = model_config_from_conf(TINY_MODEL_CONF)
    for seed, (version, metrics) in enumerate([
        ("v0001", {"mean_dice": 0.70, "best_epoch": 9, "options": {"init": "scratch", "started_from": None}}),
        ("v0002", {"mean_dice": 0.69, "best_epoch": 6, "promotion_bar": 0.70,
                   "options": {"init": "promoted", "started_from": "v0001"}}),
    ]):
        assert store.new_version() == version
        store.save(version, KneeNetworks.create(config, seed=seed).state(), metrics)
    store.promote("v0001", 0.70)
    store.new_version()
    return store


def test_versions_are_listed_with_their_scores_and_the_one_that_serves(store, capsys):
    import model_versions

    rows = model_versions.main([str(store.root)])
    assert [(r["version"], r["serving"], r["validation_mean_dice"], r["started_from"]) for r in rows] == [
        ("v0001", True, 0.70, "scratch"), ("v0002", False, 0.69, "v0001")]
    out = capsys.readouterr().out
    assert "* v0001" in out and "v0003" not in out  # a reserved, empty version is no version


def test_promoting_by_hand_switches_what_serves_and_says_who_chose_it(store):
    import model_versions

    rows = model_versions.main([str(store.root), "--promote", "v0002"])
    assert [r["version"] for r in rows if r["serving"]] == ["v0002"]
    assert store.promoted() == {"version": "v0002", "mean_dice": 0.69, "by": "hand"}
    version, state = store.load_promoted()
    expected = KneeNetworks.create(model_config_from_conf(TINY_MODEL_CONF), seed=1).state()
    assert version == "v0002"
    assert all(torch.equal(state["fine"][key], tensor) for key, tensor in expected["fine"].items())


def test_a_record_edited_by_hand_with_wrong_types_is_listed_and_promoted_not_a_crash(store):
    """"options": null or a score written as text stopped the listing (TypeError), which is the tool used
    to look at and repair a model folder."""
    import json

    import model_versions

    record = store.versions_dir / "v0002" / "metrics.json"
    record.write_text(json.dumps({"mean_dice": "0.69", "best_epoch": "6", "options": None}))
    rows = model_versions.main([str(store.root), "--promote", "v0002"])
    assert rows[1] == {"version": "v0002", "serving": True, "validation_mean_dice": None, "best_epoch": None,
                       "started_from": None, "promotion_bar": None}
    assert store.promoted() == {"version": "v0002", "mean_dice": None, "by": "hand"}


@pytest.mark.parametrize("name, message", [
    ("v0009", "no model version v0009"), ("v0003", "no model version v0003"),
    ("../model/versions/v0001", "is not a model version name"), ("latest", "is not a model version name"),
    ("v0001\n", "is not a model version name")])
def test_a_name_that_is_not_a_kept_version_is_refused_and_nothing_changes(store, name, message):
    import model_versions

    with pytest.raises(SystemExit, match=message):
        model_versions.main([str(store.root), "--promote", name])
    assert store.promoted()["version"] == "v0001"
    with pytest.raises(ValueError, match=message):
        store.promote(name, 0.5)
    assert store.promoted()["version"] == "v0001"


def test_training_goes_on_from_a_version_that_was_not_promoted(store, tmp_path):
    """With the learning rate at 0 the new version's weights are its starting point's: v0002's, not
    the promoted v0001's; an unknown starting point stops the run before it reserves a version."""
    from monailabel.datastore.local import LocalDatastore

    from lib.synthesis.sample_dataset import generate_sample_dataset
    from lib.trainers.knee_segmentation import KneeSegmentationTrainer

    generate_sample_dataset(tmp_path / "studies", n_cases=2, n_labelled=2, seed=0)
    datastore = LocalDatastore(str(tmp_path / "studies"), extensions=["*.nii.gz"], auto_reload=False)
    trainer = KneeSegmentationTrainer(store, SCHEMA, model_config_from_conf(TINY_MODEL_CONF), "test")
    for bad in ("v0009", "promted"):
        with pytest.raises(ValueError, match="v0009|init must be"):
            trainer({"max_epochs": 1, "iterations_per_epoch": 1, "init": bad, "device": "cpu"}, datastore)
    assert not (store.versions_dir / "v0004").exists()

    summary = trainer({"max_epochs": 1, "iterations_per_epoch": 1, "learning_rate": 0.0, "init": "v0002",
                       "device": "cpu"}, datastore)
    assert store.metrics(summary["version"])["options"]["started_from"] == "v0002"
    new = torch.load(store.model_path(summary["version"]), weights_only=True)
    start = store.load_version("v0002")
    for net in ("coarse", "fine"):
        for key, tensor in start[net].items():
            assert torch.equal(new[net][key], tensor), (net, key)


def test_the_training_command_refuses_an_unknown_starting_version_before_any_work(tmp_path):
    import train_from_label_maps

    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="--init: no model version v0004"):
        train_from_label_maps.main([str(tmp_path), "--convention", "oai_zib", "--out", str(work),
                                    "--init", "v0004", "--device", "cpu"])
    assert not (work / "studies").exists()


@pytest.mark.parametrize("damage", ['{"version": "v0001", "mean_di', '{"version": "v0007"}', '["v0001"]'])
def test_a_damaged_promotion_record_is_reported_not_served_as_untrained_and_can_be_repaired(store, damage, capsys):
    """Read as missing, a damaged promoted.json made the server run the untrained network unnoticed and
    let a next training run promote anything (its bar was 'nothing promoted')."""
    import model_versions

    (store.root / "promoted.json").write_text(damage)
    with pytest.raises(DamagedFile, match="promoted.json"):
        store.promoted()
    with pytest.raises(DamagedFile):
        store.load_promoted()
    assert store.promoted_version("untrained").startswith("damaged: ")  # what /info shows
    assert store.training_stats()["promoted_version"].startswith("damaged: ")  # /info's train_stats too
    rows = model_versions.main([str(store.root), "--promote", "v0001"])
    assert "no version serves" in capsys.readouterr().err
    assert [r["version"] for r in rows if r["serving"]] == ["v0001"] and store.promoted()["version"] == "v0001"


def test_a_damaged_split_stops_training_instead_of_being_drawn_again(tmp_path):
    """The validation knees are fixed in split.json so that Dice figures compare; a damaged file drawn
    again silently would move knees between training and validation."""
    from lib.trainers.training_data import fixed_split

    items = [{"image": f"/d/k{i}.nii.gz", "label": f"/d/labels/k{i}.nii.gz"} for i in range(6)]
    split_file = tmp_path / "split.json"
    fixed_split(items, split_file)
    kept = split_file.read_text()
    split_file.write_text(kept[: len(kept) // 2])
    with pytest.raises(DamagedFile, match="split.json"):
        fixed_split(items, split_file)
    assert split_file.read_text() == kept[: len(kept) // 2]  # left for a person to restore
