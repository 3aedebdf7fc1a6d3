"""One GET of the price API with the standard library, in a thread, within a deadline.

``urllib`` rather than an HTTP client dependency: one request a minute needs no connection pool. The
request runs in a thread of its own pool (not the loop's default one, which aiokafka's DNS lookups use), so
the event loop, and with it SIGTERM and the metrics server, stays responsive while a server hangs.
``wait_for`` bounds the wait for the whole request; in the thread, a timer shuts the request's sockets down
at the same deadline, so a server that trickles its headers or body (each byte within the socket timeout)
cannot keep the thread running either. A socket is known once connected, TLS handshake included: until
then only the socket timeout bounds each step.

Every failure is a :class:`FetchFailed` of one kind; header values never appear in its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal

from battery_worker.errors import BatteryWorkerError

FetchKind = Literal["timeout", "http_status", "connection", "malformed"]

USER_AGENT = "battery-worker-monitor"


class FetchFailed(BatteryWorkerError):
    """One poll of the price API failed, of one ``kind``: retriable, the next poll may answer."""

    retriable = True

    def __init__(self, kind: FetchKind, detail: str, retry_after_s: float | None = None) -> None:
        self.kind: FetchKind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        """The wait the API asked for (``Retry-After`` of a 429 or 503), if any."""
        super().__init__(f"{kind}: {detail}")


_REQUESTS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="price-api")
"""The monitor asks one request at a time; two threads leave room for one that has not ended yet."""


async def fetch(url: str, headers: dict[str, str], *, timeout_s: float, max_bytes: int) -> bytes:
    """The body of a 2xx answer to ``GET url``; :class:`FetchFailed` otherwise."""
    loop = asyncio.get_running_loop()
    request = functools.partial(fetch_blocking, url, headers, timeout_s=timeout_s, max_bytes=max_bytes)
    try:
        return await asyncio.wait_for(loop.run_in_executor(_REQUESTS, request), timeout_s)
    except TimeoutError:
        raise FetchFailed("timeout", f"no whole answer within {timeout_s:g} s") from None


def fetch_blocking(url: str, headers: dict[str, str], *, timeout_s: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(  # noqa: S310 (the URL is checked to be http or https in the settings)
        url, headers={"Accept": "application/json", "User-Agent": USER_AGENT, **headers}
    )
    watched = _Connections()
    opener = urllib.request.build_opener(
        _HTTPHandler(watched), _HTTPSHandler(watched), _SameOriginRedirects()
    )
    cut = threading.Timer(timeout_s, watched.cut)  # headers trickled a byte at a time are cut off too
    cut.daemon = True
    cut.start()
    try:
        body = _get(opener, request, timeout_s=timeout_s, max_bytes=max_bytes)
    except FetchFailed as failure:
        if watched.expired and failure.kind != "timeout":  # what a cut connection looks like
            raise FetchFailed("timeout", f"no whole answer within {timeout_s:g} s") from None
        raise
    finally:
        cut.cancel()
    if watched.expired:  # cut: an answer that ends where the server closes ended there
        raise FetchFailed("timeout", f"no whole answer within {timeout_s:g} s")
    return body


class _Connections:
    """The sockets a request opened, to shut down at its deadline from the timer's thread.

    Sockets, not connections: an answer that ends where the server closes (no Content-Length) takes the
    socket from its connection, whose ``sock`` is then None while the body is still being read.
    """

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.expired = False

    def plain(self, host: str, **options: Any) -> http.client.HTTPConnection:
        return _WatchedHTTPConnection(self, host, **options)

    def secure(self, host: str, **options: Any) -> http.client.HTTPConnection:
        return _WatchedHTTPSConnection(self, host, **options)

    def opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:  # connected as the deadline passed
                _shut(sock)

    def cut(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, connections: _Connections, host: str, **options: Any) -> None:
        super().__init__(host, **options)
        self._connections = connections

    def connect(self) -> None:
        super().connect()
        self._connections.opened(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, connections: _Connections, host: str, **options: Any) -> None:
        super().__init__(host, **options)
        self._connections = connections

    def connect(self) -> None:
        super().connect()  # wraps the socket in TLS: the one to shut down
        self._connections.opened(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.plain, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.secure, req)  # the default context, as urlopen's


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect within the API's origin only (scheme, host and port). urllib sends every header
    of the request on to wherever a redirect points, so an API key went to another host (a review run);
    a redirect elsewhere, https to http included, is a failed poll that names where it pointed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        there, here = urllib.parse.urlsplit(newurl), urllib.parse.urlsplit(req.full_url)
        if _origin(there) != _origin(here):
            fp.close()
            raise FetchFailed(
                "http_status",
                f"HTTP {code} redirects to {there.scheme}://{there.netloc.rpartition('@')[2]}, another "
                "origin than --url's: not followed, its headers would go there; if the API moved, set "
                "--url to its new address",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any) -> Any:
        """urllib parses the new address before :meth:`redirect_request`: a port out of range or a broken
        address raised ``ValueError``, which stopped the monitor (a review of the diff)."""
        try:
            return super().http_error_302(req, fp, code, msg, headers)
        except ValueError as error:
            fp.close()
            raise FetchFailed(
                "http_status", f"HTTP {code} redirects to an unusable address ({error})"
            ) from None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _origin(url: urllib.parse.SplitResult) -> tuple[str, str | None, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.hostname, url.port or default


def _get(
    opener: urllib.request.OpenerDirector,
    request: urllib.request.Request,
    *,
    timeout_s: float,
    max_bytes: int,
) -> bytes:
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = _read_until(response, max_bytes + 1)
    except urllib.error.HTTPError as error:
        error.close()
        wait = retry_after_s(error.headers.get("Retry-After") if error.headers is not None else None)
        asked = f" (Retry-After {wait:g} s)" if wait is not None else ""
        raise FetchFailed("http_status", f"HTTP {error.code} {error.reason}{asked}", wait) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError | socket.timeout):
            raise FetchFailed("timeout", f"no answer within {timeout_s:g} s") from None
        raise FetchFailed("connection", str(error.reason)) from None
    except TimeoutError:
        raise FetchFailed("timeout", f"no whole answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise FetchFailed("connection", f"{type(error).__name__}: {error}") from None
    if len(body) > max_bytes:
        raise FetchFailed("malformed", f"answer larger than {max_bytes} bytes")
    return body


def _read_until(response: http.client.HTTPResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body, each piece as it arrives (``read1``): a larger one is refused
    unread, and the timer's cut ends a trickled one."""
    pieces: list[bytes] = []
    size = 0
    while size < limit:
        piece = response.read1(min(65_536, limit - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """An HTTP ``Retry-After`` (seconds, or an HTTP date) as seconds from now, or None if absent or not
    one. A rate-limited review run was polled every 2 s through ``Retry-After: 30``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
