"""One GET of the price API: a server that trickles its answer ends the request and its thread too."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import ClassVar

import pytest

from battery_worker.monitor import fetching
from battery_worker.monitor.fetching import FetchFailed, fetch
from tests.waiting import wait_until


class _Trickle(BaseHTTPRequestHandler):
    """Sends ``answer()`` a byte every ``pause_s``: each read within the socket timeout, the whole not."""

    pause_s = 0.2

    def answer(self) -> bytes:
        raise NotImplementedError

    def do_GET(self) -> None:
        for byte in self.answer():
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            time.sleep(self.pause_s)

    def log_message(self, format: str, *args: object) -> None:
        return


class Trickling(_Trickle):
    """Headers at once, then the body trickled."""

    def answer(self) -> bytes:
        body = b"[" + b" " * 60 + b"]"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body


class TricklingHeaders(_Trickle):
    """The status line and headers themselves trickled: urlopen reads them before any body."""

    def answer(self) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 40 + b"\r\n\r\n[]"


class TricklingUntilClosed(_Trickle):
    """No Content-Length: the body ends where the server closes, so a cut connection reads as its end.
    Its bytes 0.8 s apart: the 1 s deadline falls in a wait, a read past it would take the next byte."""

    pause_s = 0.8

    def answer(self) -> bytes:
        self.send_response(200)
        self.end_headers()
        return b"[" + b" " * 60 + b"]"


@pytest.fixture(
    params=[Trickling, TricklingHeaders, TricklingUntilClosed], ids=["body", "headers", "unsized"]
)
def trickling_url(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/prices"
    finally:
        server.shutdown()
        server.server_close()


def _threads_in_a_request() -> int:
    """Threads now inside :func:`fetching.fetch_blocking`, whichever pool runs them."""
    count = 0
    for frame in sys._current_frames().values():
        found: FrameType | None = frame
        while found is not None and found.f_code is not fetching.fetch_blocking.__code__:
            found = found.f_back
        count += found is not None
    return count


async def test_a_trickled_answer_ends_the_request_and_its_thread(trickling_url: str) -> None:
    """The thread read the body whole (12 s here) after wait_for had given up at 1 s: a few such polls
    filled the loop's default pool, which aiokafka's DNS lookups share. Headers trickled the same way kept
    it reading them after the body's deadline check came in (a review run)."""
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timeout"):
        await fetch(trickling_url, {}, timeout_s=1.0, max_bytes=1_000)
    assert time.monotonic() - started < 1.5
    wait_until(lambda: _threads_in_a_request() == 0, 3.0, "the request's thread to end", poll_s=0.05)


def test_a_body_cut_at_the_deadline_is_a_timeout_not_a_short_answer(trickling_url: str) -> None:
    """The thread's own view, without the loop's ``wait_for``. An unsized answer hands its socket from the
    connection to the response, so the timer found no socket to cut and the thread read on to the next
    byte (or the socket timeout); a cut body ends as if the server had closed it, and must not come back
    as a short answer (then malformed)."""
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timeout"):
        fetching.fetch_blocking(trickling_url, {}, timeout_s=1.0, max_bytes=1_000)
    assert time.monotonic() - started < 1.5, "read on past the deadline (the next byte came at 1.6 s)"


class _Redirecting(BaseHTTPRequestHandler):
    """``/moved`` redirects to ``target``; any other path answers ``[]`` and records the request's headers."""

    target = ""
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", self.target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, format: str, *args: object) -> None:
        return


Served = tuple[str, type[_Redirecting]]


@pytest.fixture
def two_servers() -> Iterator[tuple[Served, Served]]:
    """Two price APIs on two ports (two origins), each with its own record of what reached it."""
    served: list[Served] = []
    servers = []
    for _ in range(2):
        handler = type("Recording", (_Redirecting,), {"seen": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        served.append((f"http://127.0.0.1:{server.server_address[1]}", handler))
    try:
        yield served[0], served[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_redirect_to_another_origin_is_not_followed_with_the_api_key(
    two_servers: tuple[Served, Served],
) -> None:
    """urllib sent every header on to wherever a redirect pointed: the API key reached another host (a
    review run). Within the API's origin a redirect is still followed, headers and all."""
    (api, at_api), (elsewhere, at_elsewhere) = two_servers
    at_api.target = f"{elsewhere}/steal?k=1"
    with pytest.raises(FetchFailed) as refused:
        fetching.fetch_blocking(f"{api}/moved", {"X-Api-Key": "k-secret"}, timeout_s=5, max_bytes=1000)
    assert refused.value.kind == "http_status"
    assert f"HTTP 302 redirects to {elsewhere}, another origin than --url's: not followed" in str(
        refused.value
    )
    assert "k-secret" not in str(refused.value)
    assert "steal" not in str(refused.value)
    assert at_elsewhere.seen == []
    for unusable in ("http://127.0.0.1:99999/x", "http://[::1/x"):  # each stopped the monitor
        at_api.target = unusable
        with pytest.raises(FetchFailed) as refused:
            fetching.fetch_blocking(f"{api}/moved", {}, timeout_s=5, max_bytes=1000)
        assert "HTTP 302 redirects to an unusable address" in str(refused.value)
    at_api.target = f"{api}/prices"
    body = fetching.fetch_blocking(f"{api}/moved", {"X-Api-Key": "k-secret"}, timeout_s=5, max_bytes=1000)
    assert body == b"[]"
    assert at_api.seen[-1]["X-Api-Key"] == "k-secret"


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    """A monitor review's API answered 429 with Retry-After: 30 and was polled every 2 s."""
    from datetime import UTC, datetime

    from battery_worker.monitor.fetching import retry_after_s

    now = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s("Sun, 06 Dec 2026 16:00:30 GMT", now) == 30.0
    assert retry_after_s("Sun, 06 Dec 2026 15:00:00 GMT", now) == 0.0  # already past
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None
    assert retry_after_s("", now) is None
