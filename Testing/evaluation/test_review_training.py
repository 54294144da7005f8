"""Training from label maps and the training tasks: bad server options and options the task would not
use stop the command before any work; the seed reaches the initial weights; a version's record states
the configuration its weights were trained with; the click network's validation phantoms never train."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
import torch
from kneeai_testing import SHARED_DATA, TINY_MODEL_CONF, require

from KneeAILib.schema import KneeSchema
from lib.configs.knee_refinement import click_config_from_conf
from lib.configs.knee_segmentation import model_config_from_conf
from lib.evaluation.cross_validation import KneeSplit
from lib.evaluation.label_maps import find_label_maps, resample_labels
from lib.model_store import ModelStore

TINY = [a for key, value in TINY_MODEL_CONF.items() for a in ("--conf", f"{key}={value}")]
QUICK = ["--variants", "1", "--validation-variants", "1", "--epochs", "1", "--iterations-per-epoch", "1",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def label_dir(tmp_path_factory):
    """Two real OAI-ZIB label maps at 2 mm (TINY_MODEL_CONF's fine spacing), in OAI-ZIB values."""
    folder = require(SHARED_DATA / "labels" / "oai_zib")
    out = tmp_path_factory.mktemp("oai_zib_two")
    for path in sorted(folder.glob("oai_zib_*.nii.gz"))[:2]:
        sitk.WriteImage(resample_labels(sitk.ReadImage(str(path)), 2.0), str(out / path.name), True)
    return out


@pytest.mark.parametrize("conf, message", [
    ("fine_spacing=abc", "--conf fine_spacing: expected three comma-separated numbers"),
    ("coarse_filters=0", "--conf coarse_filters: must be more than 0"),
    ("fine_patch=36,36,36", "--conf fine_patch: must be multiples of 8"),
    ("roi_margin_mm=nan", "--conf roi_margin_mm"),
    ("refinement_patch=16,30,30", "--conf refinement_patch: expected 'z,y,x', positive multiples of 8"),
    ("refinement_filters=x", "--conf refinement_filters"),
])
def test_a_bad_server_option_stops_the_command_before_any_work(label_dir, tmp_path, conf, message):
    """A value that could not be read was a traceback; zero filters or a crop the network cannot halve
    three times crashed at the first training step, after the whole datastore had been synthesised."""
    import train_from_label_maps

    with pytest.raises(SystemExit, match=message):
        train_from_label_maps.main([str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path / "w"),
                                    *QUICK, *TINY, "--conf", conf])
    assert not (tmp_path / "w" / "studies").exists()


def test_server_options_the_networks_cannot_use_are_refused_where_they_are_read():
    for conf in ({"coarse_patch": "30,30,30"}, {"fine_spacing": "0,1,1"}, {"fine_filters": "-1"},
                 {"max_roi_mm": "inf"}, {"coarse_filters": "8.5"}):
        with pytest.raises(ValueError, match="--conf"):
            model_config_from_conf(conf)
    assert model_config_from_conf({"roi_margin_mm": "0", "fine_patch": "40,48,56"}).fine_patch == (40, 48, 56)
    for conf in ({"refinement_patch": "0,32,32"}, {"refinement_filters": "0"}, {"refinement_reach_mm": "x"}):
        with pytest.raises(ValueError, match="--conf refinement_"):
            click_config_from_conf(conf)
    assert click_config_from_conf({"refinement_patch": "16,32,32"}).patch == (16, 32, 32)


