"""The ``kneeai`` command line against real servers: segment the real DESS into a Slicer segmentation
file, segment a DICOM folder, submit, train, status, and clear errors with distinct exit codes."""

from __future__ import annotations

import http.server
import json
import locale
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
import urllib3

from KneeAILib.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE, main
from KneeAILib.seg_nrrd import read_label_file
from KneeAILib.terminology import parse_terminology_entry
from KneeAILib.training import fetch_training_progress
from KneeAILib.upload import JsonConsentStore, default_consent_file, upload_volume
from KneeAILib.volume import PixelVolume, read_dicom_echoes, write_volume_atomically

pytestmark = pytest.mark.server


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    """Consent answers go to a folder of this test, not the user's ~/.config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def dess_segmentation(knee_server, dess_path, tmp_path_factory):
    """``kneeai segment`` on the real DESS file, run once: (exit code, output path, stderr of the refusal)."""
    out = tmp_path_factory.mktemp("cli") / "dess.seg.nrrd"
    config = tmp_path_factory.mktemp("config")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(config))
        refused = main(["--server", knee_server, "segment", str(dess_path), "-o", str(out)])
        refused_file = out.exists()
        code = main(["--server", knee_server, "segment", str(dess_path), "-o", str(out), "--allow-upload"])
    return refused, refused_file, code, out


def test_segment_refuses_to_upload_without_consent(dess_segmentation, capsys):
    refused, refused_file, _, _ = dess_segmentation
    assert refused == EXIT_BAD_INPUT and not refused_file


def test_segment_writes_a_seg_nrrd_with_the_schemas_names_and_colours(dess_segmentation, dess_path, schema):
    import slicerio

    _, _, code, out = dess_segmentation
    assert code == EXIT_OK
    segmentation = slicerio.read_segmentation(str(out))
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert list(segments) == [s.name for s in schema.structures]
    for structure in schema.structures:
        segment = segments[structure.name]
        assert segment["labelValue"] == structure.value
        assert np.allclose(segment["color"], structure.color_float, atol=1e-5)
        assert segment["terminology"]["type"] == [structure.type.scheme, structure.type.value, structure.type.meaning]
        if structure.region is not None:
            assert segment["terminology"]["anatomicRegion"][1] == structure.region.value
    original = sitk.ReadImage(str(dess_path))
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == original.GetSize()
    assert np.allclose(labels.GetOrigin(), original.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetDirection(), original.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= schema.allowed_values()


def test_slicer_reads_the_seg_nrrd_with_names_colours_and_terminology(dess_segmentation, schema, scene):
    _, _, _, out = dess_segmentation
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(out))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(schema.structures)
    for structure in schema.structures:
        segment = segmentation.GetSegment(structure.key)
        assert segment.GetName() == structure.name
        assert np.allclose(segment.GetColor(), structure.color_float, atol=1e-5)
        assert parse_terminology_entry(segment.GetTerminology())["type"] == (
            structure.type.scheme, structure.type.value, structure.type.meaning)


def test_segment_a_dicom_folder_echo_to_a_label_map(knee_server, mese_dicom_path, tmp_path, schema):
    out = tmp_path / "mese_echo2.nii.gz"
    assert main(["--server", knee_server, "segment", str(mese_dicom_path), "--echo", "2", "-o", str(out),
                 "--allow-upload"]) == EXIT_OK
    echo2 = read_dicom_echoes(mese_dicom_path)[1][1]
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == echo2.size
    assert np.allclose(labels.GetOrigin(), echo2.origin, atol=1e-4)
    assert labels.GetPixelID() == sitk.sitkUInt8
    no_such_echo = ["--server", knee_server, "segment", str(mese_dicom_path), "--echo", "9", "-o", str(out)]
    assert main(no_such_echo) == EXIT_BAD_INPUT


def write_small_mri(path: Path) -> Path:
    """A small MRI-like volume (random intensities, anisotropic, off-origin) as a NIfTI file."""
    array = np.random.default_rng(0).integers(0, 1000, (12, 24, 20)).astype(np.int16)
    return write_volume_atomically(PixelVolume(array, (0.6, 0.6, 2.0), (5.0, -3.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                                   path)


def test_a_dicom_series_with_an_empty_echo_time_reads_as_one_echo(tmp_path):
    # Echo Time is a type 2 DICOM tag: present but empty is valid, and must not stop the reading.
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    ctype = locale.setlocale(locale.LC_CTYPE)  # GDCM's DICOM writer leaves the C locale (ASCII file reads)
    try:
        for k in range(3):
            slice_ = sitk.GetImageFromArray(np.full((1, 8, 8), k, np.int16))
            slice_.SetOrigin((0.0, 0.0, float(k)))
            for tag, value in {"0020|000e": "1.2.3", "0018|0081": "", "0008|0060": "MR", "0020|0013": str(k + 1),
                               "0020|0032": f"0\\0\\{k}", "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
                slice_.SetMetaData(tag, value)
            writer.SetFileName(str(folder / f"slice{k}.dcm"))
            writer.Execute(slice_)
    finally:
        locale.setlocale(locale.LC_CTYPE, ctype)
    echoes = read_dicom_echoes(folder)
    assert [echo_time for echo_time, _ in echoes] == [0.0]  # unknown, as when the tag is missing
    assert echoes[0][1].array[:, 0, 0].tolist() == [0, 1, 2]


def test_segment_refuses_a_missing_path_instead_of_sending_it_as_an_image_id(tmp_path, capsys, monkeypatch):
    # No server answers there: had the path gone out as an image id, the exit status would be 3.
    monkeypatch.chdir(tmp_path)
    for image in (str(tmp_path / "SMITH_John" / "knee"), "knee.nii.gz", "scan.dcm"):
        assert main(["--server", "http://127.0.0.1:9", "segment", image, "-o", "out.nii.gz"]) == EXIT_BAD_INPUT
        assert f"{image}: no such file or folder" in capsys.readouterr().err


def test_segment_never_replaces_the_input_and_an_output_only_with_force(knee_server, tmp_path, capsys):
    image = write_small_mri(tmp_path / "mri.nii.gz")
    original = image.read_bytes()
    link = tmp_path / "link_to_mri.nii.gz"
    link.symlink_to(image)
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"an earlier result")
    segment = ["--server", knee_server, "segment", str(image), "--allow-upload"]
    for same_file in (image, link):
        assert main(segment + ["-o", str(same_file), "--force"]) == EXIT_BAD_INPUT
        assert "is the input image itself" in capsys.readouterr().err
    assert main(segment + ["-o", str(out)]) == EXIT_BAD_INPUT
    assert "exists; pass --force" in capsys.readouterr().err
    assert image.read_bytes() == original and out.read_bytes() == b"an earlier result"

    assert main(segment + ["-o", str(out), "--force"]) == EXIT_OK
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(image)).GetSize()
    # A path no file can take (its "folder" is a file): a message and exit 2, not a traceback.
    capsys.readouterr()
    assert main(segment + ["-o", str(image / "labels.nii.gz")]) == EXIT_BAD_INPUT
    assert f"Cannot write {image / 'labels.nii.gz'}" in capsys.readouterr().err
    assert image.read_bytes() == original


class WrongGridServer(http.server.BaseHTTPRequestHandler):
    """A stand-in for a KneeAI server whose segmentation has another grid than the image it was sent
    (a real server cannot be made to answer so): /info with the real schema, /infer with a 2x2x2 label."""

    schema_info: dict = {}
    label_file: bytes = b""

    def do_GET(self):
        self._answer(json.dumps({"name": "KneeAI", "knee_schema": self.schema_info}).encode(), "application/json")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body, content_type = urllib3.encode_multipart_formdata(
            {"params": "{}", "image": ("label.nii.gz", self.label_file, "application/octet-stream")})
        self._answer(body, content_type)

    def _answer(self, body: bytes, content_type: str):
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def wrong_grid_server(schema, tmp_path):
    label = PixelVolume(np.ones((2, 2, 2), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    WrongGridServer.schema_info = schema.to_info()
    WrongGridServer.label_file = write_volume_atomically(label, tmp_path / "label.nii.gz").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WrongGridServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_segmentation_on_another_grid_than_the_image_is_refused_not_written(wrong_grid_server, tmp_path, capsys):
    image = write_small_mri(tmp_path / "mri.nii.gz")
    out = tmp_path / "labels.seg.nrrd"
    assert main(["--server", wrong_grid_server, "segment", str(image), "--allow-upload", "-o", str(out)]) == \
        EXIT_SERVER_ERROR
    assert "does not have the image's grid: size (2, 2, 2) vs (20, 24, 12)" in capsys.readouterr().err
    assert not out.exists()


def test_info_next_and_status(knee_server, capsys):
    assert main(["--server", knee_server, "info"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Model version:" in out and "Femoral cartilage" in out and "knee_segmentation" in out
    assert main(["--server", knee_server, "next"]) == EXIT_OK
    image_id = capsys.readouterr().out.strip()
    listing = requests.get(f"{knee_server}/datastore/", params={"output": "all"}, timeout=10).json()
    assert image_id in listing["objects"]
    assert main(["--server", knee_server, "status"]) == EXIT_OK
    assert "Model in use:" in capsys.readouterr().out


def test_submit_a_seg_nrrd_and_train(annotator_server, annotator_client, mese_dicom_path, tmp_path, capsys, schema):
    consent = JsonConsentStore(default_consent_file())
    consent.set_consent(annotator_server, True)
    image_id = upload_volume(annotator_client, read_dicom_echoes(mese_dicom_path)[0][1], consent)
    seg = tmp_path / "mese.seg.nrrd"
    assert main(["--server", annotator_server, "segment", image_id, "-o", str(seg)]) == EXIT_OK
    assert main(["--server", annotator_server, "submit", image_id, str(seg)]) == EXIT_OK
    stored = sitk.ReadImage(str(annotator_client.download_label(image_id)))
    assert np.array_equal(sitk.GetArrayFromImage(stored), read_label_file(seg, schema).array)

    # A label that does not fit the image: the server's reason reaches the user, exit status 1.
    wrong = tmp_path / "wrong.nii.gz"
    sitk.WriteImage(sitk.Image([5, 5, 5], sitk.sitkUInt8), str(wrong))
    capsys.readouterr()
    assert main(["--server", annotator_server, "submit", image_id, str(wrong)]) == EXIT_SERVER_ERROR
    assert "does not match its image" in capsys.readouterr().err

    assert main(["--server", annotator_server, "train", "--epochs", "0"]) == EXIT_BAD_INPUT
    assert main(["--server", annotator_server, "train", "--epochs", "1"]) == EXIT_OK
    assert "Training started" in capsys.readouterr().out
    # What the module's progress display reads. MONAI Label answers the start request before its worker
    # thread has launched the training process, so "running" may take a moment to show.
    assert wait_for(lambda: fetch_training_progress(annotator_client).running, seconds=20)
    annotator_client.train_stop()  # the test needs the request, not the CPU of a training run
    assert wait_for(lambda: not fetch_training_progress(annotator_client).running, seconds=30)
    assert main(["--server", annotator_server, "status"]) == EXIT_OK
    assert "Training:" in capsys.readouterr().out


def test_bad_output_name_and_unreachable_server(tmp_path, capsys, dess_path):
    png_output = ["--server", "http://127.0.0.1:9", "segment", str(dess_path), "-o", str(tmp_path / "x.png")]
    assert main(png_output) == EXIT_BAD_INPUT
    assert ".seg.nrrd" in capsys.readouterr().err
    assert main(["--server", "http://127.0.0.1:9", "status"]) == EXIT_UNREACHABLE
    assert "Cannot reach the KneeAI server at http://127.0.0.1:9" in capsys.readouterr().err


def test_installed_console_script_runs():
    script = shutil.which("kneeai", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the kneeai console script is not installed in this environment (pip install -e .)")
    result = subprocess.run([script, "--server", "http://127.0.0.1:9", "info"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == EXIT_UNREACHABLE
    assert "Cannot reach the KneeAI server" in result.stderr


def test_measure_subcommand_is_wired(tmp_path, capsys):
    pytest.importorskip("KneeAILib.measurements.cli", reason="the measurements package is not installed")
    assert main(["measure", str(tmp_path / "missing.nii.gz")]) == EXIT_BAD_INPUT
    assert "missing.nii.gz" in capsys.readouterr().err
