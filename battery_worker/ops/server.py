"""One small HTTP/1.1 server on the worker's event loop: ``/metrics``, ``/health``, ``/ready``, ``/live``.

* ``/metrics``: Prometheus text format (:mod:`battery_worker.ops.metrics`); lag is measured right before.
* ``/health``: 200 when the process runs and the broker answers a metadata request, else 503.
* ``/ready``: 200 when the state of every assigned partition is restored and the worker is consuming (not
  stopping, no rewind pending), else 503. For a Kubernetes readiness probe.
* ``/live``: 200 whenever the event loop answers. For a Kubernetes liveness probe: a broker outage is not
  cured by restarting the worker (it backs off and carries on), so liveness does not depend on the broker.

Every answer closes the connection; a scraper or probe opens one per request anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from battery_worker.errors import InvalidConfig
from battery_worker.ops.metrics import SiteActivity, WorkerCollector, build_registry

if TYPE_CHECKING:
    from battery_worker.kafka.worker import Worker

log = logging.getLogger(__name__)

_BROKER_CHECK_CACHE_S = 2.0
_BROKER_SILENT_S = 0.8
"""A check in flight this long answers 503 at once: a probe's own timeout is 1 s by default (Kubernetes),
and a frozen broker held /health for the check's whole 3 s, so the probe failed by timeout, not by 503."""
_REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpEndpoints:
    """The HTTP/1.1 part every ops server shares (the worker's, the monitor's): subclasses give ``respond``.

    ``await start()``, then ``await close()``; ``setting`` names what to fix when the port is taken."""

    def __init__(self, host: str, port: int, setting: str = "worker.metrics_port") -> None:
        self._host, self._requested_port, self._setting = host, port, setting
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the kernel's choice for port 0)."""
        assert self._server is not None, "not started"
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def start(self) -> Self:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._requested_port)
        except OSError as error:
            # A port in use or a wrong address is a setting to fix, not a crash with a traceback.
            where = f"{self._host}:{self._requested_port}"
            raise InvalidConfig(
                self._setting,
                self._requested_port,
                f"cannot listen on {where}: {error.strerror or error}",
            ) from None
        log.info("metrics and probes on http://%s:%d (/metrics /health /ready /live)", self._host, self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def respond(self, path: str) -> Response:
        raise NotImplementedError

    # --- HTTP/1.1, minimal -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                return
            method, path, _ = parts
            if method not in ("GET", "HEAD"):
                response = Response(405, b'{"error":"GET only"}')
            else:
                response = await self.respond(path)
            header = (
                f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(header if method == "HEAD" else header + response.body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # The process is stopping with a probe's connection open: the request is dropped. Raised on,
            # asyncio logged it as an ERROR with a traceback on every stop a probe caught (a platform
            # engineer's review); this task is the request's own, so nothing waits on its cancellation.
            pass
        except Exception:
            log.exception("metrics/probe request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class OpsServer(HttpEndpoints):
    """Serves a :class:`Worker`'s metrics and probes. ``await start()``, then ``await close()``."""

    def __init__(self, worker: Worker, host: str, port: int, activity: SiteActivity | None = None) -> None:
        super().__init__(host, port)
        self._worker = worker
        self._collector = WorkerCollector(worker, activity)
        self._registry = build_registry(self._collector)
        self._broker_checked_at = -1e9
        self._broker_ok = False
        self._broker_check: asyncio.Task[None] | None = None
        self._broker_check_started = 0.0
        self._started = time.monotonic()

    async def close(self) -> None:
        check = self._broker_check
        if check is not None:  # a check of a silent broker is still waiting
            check.cancel()
            await asyncio.wait({check}, timeout=1.0)
        await super().close()

    # --- routes -------------------------------------------------------------------------------------

    async def respond(self, path: str) -> Response:
        route = path.split("?", 1)[0]
        if route == "/metrics":
            self._collector.lag = await self._worker.lag()
            return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if route == "/health":
            reachable = await self._broker_reachable()
            failure = self._worker.connect_failure
            body = {
                "status": "ok" if reachable else (failure or "broker unreachable"),
                "broker_reachable": reachable,
                "uptime_s": round(time.monotonic() - self._started, 1),
            }
            return Response(200 if reachable else 503, orjson.dumps(body))
        if route == "/ready":
            worker = self._worker
            ready = worker.ready
            state: dict[str, object] = {
                "ready": ready,
                "stopping": worker.stopping,
                "assigned_partitions": sorted(tp.partition for tp in worker.assignment.partitions),
                "sites": worker.processor.site_count,
            }
            return Response(200 if ready else 503, orjson.dumps(state))
        if route == "/live":
            return Response(200, b'{"alive":true}')
        return Response(404, b'{"error":"not found: try /metrics, /health, /ready or /live"}')

    async def _broker_reachable(self) -> bool:
        """Within ``_BROKER_SILENT_S`` whatever the broker does: a check runs in the background (one at a
        time, its answer kept for a moment, so a burst of probes costs one metadata request) and a probe
        waits for it only until then; a broker silent that long is unreachable."""
        now = time.monotonic()
        if self._broker_check is None and now - self._broker_checked_at > _BROKER_CHECK_CACHE_S:
            self._broker_check_started = now
            self._broker_check = asyncio.create_task(self._check_broker())
        check = self._broker_check
        if check is None:
            return self._broker_ok
        waited = _BROKER_SILENT_S - (now - self._broker_check_started)
        if waited > 0:
            await asyncio.wait({check}, timeout=waited)
        return self._broker_ok if check.done() else False

    async def _check_broker(self) -> None:
        try:
            self._broker_ok = await self._worker.broker_reachable()
        except Exception:  # not a stale "ok" in its place, nor an exception nobody retrieves
            self._broker_ok = False
            log.exception("the broker check failed")
        finally:
            self._broker_checked_at = time.monotonic()
            self._broker_check = None
