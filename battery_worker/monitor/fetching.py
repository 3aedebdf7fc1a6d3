"""One GET of the price API with the standard library, in a thread, within a deadline.

``urllib`` rather than an HTTP client dependency: one request a minute needs no connection pool. The
request runs in a worker thread (``asyncio.to_thread``) so the event loop, and with it SIGTERM and the
metrics server, stays responsive while a server hangs; the socket timeout ends the thread, and
``wait_for`` bounds the whole request even when a server trickles bytes slower than the socket timeout.

Every failure is a :class:`FetchFailed` of one kind; header values never appear in its message.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import urllib.error
import urllib.request
from typing import Literal

FetchKind = Literal["timeout", "http_status", "connection", "malformed"]

USER_AGENT = "battery-worker-monitor"


class FetchFailed(Exception):
    def __init__(self, kind: FetchKind, detail: str) -> None:
        self.kind: FetchKind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


async def fetch(url: str, headers: dict[str, str], *, timeout_s: float, max_bytes: int) -> bytes:
    """The body of a 2xx answer to ``GET url``; :class:`FetchFailed` otherwise."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(fetch_blocking, url, headers, timeout_s=timeout_s, max_bytes=max_bytes),
            timeout_s,
        )
    except TimeoutError:
        raise FetchFailed("timeout", f"no whole answer within {timeout_s:g} s") from None


def fetch_blocking(url: str, headers: dict[str, str], *, timeout_s: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(  # noqa: S310 (the URL is checked to be http or https in the settings)
        url, headers={"Accept": "application/json", "User-Agent": USER_AGENT, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (as above)
            body: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchFailed("http_status", f"HTTP {error.code} {error.reason}") from None
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
