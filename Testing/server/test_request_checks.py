"""What the server checks before it does any work or writes anything: training options, the values of
a refinement request, ids, DICOM tags that are present but empty, DICOM series with a damaged or missing
slice (read by the client's and the server's shared code), and the datastore's own record written so
that a crash cannot cut it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from kneeai_testing import MESE_DICOM, ROOT, TINY_MODEL_CONF, require

from KneeAILib.schema import KneeSchema
from KneeAILib.volume import VolumeError, dicom_echo_files
from KneeAILib.volume import read_dicom_echoes as read_dicom_echoes_client
from lib.datastore import KneeDatastore, RejectedInput, check_id
from lib.interactive.request import RequestError, parse_click_request
from lib.trainers.options import OptionError, checked_options
from lib.transforms.image_io import InputError, read_dicom_echoes, read_volume

SCHEMA = KneeSchema.load(ROOT / "Resources" / "knee_schema.json")


# -- training options --------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, message", [
    ("val_interval", 0, "val_interval must be at least 1"),
    ("max_epochs", "abc", "max_epochs must be a number"),
    ("max_epochs", 2.5, "max_epochs must be a whole number"),
    ("learning_rate", float("nan"), "learning_rate must be a finite number"),
    ("seed", -1, "seed must be between 0"),
    ("crop_centres", "class", "crop_centres must be one of voxels, classes, not 'class'"),
])
def test_a_segmentation_training_request_with_a_bad_value_is_refused_before_any_work(option, value, message):
    from lib.trainers.knee_segmentation import DEFAULTS, RANGES

    with pytest.raises(OptionError, match=message):
        checked_options({option: value}, DEFAULTS, RANGES)


def test_training_options_arrive_as_text_or_json_and_keep_their_types():
    from lib.trainers.knee_refinement import DEFAULTS, RANGES

    options = checked_options({"max_epochs": "3", "learning_rate": "1e-4", "clicks_in_the_loop": 1, "extra": 5},
                              DEFAULTS, RANGES)
    assert options["max_epochs"] == 3 and isinstance(options["max_epochs"], int)
    assert options["learning_rate"] == 1e-4 and options["clicks_in_the_loop"] == 1.0
    assert "extra" not in options and options["batch_size"] == DEFAULTS["batch_size"]
    for option, value in (("validation_clicks", 0), ("clicks_in_the_loop", 1.5), ("batch_size", 0)):
        with pytest.raises(OptionError, match=option):
            checked_options({option: value}, DEFAULTS, RANGES)


def test_the_trainers_check_their_options_first(tmp_path):
    """Before: val_interval=0 divided by zero after a whole epoch; validation_clicks=0 gave a NaN Dice
    and no version, without a message."""
    from monailabel.datastore.local import LocalDatastore

    from lib.configs.knee_refinement import click_config_from_conf
    from lib.configs.knee_segmentation import model_config_from_conf
    from lib.model_store import ModelStore
    from lib.trainers.knee_refinement import KneeRefinementTrainer
    from lib.trainers.knee_segmentation import KneeSegmentationTrainer

    datastore = LocalDatastore(str(tmp_path / "studies"), extensions=["*.nii.gz"])
    segmentation = KneeSegmentationTrainer(ModelStore(tmp_path / "seg"), SCHEMA, model_config_from_conf({}), "seg")
    with pytest.raises(OptionError, match="val_interval"):
        segmentation({"val_interval": 0}, datastore)
    refinement = KneeRefinementTrainer(ModelStore(tmp_path / "ref"), SCHEMA, click_config_from_conf({}), "ref")
    with pytest.raises(OptionError, match="validation_clicks"):
        refinement({"validation_clicks": 0}, datastore)
    assert not (tmp_path / "seg" / "versions").exists() and not (tmp_path / "ref" / "versions").exists()


def test_the_training_command_refuses_a_bad_option_value_before_synthesising(tmp_path):
    import train_from_label_maps

    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="val_interval must be at least 1"):
        train_from_label_maps.main([str(tmp_path), "--convention", "oai_zib", "--out", str(work),
                                    "--val-interval", "0", "--device", "cpu"])
    with pytest.raises(SystemExit, match="clicks_in_the_loop must be between 0 and 1"):
        train_from_label_maps.main([str(tmp_path), "--convention", "oai_zib", "--out", str(work),
                                    "--model", "knee_refinement", "--train-option", "clicks_in_the_loop=2"])
    assert not (work / "studies").exists()


# -- refinement requests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("field, params", [
    ("foreground", {"foreground": [[float("nan"), 5, 5]]}),
    ("foreground", {"foreground": [[float("inf"), 5, 5]]}),
    ("foreground", {"foreground": [[True, False, True]]}),  # Python counts true/false as 1/0
    ("last", {"last": [float("nan"), 5, 5]}),
    ("roi", {"roi": [[0, 0, 0], [float("inf"), 9, 9]]}),
    ("roi", {"roi": {"lower": [0, 0, 0], "upper": [9, 9, 9]}}),
    ("structure", {"structure": ["femur"]}),
    ("locked", {"locked": [["tibia"]]}),
])
def test_a_click_request_with_a_value_of_the_wrong_kind_is_a_400_that_names_it(field, params):
    """These reached int(round(nan)), roi[0] of an object or a set lookup of a list: an empty 500 (or a
    connection reset) instead of saying which value is wrong; true/false were taken as voxel 1/0."""
    request = json.loads(json.dumps({"structure": "femur", "foreground": [[5, 5, 5]], **params}))  # as MONAI Label
    with pytest.raises(RequestError) as error:
        parse_click_request(request, SCHEMA, (64, 64, 32))
    assert error.value.status_code == 400 and f"'{field}'" in error.value.detail


@pytest.mark.parametrize("model", ["knee_refinement", "knee_segmentation"])
def test_an_echo_that_is_not_a_whole_number_from_1_is_a_400_that_names_it(tmp_path, model):
    from lib.configs.knee_segmentation import model_config_from_conf
    from lib.infers.knee_refinement import ImageCache, KneeRefinement
    from lib.infers.knee_segmentation import KneeSegmentation
    from lib.model_store import ModelStore

    image = tmp_path / "knee.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(image))
    store = ModelStore(tmp_path / "model")
    task = (KneeRefinement(store, SCHEMA, ImageCache(), "refinement") if model == "knee_refinement"
            else KneeSegmentation(store, SCHEMA, model_config_from_conf(TINY_MODEL_CONF), "segmentation"))
    for echo in ("x", 0, 1.5, True):
        request = {"image": str(image), "label": str(image), "echo": echo, "structure": "femur",
                   "foreground": [[1, 1, 1]]}
        with pytest.raises(RequestError) as error:
            task(request)
        assert error.value.status_code == 400 and "'echo'" in error.value.detail


def test_the_reach_of_a_click_stays_within_the_region_the_client_sends():
    """The client sends only the labels within REACH_MM of the newest click; a server trained to reach
    farther had its network's block cut there without a word."""
    from KneeAILib.refinement import REACH_MM
    from lib.configs.knee_refinement import click_config_from_conf

    assert click_config_from_conf({"refinement_reach_mm": str(REACH_MM)}).radius_mm == REACH_MM
    with pytest.raises(ValueError, match=f"refinement_reach_mm: expected 1-{REACH_MM:g}"):
        click_config_from_conf({"refinement_reach_mm": str(REACH_MM + 1)})


