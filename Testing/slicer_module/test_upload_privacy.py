"""A DICOM-derived volume reaches the server as voxels and geometry only, and only with consent.

The real multi-echo MESE series is read and split by echo (KneeAILib's reader, compared with the
server's own), uploaded, and the file the server stored is inspected: no patient name, id, dates or
UIDs from the DICOM headers, in its header or anywhere in its bytes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from KneeAILib.upload import ConsentRequired, JsonConsentStore, anonymous_image_id, upload_volume
from KneeAILib.volume import read_dicom_echoes

pytestmark = pytest.mark.server

IDENTIFYING_TAGS = {
    "0010|0010": "PatientName", "0010|0020": "PatientID", "0010|0030": "PatientBirthDate",
    "0008|0020": "StudyDate", "0008|0080": "InstitutionName", "0008|0090": "ReferringPhysicianName",
    "0020|000d": "StudyInstanceUID", "0020|000e": "SeriesInstanceUID", "0008|0018": "SOPInstanceUID",
    "0020|0052": "FrameOfReferenceUID", "0008|0050": "AccessionNumber",
}


@pytest.fixture(scope="module")
def mese_echoes(mese_dicom_path):
    return read_dicom_echoes(mese_dicom_path)


@pytest.fixture(scope="module")
def dicom_header_values(mese_dicom_path) -> dict[str, str]:
    """The identifying values the DICOM files carry (those that are not empty)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(sorted(p for p in mese_dicom_path.iterdir() if p.is_file())[0]))
    reader.ReadImageInformation()
    values = {name: reader.GetMetaData(tag).strip() for tag, name in IDENTIFYING_TAGS.items()
              if reader.HasMetaDataKey(tag)}
    return {name: value for name, value in values.items() if len(value) >= 4}


def test_echoes_are_split_as_the_server_splits_them(mese_echoes, mese_dicom_path):
    # The server's reader, used here only as the reference (Testing/conftest.py puts the app on the path).
    from lib.transforms.image_io import read_dicom_echoes as server_read_dicom_echoes

    server = server_read_dicom_echoes(mese_dicom_path)
    assert len(mese_echoes) == len(server) == 8
    for (te, ours), (server_te, theirs) in zip(mese_echoes, server):
        assert te == pytest.approx(server_te)
        assert np.array_equal(ours.array, sitk.GetArrayFromImage(theirs))
        assert np.allclose(ours.direction, theirs.GetDirection()) and np.allclose(ours.origin, theirs.GetOrigin())
    assert [te for te, _ in mese_echoes] == sorted(te for te, _ in mese_echoes)


def test_upload_needs_consent_per_server(annotator_client, annotator_studies, mese_echoes, tmp_path):
    consent = JsonConsentStore(tmp_path / "consent.json")
    consent.set_consent("http://other-server:8000", True)  # consent to another server does not count
    volume = mese_echoes[-1][1]  # an echo no other test uploads
    before = sorted(annotator_studies.iterdir())
    with pytest.raises(ConsentRequired, match=annotator_client.server_url):
        upload_volume(annotator_client, volume, consent)
    assert sorted(annotator_studies.iterdir()) == before, "something was stored without consent"
    assert not list(annotator_studies.glob(f"{anonymous_image_id(volume)}*"))


def test_stored_upload_has_no_dicom_header_field(annotator_client, annotator_studies, mese_echoes,
                                                 dicom_header_values, tmp_path):
    assert {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"} <= set(dicom_header_values), \
        "the test needs the UIDs the DICOM files carry"
    consent = JsonConsentStore(tmp_path / "consent.json")
    consent.set_consent(annotator_client.server_url + "/", True)  # the same server, written differently
    volume = mese_echoes[0][1]
    image_id = upload_volume(annotator_client, volume, consent)
    assert image_id == anonymous_image_id(volume)
    assert "mese" not in image_id.lower() and "dicom" not in image_id.lower()
    assert upload_volume(annotator_client, volume, consent) == image_id  # same voxels: found, not duplicated

    stored_files = list(annotator_studies.glob(f"{image_id}.*"))
    assert len(stored_files) == 1, stored_files
    stored = sitk.ReadImage(str(stored_files[0]))
    assert np.array_equal(sitk.GetArrayFromImage(stored), volume.array)
    assert np.allclose(stored.GetOrigin(), volume.origin, atol=1e-4)
    assert np.allclose(stored.GetDirection(), volume.direction, atol=1e-6)
    assert not [k for k in stored.GetMetaDataKeys() if "|" in k], "DICOM tags in the stored header"
    raw = gzip.decompress(stored_files[0].read_bytes())
    header_text = " ".join(stored.GetMetaData(k) for k in stored.GetMetaDataKeys())
    for name, value in dicom_header_values.items():
        assert value.encode() not in raw, f"{name} ({value}) is in the stored file"
        assert value not in header_text, f"{name} is in the stored header"


def test_a_local_volume_is_uploaded_then_segmented(annotator_client, mese_echoes, schema, tmp_path):
    """What the module's Segment button does for a volume that did not come from the server."""
    from KneeAILib.annotator import upload_and_propose

    consent = JsonConsentStore(tmp_path / "consent.json")
    consent.set_consent(annotator_client.server_url, True)
    volume = mese_echoes[0][1]
    image_id, proposal = upload_and_propose(annotator_client, None, volume, consent, schema)
    assert image_id == anonymous_image_id(volume)
    assert proposal.labels.same_geometry(volume)
    assert set(np.unique(proposal.labels.array)) <= schema.allowed_values()
