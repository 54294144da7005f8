"""Bad input reaches a real server: each gets a clear 4xx, the server stays up, the datastore is intact."""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

pytestmark = pytest.mark.server

IMAGE_ID = "knee_phantom_000"  # labelled in the sample studies


def snapshot(studies: Path) -> dict[str, str]:
    """Checksum of every image and label file in the datastore."""
    return {
        str(p.relative_to(studies)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(studies.rglob("*.nii*"))
        if ".partial" not in p.parts
    }


@pytest.fixture(scope="module")
def intact(knee_server, sample_studies):
    """Checks, after this module's tests, that nothing stored before them changed and the server answers."""
    before = snapshot(sample_studies)
    datastore_before = requests.get(f"{knee_server}/datastore/?output=all", timeout=30).json()
    yield
    after = snapshot(sample_studies)
    assert {k: v for k, v in after.items() if k in before} == before
    datastore_after = requests.get(f"{knee_server}/datastore/?output=all", timeout=30).json()
    assert set(datastore_after["objects"]) == set(datastore_before["objects"])
    for image_id, obj in datastore_before["objects"].items():
        assert datastore_after["objects"][image_id]["labels"].keys() == obj["labels"].keys()
    assert requests.get(f"{knee_server}/info/", timeout=30).status_code == 200


def upload_image(server: str, image_id: str, path: Path) -> requests.Response:
    with path.open("rb") as f:
        return requests.put(f"{server}/datastore/", params={"image": image_id},
                            files={"file": (path.name, f)}, timeout=60)


def upload_label(server: str, image_id: str, path: Path, tag: str = "final") -> requests.Response:
    with path.open("rb") as f:
        return requests.put(f"{server}/datastore/label", params={"image": image_id, "tag": tag},
                            files={"label": (path.name, f)}, data={"params": "{}"}, timeout=60)


def assert_rejected(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    for word in words:
        assert word.lower() in detail.lower(), detail


@pytest.fixture(scope="module")
def phantom_image(sample_studies) -> sitk.Image:
    return sitk.ReadImage(str(sample_studies / f"{IMAGE_ID}.nii.gz"))


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def test_non_image_upload_is_rejected(knee_server, intact, tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"this is a text file, not an MRI"))
    assert_rejected(upload_image(knee_server, "notes", path), 422, "not a readable medical image")


def test_unsupported_file_type_is_rejected(knee_server, intact, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4")
    assert_rejected(upload_image(knee_server, "report", path), 415, "unsupported")


def test_2d_image_is_rejected(knee_server, intact, tmp_path):
    path = write(sitk.GetImageFromArray(np.zeros((64, 64), np.int16)), tmp_path / "slice.nii.gz")
    assert_rejected(upload_image(knee_server, "slice", path), 422, "2D")


def test_single_slice_volume_is_rejected(knee_server, intact, tmp_path):
    path = write(sitk.GetImageFromArray(np.zeros((1, 64, 64), np.int16)), tmp_path / "one.nii.gz")
    assert_rejected(upload_image(knee_server, "one", path), 422, "single slice")


def test_empty_file_is_rejected(knee_server, intact, tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    assert_rejected(upload_image(knee_server, "empty", path), 422, "empty")


def test_truncated_file_is_rejected(knee_server, intact, sample_studies, tmp_path):
    data = (sample_studies / f"{IMAGE_ID}.nii.gz").read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_rejected(upload_image(knee_server, "truncated", path), 422)


def test_image_id_with_path_tricks_is_rejected(knee_server, intact, phantom_image, tmp_path):
    path = write(phantom_image, tmp_path / "ok.nii.gz")
    for bad in ("../escape", "..", "a/../../b", "/etc/passwd"):
        assert_rejected(upload_image(knee_server, bad, path), 400, "invalid image id")
    assert not (Path(tmp_path).parent / "escape.nii.gz").exists()


def test_existing_image_is_not_overwritten(knee_server, intact, tmp_path):
    path = write(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16)), tmp_path / "other.nii.gz")
    assert_rejected(upload_image(knee_server, IMAGE_ID, path), 409, "already exists")
    # One file on case-insensitive file systems (macOS, Windows): it would replace the phantom's image.
    assert_rejected(upload_image(knee_server, IMAGE_ID.upper(), path), 409, "only in letter case")


def test_label_with_wrong_shape_is_rejected(knee_server, intact, phantom_image, tmp_path):
    size = phantom_image.GetSize()
    wrong = sitk.Image([size[0] - 1, size[1], size[2]], sitk.sitkUInt8)
    wrong.SetSpacing(phantom_image.GetSpacing())
    wrong.SetOrigin(phantom_image.GetOrigin())
    wrong.SetDirection(phantom_image.GetDirection())
    response = upload_label(knee_server, IMAGE_ID, write(wrong, tmp_path / "wrong.nii.gz"))
    assert_rejected(response, 422, "does not match its image")


def test_label_with_shifted_origin_is_rejected(knee_server, intact, phantom_image, tmp_path):
    shifted = sitk.Image(phantom_image.GetSize(), sitk.sitkUInt8)
    shifted.CopyInformation(phantom_image)
    shifted.SetOrigin([o + 5.0 for o in phantom_image.GetOrigin()])
    response = upload_label(knee_server, IMAGE_ID, write(shifted, tmp_path / "shifted.nii.gz"))
    assert_rejected(response, 422, "origin")


def test_label_with_unknown_values_is_rejected(knee_server, intact, phantom_image, tmp_path):
    label = sitk.Image(phantom_image.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(phantom_image)
    label[5, 5, 5] = 42
    response = upload_label(knee_server, IMAGE_ID, write(label, tmp_path / "unknown.nii.gz"))
    assert_rejected(response, 422, "[42]")


def test_label_for_unknown_image_is_rejected(knee_server, intact, phantom_image, tmp_path):
    label = sitk.Image(phantom_image.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(phantom_image)
    response = upload_label(knee_server, "no_such_image", write(label, tmp_path / "l.nii.gz"))
    assert_rejected(response, 404, "not found")


def test_label_tag_with_path_tricks_is_rejected(knee_server, intact, phantom_image, tmp_path):
    label = sitk.Image(phantom_image.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(phantom_image)
    response = upload_label(knee_server, IMAGE_ID, write(label, tmp_path / "l.nii.gz"), tag="../../final")
    assert_rejected(response, 400, "invalid label tag")
    # labels/FINAL is labels/final on macOS and Windows: it would replace the final label unrecorded.
    response = upload_label(knee_server, IMAGE_ID, write(label, tmp_path / "l.nii.gz"), tag="FINAL")
    assert_rejected(response, 409, "only in letter case")


def test_inference_on_path_or_unknown_id_is_rejected(knee_server, intact):
    response = requests.post(f"{knee_server}/infer/knee_segmentation", params={"image": "/etc/passwd"},
                             data={"params": json.dumps({})}, timeout=60)
    assert_rejected(response, 400, "invalid image id")
    response = requests.post(f"{knee_server}/infer/knee_segmentation", params={"image": "no_such_image"},
                             data={"params": json.dumps({})}, timeout=60)
    assert_rejected(response, 404, "not found")


def test_inference_on_uploaded_non_image_is_rejected(knee_server, intact, tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"\x00" * 100)
    with path.open("rb") as f:
        response = requests.post(f"{knee_server}/infer/knee_segmentation", files={"file": ("junk.nii.gz", f)},
                                 data={"params": json.dumps({})}, timeout=60)
    assert_rejected(response, 422)


def metaimage_header(data_file: str) -> str:
    return ("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\nElementSpacing = 1 1 1\n"
            f"ElementDataFile = {data_file}\n")


def test_a_header_naming_another_file_on_the_server_is_rejected(knee_server, intact, tmp_path):
    """A MetaImage or NRRD header may name a separate data file: uploaded, the server would read (and
    store, and serve back) whatever file of its own disk the header names."""
    secret = tmp_path / "other_patient.raw"
    secret.write_bytes(bytes(range(64)))
    header = tmp_path / "leak.mha"
    header.write_text(metaimage_header(str(secret)))
    assert_rejected(upload_image(knee_server, "leak", header), 422, "separate data file")
    with header.open("rb") as f:
        response = requests.post(f"{knee_server}/infer/knee_segmentation", files={"file": ("leak.mha", f)},
                                 data={"params": json.dumps({})}, timeout=60)
    assert_rejected(response, 422, "separate data file")
    nrrd = tmp_path / "leak.nrrd"
    nrrd.write_text(f"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: {secret}\n\n")
    assert_rejected(upload_image(knee_server, "leak", nrrd), 422, "separate data file")
    detached = tmp_path / "leak.mhd"
    detached.write_text(metaimage_header(str(secret)))
    assert_rejected(upload_image(knee_server, "leak", detached), 422, "single-file")


def test_inference_on_a_server_file_named_through_the_params_is_rejected(knee_server, intact, phantom_image):
    """Only the endpoint's own temporary upload passes as an image path: a file in the server's temporary
    folder named in the params is treated as an id, and refused."""
    planted = Path(tempfile.gettempdir()) / f"kneeai-test-{uuid.uuid4().hex}.nii.gz"
    sitk.WriteImage(phantom_image, str(planted))
    try:
        response = requests.post(f"{knee_server}/infer/knee_segmentation", params={"image": IMAGE_ID},
                                 data={"params": json.dumps({"image": str(planted)})}, timeout=60)
        assert_rejected(response, 400, "invalid image id")
    finally:
        planted.unlink()
