"""The REST client's failures: typed, with the server's own message, and fast when nobody answers."""

from __future__ import annotations

import http.server
import socket
import stat
import tempfile
import threading
import time

import numpy as np
import pytest

from KneeAILib.annotator import fetch_server_info
from KneeAILib.client import BadResponse, KneeAIClient, ServerError, ServerUnreachable
from KneeAILib.volume import PixelVolume


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # freed on close: nothing listens there


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """A real HTTP server that is not a KneeAI server: answers with a fixed status/body, records requests."""

    status = 200
    body = b"<html>not a KneeAI server</html>"
    content_type = "text/html"
    requests: list[tuple[str, str, str | None]] = []

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        type(self).requests.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_response(self.status)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def other_server():
    RecordingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unreachable_server_fails_fast_with_a_clear_message():
    client = KneeAIClient(f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(ServerUnreachable, match=r"Cannot reach the KneeAI server at http://127\.0\.0\.1:\d+.*running"):
        client.info()
    assert time.monotonic() - started < 5.0  # two retries with short backoff, no long hang


def assert_no_answer_within(listener: socket.socket, read_timeout: float, seconds: float, **client_options) -> None:
    """A GET to the server behind ``listener`` ends in ServerUnreachable ("No answer") within ``seconds``."""
    client = KneeAIClient(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=0, **client_options)
    started = time.monotonic()
    with pytest.raises(ServerUnreachable, match="No answer"):
        client._request("GET", "/info/", read_timeout=read_timeout)
    assert time.monotonic() - started < seconds


def test_silent_server_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never answers
    try:
        assert_no_answer_within(listener, read_timeout=0.5, seconds=3.0)
    finally:
        listener.close()


def test_a_server_that_trickles_its_reply_times_out_on_the_whole_reply():
    """requests' read timeout bounds each read: a reply sent a byte at a time kept the client waiting
    for ever. A stand-in server (a real KneeAI server cannot be made to trickle) sends one byte every
    0.2 s of a 60-byte reply; with a 1 s limit the client gives up after about 1 s, not 12."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def trickle():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            body = b'{"name": "' + b"x" * 48 + b'"}'
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                               b"content-length: %d\r\n\r\n" % len(body))
            for byte in body:
                if stop.is_set():
                    return
                connection.sendall(bytes([byte]))
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        assert_no_answer_within(listener, read_timeout=1.0, seconds=3.0, connect_timeout=0.5)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_a_reply_that_breaks_off_after_its_headers_is_typed_and_retried(fault):
    """A reply whose body stops half-way, the connection cut or silent, was a raw urllib3 error (no
    retry, a traceback in the command line). A stand-in server, since a real KneeAI server cannot be
    made to break off mid-reply: it sends the headers and 4 of 100 promised bytes on every connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)
    listener.settimeout(0.05)  # the loop below checks ``stop`` this often
    stop, requests_seen, stalled = threading.Event(), [], []

    def break_off():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            requests_seen.append(connection.recv(65536).split(b" ")[0])
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                               b"content-length: 100\r\n\r\n{\"a\"")
            if fault == "stall":
                stalled.append(connection)  # open and silent until the test ends
            else:
                connection.close()

    thread = threading.Thread(target=break_off, daemon=True)
    thread.start()
    client = KneeAIClient(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=1, connect_timeout=0.5)
    expected = "No answer" if fault == "stall" else "stopped sending its reply to GET /info/: 4 bytes arrived"
    try:
        with pytest.raises(ServerUnreachable, match=expected):
            client._request("GET", "/info/", read_timeout=0.3)
        assert requests_seen == [b"GET", b"GET"]  # a GET is asked again
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in stalled:
            connection.close()


def test_downloads_go_to_a_private_folder_of_each_client(tmp_path, monkeypatch):
    """Not a fixed <tmp>/kneeai: there another user's folder, or a symlink left to one, received the
    patient images, and a second user could not write at all."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    elsewhere = tmp_path / "other_users_folder"
    elsewhere.mkdir()
    (tmp_path / "kneeai").symlink_to(elsewhere)
    first, second = KneeAIClient("http://127.0.0.1:8000"), KneeAIClient("http://127.0.0.1:8000")
    path = first._write_download(b"patient voxels", "case1_image.nii.gz")  # what download_image and infer call
    assert path.read_bytes() == b"patient voxels" and list(elsewhere.iterdir()) == []
    assert path.parent.parent == tmp_path and path.parent.name.startswith("kneeai-")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert second.download_dir != first.download_dir
    chosen = KneeAIClient("http://127.0.0.1:8000", download_dir=tmp_path / "mine")
    assert chosen._write_download(b"x", "y.nii.gz").parent == tmp_path / "mine"


def test_bad_server_url_is_refused_before_any_request():
    with pytest.raises(ValueError, match="http"):
        KneeAIClient("127.0.0.1:8000")


def test_a_server_that_is_not_kneeai_gives_bad_response(other_server):
    _, url = other_server
    with pytest.raises(BadResponse, match="Expected JSON"):
        KneeAIClient(url).info()


def test_a_json_server_without_the_knee_schema_is_not_taken_for_kneeai(other_server):
    # What the module's Connect and the command line both ask: not a bare KeyError 'knee_schema'.
    _, url = other_server
    handler = RecordingHandler
    handler.body, handler.content_type = b'{"name": "another MONAI Label app"}', "application/json"
    try:
        with pytest.raises(BadResponse, match="is not a KneeAI server"):
            fetch_server_info(KneeAIClient(url))
    finally:
        handler.body, handler.content_type = b"<html></html>", "text/html"


def test_token_is_sent_and_only_gets_are_retried(other_server):
    server, url = other_server
    handler = RecordingHandler
    handler.status, handler.body, handler.content_type = 503, b'{"detail": "busy"}', "application/json"
    try:
        client = KneeAIClient(url, token="s3cret", retries=2)
        with pytest.raises(ServerError) as error:
            client.info()
        assert error.value.status_code == 503 and error.value.detail == "busy"
        assert [r[0] for r in RecordingHandler.requests] == ["GET"] * 3
        assert {r[2] for r in RecordingHandler.requests} == {"Bearer s3cret"}
        RecordingHandler.requests.clear()
        with pytest.raises(ServerError):
            client.next_sample("random")  # a POST: never repeated
        assert [r[0] for r in RecordingHandler.requests] == ["POST"]
    finally:
        handler.status, handler.body, handler.content_type = 200, b"<html></html>", "text/html"


@pytest.mark.server
def test_4xx_carries_the_servers_detail(knee_server, tmp_path):
    client = KneeAIClient(knee_server, download_dir=tmp_path)
    with pytest.raises(ServerError) as error:
        client.infer(image_id="no_such_case")
    assert error.value.status_code == 404 and "not found" in error.value.detail
    with pytest.raises(ServerError) as error:
        client.download_image("../etc/passwd")
    assert 400 <= error.value.status_code < 500

    # A label on the wrong grid: the datastore refuses it and says why.
    wrong = PixelVolume(np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    from KneeAILib.volume import write_volume_atomically

    path = write_volume_atomically(wrong, tmp_path / "wrong.nii.gz")
    with pytest.raises(ServerError) as error:
        client.save_label("knee_phantom_003", path)
    assert error.value.status_code == 422
    assert "does not match its image" in error.value.detail
    assert "does not match its image" in str(error.value)