# -- ids ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_id", ["knee1\n", "knee1/..", "", ".hidden", "a" * 201])
def test_ids_that_are_not_plain_names_are_refused(image_id):
    with pytest.raises(RejectedInput):
        check_id(image_id)
    assert check_id("knee_1.v2-b") == "knee_1.v2-b"


# -- DICOM ----------------------------------------------------------------------------------------------------
def test_a_dicom_series_with_an_empty_echo_time_is_read(tmp_path):
    """EchoTime is DICOM type 2: present but empty is allowed. float('') stopped the server's start."""
    pydicom = pytest.importorskip("pydicom", reason="pydicom (a monailabel dependency) is not installed")
    files = sorted(require(MESE_DICOM).glob("*.dcm"))
    first_echo = min(float(pydicom.dcmread(f, stop_before_pixels=True).EchoTime) for f in files[:16])
    series = tmp_path / "series"
    series.mkdir()
    for f in files:
        slice_ = pydicom.dcmread(f)
        if float(slice_.EchoTime) == first_echo:
            slice_.EchoTime = None  # written as an empty element
            slice_.save_as(series / f.name)
    assert pydicom.dcmread(next(series.iterdir())).data_element("EchoTime").value in (None, "")
    echoes = read_dicom_echoes(series)
    assert len(echoes) == 1 and echoes[0][0] == 0.0 and echoes[0][1].GetSize() == (256, 256, 24)


def _first_slices_of_echo_1(tmp_path, count: int = 6) -> list[Path]:
    """Copies of ``count`` neighbouring slices of the real MESE series' first echo."""
    series = tmp_path / "series"
    series.mkdir()
    _, files = dicom_echo_files(require(MESE_DICOM))[0]
    return [Path(shutil.copy(f, series / Path(f).name)) for f in files[8:8 + count]]


