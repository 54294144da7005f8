"""train_from_label_maps.py and evaluate.py end to end on real label maps, downsampled, with the tiny
model configuration: a fold's held-out knee never reaches the datastore, training goes through the
server's task and writes a model version and its record, and the evaluation of that version writes
the table, the JSON with Dice/HD95/ASD per structure, the overlays, and the echo agreement (the same
MRI given twice must agree exactly)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from kneeai_testing import APP_DIR, DESS_ECHO1, SHARED_DATA, TINY_MODEL_CONF, require

from KneeAILib.schema import KneeSchema
from lib.evaluation.cross_validation import KneeSplit
from lib.evaluation.label_maps import resample_labels
from lib.evaluation.metrics import EMPTY_BOTH
from lib.evaluation.training_datastore import build_datastore, knee_of, plan_variants, stable_seed
from lib.model_store import ModelStore, read_json

TEN_CLASS = SHARED_DATA / "labels" / "oai_dess_10class.nrrd"
SPACING_MM = 2.0  # TINY_MODEL_CONF's fine spacing: the default working spacing of the command

SCHEMA = KneeSchema.load()


@pytest.fixture(scope="module")
def label_dir(tmp_path_factory):
    """Three real OAI-ZIB label maps, downsampled to 2 mm, still in OAI-ZIB values."""
    folder = require(SHARED_DATA / "labels" / "oai_zib")
    out = tmp_path_factory.mktemp("oai_zib_small")
    for path in sorted(folder.glob("oai_zib_*.nii.gz"))[:3]:
        sitk.WriteImage(resample_labels(sitk.ReadImage(str(path)), SPACING_MM), str(out / path.name), True)
    return out


@pytest.fixture(scope="module")
def trained(label_dir, tmp_path_factory):
    require(TEN_CLASS)
    import train_from_label_maps

    work = tmp_path_factory.mktemp("work")
    argv = [str(label_dir), "--convention", "oai_zib", "--out", str(work), "--fold", "0", "--folds", "3",
            "--extra", f"{TEN_CLASS}=oai_dess_10class", "--variants", "2", "--validation-variants", "3",
            "--epochs", "1", "--iterations-per-epoch", "2", "--seed", "5", "--device", "cpu"]
    for key, value in TINY_MODEL_CONF.items():
        argv += ["--conf", f"{key}={value}"]
    record = train_from_label_maps.main(argv)
    return work, record, argv


def test_training_writes_a_version_and_its_record(trained):
    work, record, _ = trained
    store = ModelStore(work / "model")
    assert record["version"] == "v0001" and store.versions() == ["v0001"]
    assert store.promoted()["version"] == "v0001"
    saved = read_json(work / "records" / "v0001.json")
    assert saved["epochs"] == 1 and saved["machine"]["device"] == "cpu"
    assert saved["seconds"]["training"] > 0 and saved["working_spacing_mm"] == SPACING_MM
    # Validation Dice per structure that the validation knee's reference labels (OAI-ZIB: bones,
    # femoral and patellar cartilage, tibial cartilage as one group).
    assert set(saved["validation_dice"]) >= {"femur", "tibia", "patella", "femoral_cartilage", "tibial_cartilage"}
    assert all(0.0 <= d <= 1.0 for d in saved["validation_dice"].values())
    assert saved["validated_on_training_data"] is False
    # Trained by hand in process, not as a server's background task: the priority stays the user's.
    assert store.training_stats()["niceness"] == os.nice(0)


def test_datastore_holds_training_knees_only_with_matching_labels(trained):
    work, record, _ = trained
    split = KneeSplit.load(work / "cv_split.json")
    assert record["test_knees_never_read"] == split.test_knees(0) and len(split.test_knees(0)) == 1
    studies = work / "studies"
    images = sorted(studies.glob("*.nii.gz"))
    knees = [knee_of(p.name[: -len(".nii.gz")]) for p in images]
    assert not set(knees) & set(split.test_knees(0))
    assert set(knees) == set(record["train_knees"]) | set(record["validation_knees"])
    assert "oai_dess_10class" in record["train_knees"]  # the --extra map trains, never validates
    assert len(images) == 2 * len(record["train_knees"]) + 3 * len(record["validation_knees"])
    # Each validation knee is seen in the three contrast families, so one lucky image cannot rank models.
    for knee in record["validation_knees"]:
        assert sorted(v["contrast"] for v in record["datastore"] if v["knee"] == knee) == ["dess", "pdfs", "t2"]
    for path in images:
        image, labels = sitk.ReadImage(str(path)), sitk.ReadImage(str(studies / "labels" / "final" / path.name))
        assert image.GetSize() == labels.GetSize() and np.allclose(image.GetSpacing(), SPACING_MM)
        assert np.allclose(image.GetOrigin(), labels.GetOrigin()) and image.GetDirection() == labels.GetDirection()
        SCHEMA.check_label_values(sitk.GetArrayViewFromImage(labels))
    # The trainer validates by knee: every image of a validation knee, and nothing else.
    assigned = read_json(work / "model" / "split.json")["assigned"]
    assert {c for c, side in assigned.items() if side == "validation"} == {
        p.name[: -len(".nii.gz")] for p, k in zip(images, knees) if k in record["validation_knees"]}


def test_a_knee_needs_at_least_one_image(label_dir, tmp_path):
    """No validation image would make the trainer validate on its training images, silently."""
    import train_from_label_maps

    with pytest.raises(SystemExit):
        train_from_label_maps.main([str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path),
                                    "--validation-variants", "0", "--epochs", "1", "--device", "cpu"])
    assert not (tmp_path / "studies").exists()  # refused before anything was written


def test_synthesis_is_reproducible(label_dir, tmp_path):
    knee = sorted(p.name[: -len(".nii.gz")] for p in label_dir.glob("*.nii.gz"))[0]
    plan = plan_variants([knee], {knee: 2}, base_seed=5)
    files = {knee: label_dir / f"{knee}.nii.gz"}
    for run in ("a", "b"):
        build_datastore(tmp_path / run, files, {knee: "oai_zib"}, plan, SPACING_MM, log=lambda _: None)
    for v in plan:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / f"{v.image_id}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / f"{v.image_id}.nii.gz")))
        assert np.array_equal(a, b)
    first, second = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / f"{v.image_id}.nii.gz"))) for v in plan)
    assert not np.array_equal(first, second)  # two variants are two different images


def test_a_workdir_is_not_reused_for_another_fold(trained):
    import train_from_label_maps

    _, _, argv = trained
    other = [("1" if a == "0" and argv[i - 1] == "--fold" else a) for i, a in enumerate(argv)]
    with pytest.raises(SystemExit, match="Use a new --out"):
        train_from_label_maps.main(other)


def test_click_network_trains_through_the_same_command(label_dir, tmp_path):
    """``--model knee_refinement``: the click network trains through the server's task on the fold's
    knees, kept on their own grids, validated by knee with the click protocol next to the random walker."""
    import train_from_label_maps

    record = train_from_label_maps.main([
        str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path), "--fold", "0", "--folds", "3",
        "--model", "knee_refinement", "--variants", "1", "--validation-variants", "1", "--epochs", "1",
        "--iterations-per-epoch", "2", "--seed", "5", "--device", "cpu",
        "--conf", "refinement_filters=8", "--conf", "refinement_patch=16,32,32",
        "--train-option", "validation_clicks=2"])
    store = ModelStore(tmp_path / "model_refinement")
    assert store.versions() == ["v0001"] and record["model"] == "knee_refinement"
    assert record["validation"] == "mean Dice over simulated clicks 1-2"  # --train-option reached the task
    assert record["working_spacing_mm"] == 0.0 and record["model_config"]["init_filters"] == 8
    assert not set(record["train_knees"]) & set(record["test_knees_never_read"])
    assigned = read_json(tmp_path / "model_refinement" / "split.json")["assigned"]
    assert {knee_of(c) for c, side in assigned.items() if side == "validation"} == set(record["validation_knees"])
    for dice in (record["validation_dice"], record["random_walker_validation"]["dice"]):
        # The validation structures an OAI-ZIB knee has (no menisci, split plates or fibula).
        assert set(dice) == {"femur", "femoral_cartilage", "patellar_cartilage"}
        assert all(0.0 <= d <= 1.0 for d in dice.values())
    # Promoted only when it beats the random walker on the same clicks (no network was promoted before).
    assert record["promotion_bar"] == {"random_walker": record["random_walker_validation"]["mean_dice"]}
    beat = record["validation_mean_dice"] > record["random_walker_validation"]["mean_dice"]
    assert record["promoted"] is beat
    image = sitk.ReadImage(str(next((tmp_path / "studies").glob("*.nii.gz"))))
    assert np.allclose(image.GetSpacing(), SPACING_MM)  # the maps' own (here downsampled) grid


def test_an_unknown_training_option_stops_the_run_before_any_work(label_dir, tmp_path):
    import train_from_label_maps

    with pytest.raises(SystemExit, match="clicks_in_the_loop"):  # the message lists the known options
        train_from_label_maps.main([str(label_dir), "--convention", "oai_zib", "--out", str(tmp_path / "w"),
                                    "--model", "knee_refinement", "--train-option", "clicks_in_loop=0.75"])
    assert not (tmp_path / "w" / "studies").exists()


@pytest.fixture(scope="module")
def evaluation(trained, label_dir, tmp_path_factory):
    """evaluate.py as a user runs it, on the fold's held-out knee, with the same MRI as both echoes."""
    work, record, _ = trained
    out = tmp_path_factory.mktemp("evaluation")
    command = [sys.executable, str(APP_DIR / "evaluate.py"), "--model-dir", str(work / "model"),
               "--labels", str(label_dir), "--convention", "oai_zib", "--split", str(work / "cv_split.json"),
               "--fold", "0", "--seed", "1234", "--out", str(out), "--device", "cpu",
               "--dess-echo1", str(require(DESS_ECHO1)), "--dess-echo2", str(DESS_ECHO1)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "evaluation.json").read_text()), record


