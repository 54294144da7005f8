"""Sending a local volume to a server: pixels and geometry only, and only with the user's consent.

A local knee MRI (from DICOM or a file) leaves the machine as a fresh NIfTI written from its voxel
array, spacing, origin and direction (``PixelVolume``): no DICOM header, patient name, id or UID goes
with it, and its image id is derived from the voxels, not from a file or folder name (those often
carry the patient's name). The user agrees once per server; the answer is kept in a ``ConsentStore``
(a JSON file here, QSettings in Slicer) keyed by the server URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

from .client import KneeAIClient, ServerError
from .volume import PixelVolume


class ConsentRequired(PermissionError):
    """The user has not agreed to send images to this server."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        super().__init__(
            f"Sending images to {server_url} needs your consent: the image's voxels and geometry (no DICOM "
            f"header, names or ids) will be stored on that server.")


class ConsentStore(Protocol):
    def has_consent(self, server_url: str) -> bool: ...

    def set_consent(self, server_url: str, granted: bool) -> None: ...


def consent_key(server_url: str) -> str:
    """One key per server, whatever the user typed around it (case of the host, trailing slash)."""
    url = server_url.strip().rstrip("/")
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}" + (f"/{path}" if path else "")


class JsonConsentStore:
    """Consent per server in a small JSON file (the command-line client's store)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, bool]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable: ask again rather than assume consent
        return {str(k): bool(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def has_consent(self, server_url: str) -> bool:
        return self._read().get(consent_key(server_url), False)

    def set_consent(self, server_url: str, granted: bool) -> None:
        data = self._read()
        data[consent_key(server_url)] = bool(granted)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)


class SettingsConsentStore:
    """Consent per server in any key-value settings store: Slicer passes QSettings' value/setValue."""

    def __init__(self, read, write, prefix: str = "KneeAI/uploadConsent/"):
        self.read, self.write, self.prefix = read, write, prefix

    def _key(self, server_url: str) -> str:
        return self.prefix + consent_key(server_url).replace("/", "|")  # '/' would nest settings groups

    def has_consent(self, server_url: str) -> bool:
        return str(self.read(self._key(server_url))) == "yes"

    def set_consent(self, server_url: str, granted: bool) -> None:
        self.write(self._key(server_url), "yes" if granted else "no")


def default_consent_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kneeai" / "upload_consent.json"


def anonymous_image_id(volume: PixelVolume) -> str:
    """An id computed from the voxels and geometry: says nothing about the patient, and the same
    volume always gets the same id (so uploading it twice finds the first copy)."""
    digest = hashlib.sha256()
    digest.update(str(volume.array.dtype).encode())
    # Plain ints and floats: numpy 2 writes its scalars differently (np.float64(0.5)), and the same
    # volume must get the same id whichever numpy the client runs.
    geometry = (tuple(int(n) for n in volume.array.shape),
                *(tuple(float(v) for v in values) for values in (volume.spacing, volume.origin, volume.direction)))
    digest.update(repr(geometry).encode())
    digest.update(volume.array.tobytes())
    return "upload-" + digest.hexdigest()[:16]


def upload_volume(client: KneeAIClient, volume: PixelVolume, consent: ConsentStore,
                  image_id: str | None = None) -> str:
    """Stores ``volume`` in the server's datastore if the user consented; returns its image id."""
    if not consent.has_consent(client.server_url):
        raise ConsentRequired(client.server_url)
    image_id = image_id or anonymous_image_id(volume)
    try:
        return client.upload_image(volume, image_id)
    except ServerError as e:
        if e.status_code == 409 and image_id.startswith("upload-"):
            return image_id  # the same voxels are already there (the id is their hash)
        raise