@pytest.mark.parametrize("damage, message", [
    ("cut short", "is a damaged DICOM file"),
    ("missing", "slices missing or unevenly spaced"),
    ("doubled", "slices missing or unevenly spaced"),
])
def test_a_dicom_series_with_a_damaged_or_missing_slice_is_refused_by_client_and_server(tmp_path, damage, message):
    """A slice cut short could not be read and was skipped as "not DICOM"; a missing one left a hole: ITK
    stacked the rest at one spacing with only a warning, a volume with the wrong geometry."""
    slices = _first_slices_of_echo_1(tmp_path)
    series = slices[0].parent
    assert read_volume(series).GetSize() == (256, 256, 6)  # the complete copy reads
    victim = slices[2]
    if damage == "cut short":
        victim.write_bytes(victim.read_bytes()[:-2000])
        message = f"{victim.name} {message}"
    elif damage == "missing":
        victim.unlink()
    else:
        shutil.copy(victim, series / f"copy_{victim.name}")
    with pytest.raises(VolumeError, match=message):
        read_dicom_echoes_client(series)
    with pytest.raises(InputError, match=message):
        read_volume(series)


# -- the datastore's record -----------------------------------------------------------------------------------
def test_the_datastore_record_survives_a_failure_in_the_middle_of_writing_it(tmp_path, monkeypatch):
    """MONAI Label rewrote datastore_v2.json in place: a write cut short (its scoring process is killed)
    left a truncated file and the next start failed. The record is now replaced whole or not at all."""
    studies = tmp_path / "studies"
    studies.mkdir()
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    sitk.WriteImage(image, str(studies / "knee_a.nii.gz"))
    datastore = KneeDatastore(str(studies), SCHEMA, extensions=["*.nii.gz"])
    record = studies / "datastore_v2.json"
    before = record.read_text()
    assert "knee_a" in json.loads(before)["objects"]

    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(json, "dumps", fail)  # the failure strikes while the record is being written
    with pytest.raises(OSError, match="No space left"):
        datastore._update_datastore_file()
    monkeypatch.undo()
    assert record.read_text() == before
    shutil.copytree(studies, tmp_path / "restarted")
    assert "knee_a" in KneeDatastore(str(tmp_path / "restarted"), SCHEMA, extensions=["*.nii.gz"]).list_images()


# -- sizes ----------------------------------------------------------------------------------------------------
def _nifti_declaring(tmp_path, name: str, size, datatype: int, bitpix: int):
    """A small .nii whose header declares ``size`` voxels of the NIfTI ``datatype`` (the data is not there)."""
    import struct

    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 2), np.uint8)), str(path))
    header = bytearray(path.read_bytes())
    header[40:56] = struct.pack("<8h", 3, *size, 1, 1, 1, 1)  # dim[0..7]
    header[70:74] = struct.pack("<2h", datatype, bitpix)
    path.write_bytes(bytes(header))
    return path


@pytest.mark.parametrize("size, datatype, bitpix, words", [
    ((2000, 2000, 2000), 2, 8, "too large"),      # 8 G voxels of uint8
    ((600, 600, 400), 64, 64, "1.1 GiB"),          # 144 M voxels, but float64: 1.1 GiB
])
def test_a_volume_too_large_is_refused_from_its_header_before_its_voxels_are_read(tmp_path, size, datatype, bitpix,
                                                                                   words):
    from lib.transforms.image_io import InputError, read_upload

    path = _nifti_declaring(tmp_path, "big.nii", size, datatype, bitpix)
    with pytest.raises(InputError, match=words):
        read_upload(path)


# -- labels copied into the datastore by hand ------------------------------------------------------------------
def test_a_label_copied_into_the_datastore_by_hand_with_unknown_values_stops_training(tmp_path):
    """Uploads are checked by the datastore; files copied into labels/final are not, and a value the
    schema does not know trained as the last class (the loss clamps it)."""
    from lib.trainers.training_data import load_pair

    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 1, 1], labels[2, 2, 2] = 1, 42
    label = sitk.GetImageFromArray(labels)
    sitk.WriteImage(image, str(tmp_path / "knee_a.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "knee_a_label.nii.gz"))
    item = {"image": str(tmp_path / "knee_a.nii.gz"), "label": str(tmp_path / "knee_a_label.nii.gz")}
    with pytest.raises(ValueError, match=r"knee_a_label\.nii\.gz.*42"):
        load_pair(item, SCHEMA)
    labels[2, 2, 2] = 5
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "knee_a_label.nii.gz"))
    assert load_pair(item, SCHEMA)[1].GetSize() == (6, 5, 4)