@pytest.mark.parametrize("extra, message", [
    (["--synthetic-cases", "4"], "--synthetic-cases is an option of --model knee_refinement"),
    (["--model", "knee_refinement", "--val-interval", "5"], "--val-interval is an option of --model knee_segmentation"),
    (["--split", "SPLIT"], "give --fold K too"),
])
def test_an_option_the_run_would_ignore_is_refused(label_dir, tmp_path, capsys, extra, message):
    """--synthetic-cases reached no segmentation request, --val-interval no click-network request, and
    --split without --fold trained every knee, the split's test knees included."""
    import train_from_label_maps

    split = tmp_path / "cv.json"
    KneeSplit.create(find_label_maps(label_dir), folds=2).save(split)
    extra = [str(split) if a == "SPLIT" else a for a in extra]
    with pytest.raises(SystemExit):
        train_from_label_maps.main([str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path / "w"),
                                    *QUICK, *TINY, *extra])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_starting_version_given_as_a_training_option_is_checked_before_any_work(label_dir, tmp_path):
    import train_from_label_maps

    with pytest.raises(SystemExit, match="--init: no model version v0009"):
        train_from_label_maps.main([str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path / "w"),
                                    *QUICK, *TINY, "--train-option", "init=v0009"])
    assert not (tmp_path / "w" / "studies").exists()


def test_the_seed_reaches_the_initial_weights(tmp_path):
    """KneeNetworks.create reseeded torch with 0: every seed started from the same weights."""
    from lib.trainers.knee_segmentation import KneeSegmentationTrainer

    trainer = KneeSegmentationTrainer(ModelStore(tmp_path), KneeSchema.load(), model_config_from_conf(TINY_MODEL_CONF),
                                      "test")
    first, same, other = (trainer._initial_networks("scratch", seed)[0].state() for seed in (3, 3, 4))
    assert all(torch.equal(first["fine"][k], same["fine"][k]) for k in first["fine"])
    assert not all(torch.equal(first["fine"][k], other["fine"][k]) for k in first["fine"])


def test_the_record_states_the_configuration_the_weights_were_trained_with(label_dir, tmp_path):
    """Continuing a version keeps its networks' filters whatever --conf says now; the record showed the
    --conf values (and not where the weights came from)."""
    import train_from_label_maps

    argv = [str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path), *QUICK, *TINY]
    first = train_from_label_maps.main(argv)
    second = train_from_label_maps.main(argv + ["--conf", "fine_filters=4"])
    weights = ModelStore(tmp_path / "model").load_version(second["version"])
    assert second["model_config"] == weights["config"] and second["model_config"]["fine_filters"] == 8
    assert (first["started_from"], second["started_from"]) == (None, first["version"])