def test_evaluate_reports_held_out_knees_with_dice_hd95_asd(evaluation):
    out, report, record = evaluation
    held_out = report["held_out"]
    assert report["model"]["version"] == "v0001"
    assert held_out["knees"] == record["test_knees_never_read"]
    (case,) = held_out["cases"]
    assert case["seed"] == stable_seed("test", 1234, case["knee"]) and case["seen_in_training"] is False
    for key in ("femur", "tibia", "patella", "femoral_cartilage", "patellar_cartilage", "tibial_cartilage"):
        score = case["scores"][key]
        assert set(score) >= {"dice", "hd95_mm", "asd_mm", "status"} and 0.0 <= score["dice"] <= 1.0
        assert held_out["summary"][key]["n"] == 1
    # OAI-ZIB labels neither menisci nor the two tibial plates separately: not scored, not averaged.
    for key in ("medial_meniscus", "lateral_meniscus", "fibula", "medial_tibial_cartilage"):
        assert held_out["summary"][key]["n"] == 0
    markdown = (out / "evaluation.md").read_text()
    assert "| Structure | n | Dice | HD95 (mm) | ASD (mm) | missed |" in markdown
    assert "| Femur | 1 |" in markdown and "Tibial cartilage (medial + lateral)" in markdown


def test_evaluate_writes_overlay_pngs(evaluation):
    out, report, _ = evaluation
    (case,) = report["held_out"]["cases"]
    assert sorted(report["overlays"]) == sorted(
        [f"overlays/{case['knee']}.png", "overlays/dess_echo1.png", "overlays/dess_echo2.png"])
    for name in report["overlays"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(data[20:24], "big") >= 3 * 256  # three sagittal slices, >= 256 px each
    width = int.from_bytes((out / f"overlays/{case['knee']}.png").read_bytes()[16:20], "big")
    assert (width - 2 * 4) % 3 == 0  # image | reference | prediction, with two 4 px gaps


def test_same_mri_as_both_echoes_agrees_exactly(evaluation):
    # Known answer: one image segmented twice. (This found a use-after-free in the segmenter: a numpy
    # view of a freed SimpleITK image made a few voxels differ between two runs.)
    _, report, _ = evaluation
    agreement = report["echo_agreement"]["structures"]
    assert any(row["status"] != EMPTY_BOTH for row in agreement.values())
    for key, row in agreement.items():
        assert row["volume_first_ml"] == row["volume_second_ml"], key
        assert row["status"] == EMPTY_BOTH or row["dice"] == 1.0, key
    assert report["echo_agreement"]["mean_dice"] == 1.0


def test_evaluate_refuses_knees_the_model_trained_on(trained, label_dir, tmp_path):
    import evaluate

    work, record, _ = trained
    # Without the split, the folder's training knees would be evaluated too.
    with pytest.raises(SystemExit, match="trained or validated on"):
        evaluate.main(["--model-dir", str(work / "model"), "--labels", str(label_dir), "--convention", "oai_zib",
                       "--out", str(tmp_path / "refused"), "--device", "cpu"])


def test_evaluate_can_run_the_model_with_another_joint_box(evaluation, trained, label_dir, tmp_path):
    import evaluate

    _, default_report, _ = evaluation
    (default_case,) = default_report["held_out"]["cases"]
    assert default_report["model"]["joint_box_changed"] == {}
    work, _, _ = trained
    argv = ["--model-dir", str(work / "model"), "--labels", str(label_dir), "--convention", "oai_zib",
            "--split", str(work / "cv_split.json"), "--fold", "0", "--device", "cpu", "--max-roi-mm", "30"]
    report = evaluate.main(argv + ["--out", str(tmp_path / "narrow")])
    (case,) = report["held_out"]["cases"]
    # The tiny model's own box covers more than 30 mm along some axis; the override must bound every axis.
    assert max(default_case["fine_box_mm"]) > 30.0
    assert max(case["fine_box_mm"]) <= 30.0 + 1e-6
    trained_max = default_report["model"]["config"]["max_roi_mm"]
    assert report["model"]["joint_box_changed"] == {"max_roi_mm": {"trained": trained_max, "evaluated": 30.0}}
    assert "NOT the model's own: max_roi_mm 30" in (tmp_path / "narrow" / "evaluation.md").read_text()
    with pytest.raises(SystemExit, match="must be > 0"):
        evaluate.main(argv[:-1] + ["0", "--out", str(tmp_path / "refused")])


def test_evaluate_checks_its_inputs_before_segmenting_any_knee(trained, label_dir, tmp_path, capsys):
    """A missing echo was found after every knee had been segmented (hours for 20 knees on a CPU) and no
    report was written; an unknown contrast failed at the knee that drew it, an empty list divided by
    zero; without --convention OAI-ZIB maps were read as schema values (valid ones, so silently)."""
    import evaluate

    work, _, _ = trained
    argv = ["--model-dir", str(work / "model"), "--labels", str(label_dir), "--convention", "oai_zib",
            "--split", str(work / "cv_split.json"), "--fold", "0", "--device", "cpu"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="--dess-echo1/--dess-echo2: .*no_echo1.nii.gz"):
        evaluate.main(argv + ["--out", str(out), "--dess-echo1", str(tmp_path / "no_echo1.nii.gz"),
                              "--dess-echo2", str(tmp_path / "no_echo2.nii.gz")])
    assert not (out / "overlays").exists()
    for bad in (["--contrasts", "dess,flair"], ["--contrasts", ","]):
        with pytest.raises(SystemExit):
            evaluate.main(argv + ["--out", str(out)] + bad)
        assert "--contrasts: give one or more of dess, pdfs, t2" in capsys.readouterr().err
    without_convention = [a for a in argv if a not in ("--convention", "oai_zib")]
    with pytest.raises(SystemExit):
        evaluate.main(without_convention + ["--out", str(out)])
    assert "--labels needs --convention" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="fold 5 does not exist"):
        evaluate.main(argv[:-3] + ["5", "--device", "cpu", "--out", str(out)])
    assert not (out / "overlays").exists()


def test_evaluate_refuses_to_call_knees_held_out_when_the_versions_record_is_damaged(trained, label_dir, tmp_path):
    """A damaged metrics.json read as a version that trained on no knee: its own training knees were
    reported as held-out results."""
    import evaluate

    work, _, _ = trained
    model = Path(shutil.copytree(work / "model", tmp_path / "model"))
    metrics = model / "versions" / "v0001" / "metrics.json"
    metrics.write_text(metrics.read_text()[:200])
    with pytest.raises(SystemExit, match="does not say which knees it trained on"):
        evaluate.main(["--model-dir", str(model), "--labels", str(label_dir), "--convention", "oai_zib",
                       "--out", str(tmp_path / "refused"), "--device", "cpu"])
    assert not (tmp_path / "refused" / "overlays").exists()
