"""REST client for the KneeAI MONAI Label server.

Every request has a timeout; every failure becomes one of three typed errors with a message meant for
the user: ``ServerUnreachable`` (no answer: wrong URL, server down, network, timeout), ``ServerError``
(the server answered 4xx/5xx; carries its status code and its ``detail``), ``BadResponse`` (the server
answered 2xx with something this client cannot use). Only idempotent GETs are retried, with backoff.
Files from the server are written under names this client chooses (never the server's), to a
temporary name first and renamed, so a failed download leaves nothing half-written; by default into a
folder of this client's own (private, made on the first download), never a fixed name in the shared
temporary folder, where another user's folder or symlink could be waiting.
Pure Python: requests + the standard library (and volume.py for uploads).
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3.exceptions

from .atomic_files import write_bytes_atomically
from .volume import PixelVolume, write_volume_atomically

MODEL = "knee_segmentation"
CONNECT_TIMEOUT_S = 3.0
# Read timeouts by kind of call: quick questions, transfers of whole volumes, and inference.
QUICK_TIMEOUT_S = 15.0
TRANSFER_TIMEOUT_S = 300.0
INFER_TIMEOUT_S = 900.0
GET_RETRIES = 2
RETRY_STATUS = (502, 503, 504)
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


class KneeAIClientError(Exception):
    """Base of the errors this client raises."""


class ServerUnreachable(KneeAIClientError):
    """The server did not answer (refused, unknown host, network down, or no reply in time)."""


class ServerError(KneeAIClientError):
    """The server answered with an error status; ``detail`` is its own explanation."""

    def __init__(self, status_code: int, detail: str, url: str):
        self.status_code = status_code
        self.detail = detail
        self.url = url
        super().__init__(f"Server error {status_code} for {url}: {detail}")


class BadResponse(KneeAIClientError):
    """The server answered successfully with something that is not what the API promises."""


@dataclass(frozen=True)
class InferenceResult:
    label_path: Path
    params: dict[str, Any]


class KneeAIClient:
    def __init__(self, server_url: str, token: str | None = None, download_dir: str | Path | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, retries: int = GET_RETRIES):
        url = (server_url or "").strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"Server URL must start with http:// or https://, got {server_url!r}")
        self.server_url = url
        self.token = token
        self._download_dir = Path(download_dir) if download_dir else None
        self._download_dir_lock = threading.Lock()
        self.connect_timeout = connect_timeout
        self.retries = retries
        self._local = threading.local()  # one requests.Session per thread: jobs run on worker threads

    @property
    def download_dir(self) -> Path:
        """Where downloads go: the folder given, else one made for this client alone (mode 0700, readable
        by nobody else: the files are patients' images), on first use so that clients that only ask
        questions leave no empty folders behind."""
        with self._download_dir_lock:  # jobs download on worker threads: one folder, not one each
            if self._download_dir is None:
                self._download_dir = Path(tempfile.mkdtemp(prefix="kneeai-"))
            return self._download_dir

    @property
    def _http(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    # -- the API -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/info/", QUICK_TIMEOUT_S))

    def next_sample(self, strategy: str = "random", client_id: str | None = None) -> dict[str, Any] | None:
        """The case the strategy wants labelled next ({"id": ..., ...}), or None when none is left."""
        body = {"client_id": client_id} if client_id else {}
        path = f"/activelearning/{_safe_path(strategy)}"
        result = self._json(self._request("POST", path, INFER_TIMEOUT_S, json=body))
        if not result:
            return None
        if not isinstance(result, dict) or not result.get("id"):
            raise BadResponse(f"Active learning answer has no image id: {str(result)[:200]}")
        return result

    def upload_image(self, volume: PixelVolume, image_id: str, params: dict | None = None) -> str:
        """Stores a volume (voxels and geometry only) in the server's datastore; returns its id."""
        with tempfile.TemporaryDirectory(prefix="kneeai-upload-") as tmp:
            path = write_volume_atomically(volume, Path(tmp) / "image.nii.gz")
            with path.open("rb") as f:
                response = self._request(
                    "PUT", "/datastore/image", TRANSFER_TIMEOUT_S, params={"image": image_id},
                    files={"file": ("image.nii.gz", f, "application/octet-stream")},
                    data={"params": json.dumps(params or {})},
                )
        result = self._json(response)
        if not isinstance(result, dict) or "image" not in result:
            raise BadResponse(f"Upload answer has no image id: {str(result)[:200]}")
        return str(result["image"])

    def infer(self, image_id: str | None = None, image_file: str | Path | None = None, model: str = MODEL,
              params: dict | None = None, label_file: str | Path | None = None) -> InferenceResult:
        """Runs ``model`` on a datastore image (``image_id``) or on a file sent with the request
        (``image_file``: the server keeps no copy), with an optional label map sent along
        (``label_file``: the current labels an interactive model refines). Returns the label file and
        the server's params."""
        if bool(image_id) == bool(image_file):
            raise ValueError("infer needs exactly one of image_id and image_file")
        data = {"params": json.dumps(params or {})}
        query = {"image": image_id} if image_id else {}
        path = f"/infer/{_safe_path(model)}"
        with contextlib.ExitStack() as stack:
            files = {}
            if image_file:
                files["file"] = ("image" + _volume_suffix(str(image_file)),
                                 stack.enter_context(Path(image_file).open("rb")), "application/octet-stream")
            if label_file:
                files["label"] = ("label" + _volume_suffix(str(label_file)),
                                  stack.enter_context(Path(label_file).open("rb")), "application/octet-stream")
            response = self._request("POST", path, INFER_TIMEOUT_S, params=query, data=data, files=files or None)
        parts = parse_multipart(response)
        if "image" not in parts:
            raise BadResponse(f"Inference answer has no label image (parts: {sorted(parts)})")
        try:
            result_params = json.loads(parts["params"][1] or b"{}") if "params" in parts else {}
        except ValueError as e:
            raise BadResponse(f"Inference params are not JSON: {e}") from e
        filename, content = parts["image"]
        stem = f"{_safe_name(image_id or Path(image_file).name.split('.')[0])}_{_safe_name(model)}"
        label_path = self._write_download(content, stem + _volume_suffix(filename or ""))
        return InferenceResult(label_path, result_params)

    def save_label(self, image_id: str, label_path: str | Path, tag: str = "final", params: dict | None = None) -> dict:
        label_path = Path(label_path)
        with label_path.open("rb") as f:
            response = self._request(
                "PUT", "/datastore/label", TRANSFER_TIMEOUT_S, params={"image": image_id, "tag": tag},
                files={"label": ("label" + _volume_suffix(label_path.name), f, "application/octet-stream")},
                data={"params": json.dumps(params or {})},
            )
        return self._json(response)

    def download_image(self, image_id: str) -> Path:
        response = self._request("GET", "/datastore/image", TRANSFER_TIMEOUT_S, params={"image": image_id})
        return self._save_response(response, f"{_safe_name(image_id)}_image")

    def download_label(self, image_id: str, tag: str = "final") -> Path:
        response = self._request("GET", "/datastore/label", TRANSFER_TIMEOUT_S, params={"label": image_id, "tag": tag})
        return self._save_response(response, f"{_safe_name(image_id)}_label_{_safe_name(tag)}")

    def train_start(self, model: str = MODEL, params: dict | None = None) -> dict:
        return self._json(self._request("POST", f"/train/{_safe_path(model)}", QUICK_TIMEOUT_S, json=params or {}))

    def train_stop(self) -> dict:
        return self._json(self._request("DELETE", "/train/", QUICK_TIMEOUT_S))

    def train_status(self) -> dict | None:
        """The running training task (MONAI Label's task record), or None when none is running."""
        try:
            return self._json(self._request("GET", "/train/", QUICK_TIMEOUT_S, params={"check_if_running": "true"}))
        except ServerError as e:
            if e.status_code == 404:  # MONAI Label's answer for "no training running"
                return None
            raise

    # -- plumbing ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, read_timeout: float, **kwargs) -> requests.Response:
        url = self.server_url + path
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        attempts = 1 + (self.retries if method == "GET" else 0)  # only idempotent calls are repeated
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                deadline = time.monotonic() + self.connect_timeout + read_timeout
                response = self._http.request(method, url, headers=headers, stream=True,
                                              timeout=(self.connect_timeout, read_timeout), **kwargs)
                _read_body_by(response, deadline)
            except _ReplyBroken as e:
                if last:
                    raise ServerUnreachable(f"The KneeAI server at {self.server_url} stopped sending its reply to "
                                            f"{method} {path}: {e}") from e
            except requests.Timeout as e:
                if last:
                    raise ServerUnreachable(
                        f"No answer from the KneeAI server at {self.server_url} within "
                        f"{self.connect_timeout:g} s (connect) / {read_timeout:g} s (reply): {method} {path}") from e
            except requests.ConnectionError as e:
                if last:
                    raise ServerUnreachable(
                        f"Cannot reach the KneeAI server at {self.server_url}: is it running, and is the URL "
                        f"right? ({_reason(e)})") from e
            except requests.RequestException as e:
                raise ServerUnreachable(f"Request to {url} failed: {e}") from e
            else:
                if response.status_code in RETRY_STATUS and not last:
                    pass  # gateway/overload answers are worth a second try for a GET
                elif response.status_code >= 400:
                    raise ServerError(response.status_code, _detail(response), f"{method} {path}")
                else:
                    return response
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise BadResponse(f"Expected JSON from {response.request.method} {response.url}, got "
                              f"{response.headers.get('content-type')}: {response.text[:200]!r}") from e

    def _save_response(self, response: requests.Response, stem: str) -> Path:
        disposition = response.headers.get("content-disposition", "")
        match = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', disposition)
        return self._write_download(response.content, stem + _volume_suffix(match.group(1) if match else ""))

    def _write_download(self, content: bytes, name: str) -> Path:
        if not content:
            raise BadResponse(f"The server sent an empty file for {name}")
        # A unique part in every name: jobs, and other clients sharing the folder, never collide.
        return write_bytes_atomically(self.download_dir / f"{uuid.uuid4().hex[:8]}_{name}", content)


class _ReplyBroken(requests.ConnectionError):
    """The connection ended (or failed) while the reply's body was arriving, after its headers."""


def _read_body_by(response: requests.Response, deadline: float) -> None:
    """Reads the whole reply before ``deadline`` (time.monotonic) or raises requests.Timeout. requests'
    read timeout bounds each read, not the reply: a server sending a byte now and then kept the client
    waiting for ever. Stored where requests keeps a body it has read itself (``response.content``).
    urllib3's own errors are raised as requests' (as ``iter_content`` does), so that ``_request`` types
    and retries them like any other: a stalled read as requests.Timeout, a cut connection as _ReplyBroken."""
    chunks = []
    while True:
        try:
            # read1: whatever one read from the socket brings (iter_content waits for a full chunk first)
            chunk = response.raw.read1(1 << 16, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as e:
            response.close()
            raise requests.Timeout(f"the reply stopped arriving ({sum(map(len, chunks))} bytes read): {e}") from e
        except urllib3.exceptions.HTTPError as e:  # ProtocolError (connection cut, IncompleteRead), DecodeError, ...
            response.close()
            raise _ReplyBroken(f"{sum(map(len, chunks))} bytes arrived, then: {e.args[0] if e.args else e}") from e
        if not chunk:
            break
        chunks.append(chunk)
        if time.monotonic() > deadline:
            response.close()
            raise requests.Timeout(f"the reply was still arriving at the time limit ({sum(map(len, chunks))} bytes)")
    response._content, response._content_consumed = b"".join(chunks), True
    response.close()


def parse_multipart(response: requests.Response) -> dict[str, tuple[str | None, bytes]]:
    """Parts of a multipart/form-data answer: name -> (filename, content)."""
    content_type = response.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if "multipart" not in content_type or not match:
        raise BadResponse(f"Expected a multipart answer, got {content_type or 'no content type'}: "
                          f"{response.text[:200]!r}")
    delimiter = b"--" + match.group(1).encode()
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in response.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, separator, body = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise BadResponse("Malformed multipart answer: a part has no header end")
        headers = head.decode("latin-1")
        name = re.search(r'name="([^"]*)"', headers)
        filename = re.search(r'filename="([^"]*)"', headers)
        if name:
            content = body[:-2] if body.endswith(b"\r\n") else body  # the CRLF before the next delimiter
            parts[name.group(1)] = (filename.group(1) if filename else None, content)
    return parts


def _detail(response: requests.Response) -> str:
    """The server's own explanation: FastAPI's {"detail": ...}, else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict)
                           else str(d) for d in detail)
    if detail:
        return str(detail)
    return (response.text or response.reason or "no details").strip()[:500]


def _reason(error: Exception) -> str:
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out",
                   "Temporary failure in name resolution", "Network is unreachable"):
        if marker in text:
            return marker
    return text[:200]


def _volume_suffix(filename: str) -> str:
    lowered = filename.lower()
    return next((s for s in VOLUME_SUFFIXES if lowered.endswith(s)), ".nii.gz")


def _safe_name(value: str) -> str:
    """A file name component made only of safe characters (ids and tags come from the server)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(value)).strip(".")[:100] or "unnamed"


def _safe_path(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+$", value or ""):
        raise ValueError(f"Invalid model or strategy name {value!r}")
    return value