def test_click_network_validation_phantoms_never_train_in_a_run_of_the_same_seed(monkeypatch):
    """One phantom list split by position: the knee that validated with --synthetic-cases 4 trained with 8,
    so a run continuing that model was validated (and promoted) on a knee it had learned."""
    import lib.synthesis
    from lib.trainers import knee_refinement

    def phantom(seed):
        image = sitk.Image(4, 4, 4, sitk.sitkUInt8)
        image[1, 1, 1] = 1
        image.SetOrigin((float(seed), 0.0, 0.0))  # the knee's seed travels with it
        return image

    monkeypatch.setattr(lib.synthesis, "make_knee_phantom", phantom)
    monkeypatch.setattr(lib.synthesis, "synthesize_pair", lambda labels, seed: (labels, labels))
    monkeypatch.setattr(knee_refinement, "_case_arrays", lambda image, labels: image.GetOrigin()[0])
    trained, validated = set(), {}
    for n in range(13):
        train, validation = knee_refinement.split_synthetic(n, seed=0)
        assert len(validation) == (max(1, n // 4) if n > 1 else 0) and len(train) + len(validation) == n
        trained |= set(train)
        validated[n] = set(validation)
    assert all(not seen & trained for seen in validated.values())


def test_a_knee_of_the_split_is_refused_as_an_extra_map(label_dir, tmp_path):
    """The check looked at LABEL_DIR only: a fold's test knee whose file was not in the folder (a folder of
    the training knees, say) trained in its own test fold when given under --extra."""
    import shutil

    import train_from_label_maps

    split = KneeSplit.create(find_label_maps(label_dir), folds=2)
    split.save(tmp_path / "cv.json")
    (test_knee,) = split.test_knees(0)
    (tmp_path / "labels").mkdir()
    for knee, path in find_label_maps(label_dir).items():
        if knee != test_knee:
            shutil.copy(path, tmp_path / "labels" / path.name)
    with pytest.raises(SystemExit, match=f"knee id '{test_knee}' is a knee of the split"):
        train_from_label_maps.main([str(tmp_path / "labels"), "--convention", "oai_zib", "--out", str(tmp_path / "w"),
                                    "--split", str(tmp_path / "cv.json"), "--fold", "0", "--folds", "2",
                                    "--extra", f"{label_dir / test_knee}.nii.gz=oai_zib", *QUICK, *TINY])
    assert not (tmp_path / "w" / "studies").exists()


def test_a_text_option_that_is_not_text_is_refused_with_its_name():
    """{"init": 5} in a /train request passed the check and failed in the task with a TypeError."""
    from lib.trainers.knee_segmentation import DEFAULTS, RANGES
    from lib.trainers.options import OptionError, checked_options

    for value in (5, None, ["v0001"]):
        with pytest.raises(OptionError, match="Training option init must be text"):
            checked_options({"init": value}, DEFAULTS, RANGES)
    assert checked_options({"init": "v0002"}, DEFAULTS, RANGES)["init"] == "v0002"


def test_the_trainers_own_split_keeps_every_variant_of_a_knee_on_one_side(tmp_path):
    """Where split.json did not place an image already (a server's /train on a datastore of synthesised
    variants, a variant added later), images were split by their own hash: variants of one knee sat on
    both sides, and the Dice that promotes a version was measured on knees it trained on."""
    from pathlib import Path

    from lib.evaluation.training_datastore import image_id, knee_of
    from lib.trainers.training_data import fixed_split

    def items(knees, variants):
        return [{"image": f"/s/{image_id(f'knee{k:02d}', j)}.nii.gz", "label": "l"} for k in knees for j in variants]

    def knees_of(side):
        return {knee_of(Path(i["image"]).name[: -len(".nii.gz")]) for i in side}

    split_file = tmp_path / "split.json"
    train, validation = fixed_split(items(range(10), range(4)), split_file)
    assert validation and train and not knees_of(train) & knees_of(validation)
    # New variants of known knees, and new knees, keep every knee on one side; earlier images stay put.
    before = {i["image"]: side for side, group in (("t", train), ("v", validation)) for i in group}
    train2, validation2 = fixed_split(items(range(14), range(6)), split_file)
    assert not knees_of(train2) & knees_of(validation2)
    after = {i["image"]: side for side, group in (("t", train2), ("v", validation2)) for i in group}
    assert all(after[image] == side for image, side in before.items())
    # One knee alone cannot be split by knee: it trains (and the trainer says it validated on training data).
    train3, validation3 = fixed_split(items([0], range(4)), tmp_path / "one.json")
    assert len(train3) == 4 and validation3 == []


def test_the_click_networks_record_says_what_it_validated_on(label_dir, tmp_path):
    """The click task did not say whether it validated on held-out images; the command guessed from its
    validation knees alone and called a network validated on held-out phantoms 'validated on training
    data' (and, in a server, a network validated on its one training image was not marked at all)."""
    import train_from_label_maps

    record = train_from_label_maps.main([
        str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path), "--model", "knee_refinement",
        "--validation-knees", "0", "--synthetic-cases", "2", *QUICK, "--conf", "refinement_filters=8",
        "--conf", "refinement_patch=16,32,32", "--train-option", "validation_clicks=1"])
    assert record["validation_knees"] == [] and record["validated_on_training_data"] is False
    metrics = ModelStore(tmp_path / "model_refinement").metrics(record["version"])
    assert metrics["validated_on_training_data"] is False
    assert {"medial_meniscus", "fibula"} <= set(record["validation_dice"])  # the held-out phantom's structures
