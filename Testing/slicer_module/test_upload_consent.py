"""Upload consent is kept per server, whichever way the user writes the server's URL."""

from __future__ import annotations

import numpy as np

from KneeAILib.upload import JsonConsentStore, SettingsConsentStore, anonymous_image_id, consent_key
from KneeAILib.volume import PixelVolume


def test_consent_key_ignores_case_of_host_and_trailing_slash():
    assert consent_key("HTTP://Knee-Server:8000/") == consent_key("http://knee-server:8000")
    assert consent_key("http://a:8000") != consent_key("http://a:8001")
    assert consent_key("https://host/kneeai/") != consent_key("https://host/other")


def test_json_store_remembers_per_server(tmp_path):
    store = JsonConsentStore(tmp_path / "sub" / "consent.json")
    assert not store.has_consent("http://a:8000")
    store.set_consent("http://a:8000/", True)
    reopened = JsonConsentStore(tmp_path / "sub" / "consent.json")
    assert reopened.has_consent("http://A:8000") and not reopened.has_consent("http://b:8000")
    reopened.set_consent("http://a:8000", False)
    assert not JsonConsentStore(tmp_path / "sub" / "consent.json").has_consent("http://a:8000")


def test_unreadable_consent_file_means_no_consent(tmp_path):
    path = tmp_path / "consent.json"
    path.write_text("{not json")
    assert not JsonConsentStore(path).has_consent("http://a:8000")


def test_settings_store_as_slicer_uses_it():
    settings: dict[str, str] = {}  # QSettings' value() returns None for a missing key, as dict.get does
    store = SettingsConsentStore(settings.get, settings.__setitem__, "KneeAI/uploadConsent/")
    assert not store.has_consent("http://a:8000")
    store.set_consent("http://a:8000", True)
    assert settings == {"KneeAI/uploadConsent/http:||a:8000": "yes"}
    assert store.has_consent("http://a:8000/")


def test_anonymous_id_depends_on_voxels_and_geometry_only():
    volume = PixelVolume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0),
                         (1, 0, 0, 0, 1, 0, 0, 0, 1))
    same = PixelVolume(volume.array.copy(), tuple(np.float64(v) for v in volume.spacing), volume.origin,
                       tuple(float(v) for v in volume.direction))
    assert anonymous_image_id(volume) == anonymous_image_id(same)  # numpy or Python numbers alike
    moved = PixelVolume(volume.array, volume.spacing, (0.0, 0.0, 1.0), volume.direction)
    changed = volume.with_array(volume.array + 1)
    assert len({anonymous_image_id(v) for v in (volume, moved, changed)}) == 3
    assert anonymous_image_id(volume).startswith("upload-")
