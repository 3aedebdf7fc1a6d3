"""The price monitor's ``/metrics``, ``/health``, ``/ready`` and ``/live``, read from its stats when asked.

* ``/metrics``: polls, ticks published, errors by kind, the last tick's time and age.
* ``/health``: 200 while the last poll succeeded (or none has run yet), else 503 with the error counts: the
  price API or the broker is failing. Not for a liveness probe: restarting cures neither.
* ``/ready``: 200 once the last tick is read back from ``prices`` and polls run.
* ``/live``: 200 whenever the event loop answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from battery_worker.ops.server import HttpEndpoints, Response

if TYPE_CHECKING:
    from battery_worker.monitor.service import Monitor

PREFIX = "battery_worker_monitor"


class MonitorCollector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        from battery_worker.monitor.service import ERROR_KINDS

        stats = self._monitor.stats
        yield CounterMetricFamily(f"{PREFIX}_polls", "Polls of the price API", value=stats.polls)
        yield CounterMetricFamily(
            f"{PREFIX}_ticks_published", "Ticks published to prices (acknowledged)", value=stats.published
        )
        yield CounterMetricFamily(
            f"{PREFIX}_ticks_late",
            "Ticks listed only after a newer one was published (a backfill): not published",
            value=stats.late,
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_errors",
            "Failed polls by kind; invalid_tick counts each bad or held-back item once",
            labels=["kind"],
        )
        for kind in ERROR_KINDS:
            errors.add_metric([kind], stats.errors.get(kind, 0))
        yield errors
        yield GaugeMetricFamily(f"{PREFIX}_ready", "1 once the last tick is read back", value=stats.ready)
        if stats.last_tick_at is not None:
            stamp = stats.last_tick_at.timestamp()
            yield GaugeMetricFamily(
                f"{PREFIX}_last_tick_timestamp_seconds", "Time of the newest tick in prices", value=stamp
            )
            age = datetime.now(UTC).timestamp() - stamp
            yield GaugeMetricFamily(
                f"{PREFIX}_last_tick_age_seconds", "Now minus the newest tick's time", value=age
            )


class MonitorServer(HttpEndpoints):
    def __init__(self, monitor: Monitor, host: str, port: int) -> None:
        super().__init__(host, port)
        self._monitor = monitor
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(MonitorCollector(monitor))
        ProcessCollector(registry=self._registry)
        self._started = time.monotonic()

    async def respond(self, path: str) -> Response:
        route = path.split("?", 1)[0]
        stats = self._monitor.stats
        if route == "/metrics":
            return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if route == "/health":
            failure = self._monitor.connect_failure  # Kafka not reached: nothing could be published
            healthy = failure is None and (stats.polls == 0 or stats.last_poll_ok)
            body = {
                "status": failure or ("ok" if healthy else "the last poll failed"),
                "polls": stats.polls,
                "errors": dict(stats.errors),
                "uptime_s": round(time.monotonic() - self._started, 1),
            }
            return Response(200 if healthy else 503, orjson.dumps(body))
        if route == "/ready":
            ready = stats.ready and not self._monitor.stopping
            return Response(200 if ready else 503, orjson.dumps({"ready": ready}))
        if route == "/live":
            return Response(200, b'{"alive":true}')
        return Response(404, b'{"error":"not found: try /metrics, /health, /ready or /live"}')
