"""A local price API replaying a price file at speed, in the MARA format, for ``demo --live``.

Ticks are released ``rate_per_s`` per second from the first request on; ``GET`` (any path) answers the
released ticks as the MARA API does: a JSON list, newest first, zone-less UTC timestamps; with ``window``,
only the last ``window`` of them. Released from the first request, not from the server's start, and the
whole history by default: a monitor slow to start (a loaded machine) must not find ticks already scrolled
out of the answer, or the demo would wait for actions of ticks never published. A thread serves it
(``http.server``), so it runs beside any event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from battery_worker.ticks import PriceTick


def mara_object(tick: PriceTick) -> dict[str, Any]:
    return {
        "energy_price": tick.energy_price,
        "hash_price": tick.hash_price,
        "token_price": tick.token_price,
        "timestamp": tick.timestamp.replace(tzinfo=None).isoformat(),
    }


class ReplayApi:
    """``with ReplayApi(ticks, rate_per_s=60) as api:`` then poll ``api.url``."""

    def __init__(self, ticks: Sequence[PriceTick], *, rate_per_s: float, window: int | None = None) -> None:
        ordered = sorted(ticks, key=lambda tick: tick.timestamp)
        self._objects = [mara_object(tick) for tick in ordered]
        self._rate, self._window = rate_per_s, window
        self._started: float | None = None
        self._lock = threading.Lock()
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = api.answer()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo's table is its output."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="replay-api", daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/prices"

    def answer(self) -> bytes:
        with self._lock:
            self.requests += 1
            if self._started is None:
                self._started = time.monotonic()
            elapsed = time.monotonic() - self._started
        released = min(len(self._objects), int(elapsed * self._rate) + 1)
        first = 0 if self._window is None else max(0, released - self._window)
        return orjson.dumps(self._objects[first:released][::-1])

    def __enter__(self) -> ReplayApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
