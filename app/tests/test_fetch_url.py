import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import URLError

import pytest
from celery.exceptions import Retry

from taskapp.tasks import fetch_url

BODY = b"hello from the fixture\n"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok":
            self._answer(200, BODY)
        elif self.path == "/to-ok":
            self._answer(302, b"", location="/ok")
        elif self.path == "/to-ftp":
            self._answer(302, b"", location="ftp://127.0.0.1/file")
        else:
            self._answer(404, b"not here")

    def _answer(self, status: int, body: bytes, location: str = "") -> None:
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def refused_url() -> str:
    # A port that was free a moment ago: nothing listens, so the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records each retry the task asks for, instead of scheduling it."""
    calls: list[dict[str, Any]] = []

    def record(*args: object, **kwargs: Any) -> Retry:  # noqa: ANN401 - Task.retry's signature
        calls.append(kwargs)
        raise Retry("recorded", kwargs.get("exc"), when=kwargs.get("countdown"))

    monkeypatch.setattr(fetch_url, "retry", record)
    return calls


def test_200_returns_status_size_and_hash(server: str, retries: list[dict[str, Any]]) -> None:
    assert fetch_url(f"{server}/ok") == {
        "url": f"{server}/ok",
        "status": 200,
        "bytes": len(BODY),
        "sha256": hashlib.sha256(BODY).hexdigest(),
    }
    assert retries == []


def test_redirect_is_followed(server: str) -> None:
    assert fetch_url(f"{server}/to-ok")["status"] == 200


def test_404_is_a_result_and_is_not_retried(server: str, retries: list[dict[str, Any]]) -> None:
    result = fetch_url.apply(args=(f"{server}/missing",))
    assert result.state == "SUCCESS"
    assert result.get()["status"] == 404
    assert result.get()["bytes"] == len(b"not here")
    assert retries == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hi", "127.0.0.1/ok", ""]
)
def test_other_schemes_are_refused_without_retry(url: str, retries: list[dict[str, Any]]) -> None:
    result = fetch_url.apply(args=(url,))
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert retries == []


def test_redirect_to_another_scheme_is_refused(server: str, retries: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="only http and https"):
        fetch_url(f"{server}/to-ftp")
    assert retries == []


def test_refused_connection_retries_with_growing_backoff(
    refused_url: str, retries: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Full jitter draws from [0, backoff]; taking the top of the range makes the backoff visible.
    monkeypatch.setattr(random, "randrange", lambda stop: stop - 1)
    for attempt in range(8):
        result = fetch_url.apply(args=(refused_url,), retries=attempt)
        assert result.state == "RETRY"
    assert [call["countdown"] for call in retries] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert all(isinstance(call["exc"], URLError) for call in retries)


def test_backoff_is_jittered_within_its_bound(
    refused_url: str, retries: list[dict[str, Any]]
) -> None:
    for _ in range(5):
        fetch_url.apply(args=(refused_url,), retries=4)
    assert all(0 <= call["countdown"] <= 16 for call in retries)


def test_retries_are_bounded(refused_url: str) -> None:
    assert (fetch_url.max_retries, getattr(fetch_url, "retry_backoff_max", None)) == (5, 60)
    # The sixth failure (five retries already spent) gives up with the network error itself.
    result = fetch_url.apply(args=(refused_url,), retries=5)
    assert result.state == "FAILURE"
    assert isinstance(result.result, URLError)
