"""The price monitor against a real HTTP server (http.server in a thread) and the real broker.

The server answers what each test scripts, in order (the last answer repeats): MARA-format lists in any
order, a hang, a 500, garbage, a NaN. What the monitor published is read back from ``prices``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from battery_worker.brokers.launcher import free_port
from battery_worker.cli.demo import DEMO_POLICY, SAMPLE, sample_path
from battery_worker.kafka.clients import make_admin, make_reader, start_client
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.topics import partition_counts
from battery_worker.monitor.service import Monitor
from battery_worker.ops.monitor_server import MonitorServer
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import Settings
from battery_worker.ticks import PriceTick
from tests.workerkit import cli, make_settings, reference, send_raw, settings_env

pytestmark = pytest.mark.broker

START = datetime(2025, 6, 20, 10, 0)  # zone-less, as the MARA API sends: UTC


def item(n: int, price: float | str = 1.0) -> dict[str, Any]:
    """The MARA object of the n-th five-minute tick."""
    return {
        "energy_price": price,
        "hash_price": 1.5,
        "token_price": 2.5,
        "timestamp": (START + timedelta(minutes=5 * n)).isoformat(),
    }


def listing(*numbers: int) -> bytes:
    return orjson.dumps([item(n, 1.0 + n) for n in numbers])


@dataclass
class Reply:
    body: bytes
    status: int = 200
    hang_s: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


class PriceServer:
    """A local price API: each GET takes the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, str]] = []
        self.asked_at: list[float] = []  # time.monotonic() of each request
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(dict(self.headers.items()))
                    server.asked_at.append(time.monotonic())
                    reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                if reply.hang_s:
                    time.sleep(reply.hang_s)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the monitor gave up on a hung reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/prices"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)

    def __enter__(self) -> PriceServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def price_server() -> Iterator[PriceServer]:
    with PriceServer() as server:
        yield server


def monitor_settings(bootstrap: str, prefix: str, group: str, url: str, **monitor: Any) -> Settings:
    config = {"url": url, "site": "site-m", "interval_s": 0.05, "timeout_s": 0.5, **monitor}
    config.setdefault("backoff_initial_s", 0.05)
    config.setdefault("backoff_max_s", 0.2)
    return make_settings(bootstrap, prefix, group, monitor=config)


async def published(settings: Settings) -> list[tuple[int, bytes | None, PriceTick]]:
    """Every record of ``prices``: partition, key, tick (all are valid ticks, or this fails)."""
    topic = settings.topics.prices
    admin = make_admin(settings.kafka)
    await start_client(admin, settings.kafka)
    try:
        count = (await partition_counts(admin, [topic]))[topic]
    finally:
        await admin.close()
    reader = make_reader(settings.kafka)
    await start_client(reader, settings.kafka)
    records = []
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        async for batch in read_to_end(reader, tps, timeout_s=30):
            for record in batch:
                assert record.value is not None
                records.append((record.partition, record.key, PriceTick.model_validate_json(record.value)))
    finally:
        await reader.stop()
    return records


def numbers(records: Sequence[tuple[int, bytes | None, PriceTick]]) -> list[int]:
    start = START.replace(tzinfo=UTC)
    return [int((tick.timestamp - start).total_seconds() // 300) for _, _, tick in records]


async def test_new_ticks_are_published_once_in_order_keyed_by_site_across_restarts(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
) -> None:
    settings = monitor_settings(kafka_bootstrap, new_topic_name(), new_group_id(), price_server.url)
    # Newest first as the API lists; then repeats, out of order, one new tick; then the same again.
    price_server.script(Reply(listing(2, 1, 0)), Reply(listing(1, 3, 2, 3, 0)), Reply(listing(3, 1)))
    first = await Monitor(settings).run(max_polls=3)
    assert (first.polls, first.published, sum(first.errors.values())) == (3, 4, 0)

    # A second monitor (a restart) reads the last tick back and publishes only what is newer.
    price_server.script(Reply(listing(5, 4, 3, 2)))
    second = Monitor(settings)
    stats = await second.run(max_polls=2)
    assert stats.published == 2
    assert stats.last_tick_at == (START + timedelta(minutes=25)).replace(tzinfo=UTC)

    records = await published(settings)
    assert numbers(records) == [0, 1, 2, 3, 4, 5]
    home = home_partition("site-m", settings.topics.partitions)
    assert {(partition, key) for partition, key, _ in records} == {(home, b"site-m")}
    assert [tick.energy_price for _, _, tick in records] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


async def test_hangs_errors_garbage_and_nan_are_counted_and_nothing_bad_is_published(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    os.environ["MONITOR_TEST_KEY"] = "secret-value-17"
    try:
        settings = monitor_settings(
            kafka_bootstrap,
            new_topic_name(),
            new_group_id(),
            price_server.url,
            headers_from_env={"X-Api-Key": "MONITOR_TEST_KEY"},
        )
        nan = b'[{"energy_price": NaN, "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:10"}]'
        missing = b'[{"hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:10"}]'
        price_server.script(
            Reply(listing(0)),
            Reply(listing(1), hang_s=1.5),  # longer than the 0.5 s timeout
            Reply(b'{"error": "internal"}', status=500),
            Reply(b"<html>bad gateway</html>"),
            Reply(nan),
            Reply(missing),
            Reply(orjson.dumps([item(2, "7"), item(1), item(0)])),  # a string price beside two good ticks
            Reply(orjson.dumps([item(2, "7"), item(1), item(0)])),  # listed again: reported once, not twice
            Reply(listing(2, 1)),
        )
        monitor = Monitor(settings)
        stats = await monitor.run(max_polls=9)
    finally:
        del os.environ["MONITOR_TEST_KEY"]

    assert stats.polls == 9
    assert dict(stats.errors) == {"timeout": 1, "http_status": 1, "malformed": 1, "invalid_tick": 3}
    records = await published(settings)
    assert numbers(records) == [0, 1, 2]
    assert [tick.energy_price for _, _, tick in records] == [1.0, 1.0, 3.0]
    assert all(r.get("X-Api-Key") == "secret-value-17" for r in price_server.requests)
    assert "secret-value-17" not in caplog.text
    failures = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(failures) == 3  # one line each: timeout, 500, garbage
    rejections = [r.getMessage() for r in caplog.records if "items rejected" in r.getMessage()]
    assert len(rejections) == 3  # NaN, missing, the string price
    assert "energy_price=nan" in rejections[0]


async def test_failures_wait_the_interval_a_tick_held_back_counts_once_and_the_url_key_is_never_logged(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: after a failed poll the monitor asked again in 1, 2, 4 s whatever its interval (6 requests
    in a failing API's first minute at the default 60 s); a tick stamped in 2099 counted one more
    invalid_tick at every poll that listed it; and ``?api_key=`` was in every log line."""
    caplog.set_level(logging.INFO)
    url = f"{price_server.url}?site=m1&api_key=secret-in-url-23"
    settings = monitor_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), url, interval_s=0.6, backoff_initial_s=0.05
    )
    future = item(0) | {"timestamp": "2099-01-01T00:00:00+00:00"}
    price_server.script(
        Reply(b"{}", status=503),
        Reply(b"{}", status=503),
        Reply(orjson.dumps([future, item(1), item(0)])),
        Reply(orjson.dumps([future, item(2), item(1)])),
    )
    stats = await Monitor(settings).run(max_polls=4)
    gaps = [later - earlier for earlier, later in itertools.pairwise(price_server.asked_at)]
    assert len(gaps) == 3
    assert min(gaps) >= 0.55, gaps  # the interval (0.6 s), not the 0.05 s back-off
    assert dict(stats.errors) == {"http_status": 2, "invalid_tick": 1}
    assert stats.published == 3
    assert "secret-in-url-23" not in caplog.text
    assert "?site=***&api_key=***" in caplog.text
    assert "secret-in-url-23" not in str(settings.masked())


async def test_a_stop_ends_the_wait_between_polls(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
) -> None:
    settings = monitor_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), price_server.url, interval_s=3600
    )
    price_server.script(Reply(listing(0)))
    monitor = Monitor(settings)
    task = asyncio.create_task(monitor.run())
    for _ in range(300):  # the first poll done (15 s at most)
        if monitor.stats.last_poll_ok:
            break
        await asyncio.sleep(0.05)
    monitor.stop()
    stats = await asyncio.wait_for(task, 15)
    assert (stats.polls, stats.published) == (1, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def late_broker(port: int, bootstrap: str) -> asyncio.Server:
    """The broker appearing at ``port``: a TCP relay to the real one (whose metadata then names itself)."""
    host, target = bootstrap.split(",")[0].rsplit(":", 1)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(target))
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    return await asyncio.start_server(relay, "127.0.0.1", port)


async def test_the_monitor_waits_for_a_broker_that_comes_up_later_and_a_stop_ends_the_wait(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="battery_worker.kafka.connecting")
    prefix, group, port = new_topic_name(), new_group_id(), free_port()
    settings = monitor_settings(f"127.0.0.1:{port}", prefix, group, price_server.url)
    price_server.script(Reply(listing(1, 0)))
    monitor = Monitor(settings)
    task = asyncio.create_task(monitor.run(max_polls=1))
    await asyncio.sleep(1.5)  # nothing listens at the port yet: a monitor that gave up would be done
    assert not task.done()
    assert not monitor.stats.ready
    assert monitor.stats.polls == 0
    assert "retrying in" in caplog.text
    relay = await late_broker(port, kafka_bootstrap)
    try:
        stats = await asyncio.wait_for(task, 60)
    finally:
        relay.close()
        await relay.wait_closed()
    assert (stats.polls, stats.published) == (1, 2)
    assert numbers(await published(monitor_settings(kafka_bootstrap, prefix, group, price_server.url))) == [
        0,
        1,
    ]

    waiting = Monitor(monitor_settings(f"127.0.0.1:{free_port()}", prefix, group, price_server.url))
    task = asyncio.create_task(waiting.run())
    server = await MonitorServer(waiting, "127.0.0.1", free_port()).start()
    try:
        await asyncio.sleep(1.0)
        health = await asyncio.to_thread(answer, f"http://127.0.0.1:{server.port}/health")
    finally:
        await server.close()
    # Before: 200 "ok" (no poll had failed, as none had run) while nothing could be published.
    assert health[0] == 503, health
    assert "unavailable" in str(orjson.loads(health[1])["status"]), health
    waiting.stop()
    stopped = await asyncio.wait_for(task, 10)
    assert (stopped.polls, stopped.published, stopped.ready) == (0, 0, False)


def answer(url: str) -> tuple[int, bytes]:
    """The status and body of a GET, an error status included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_command_serves_metrics_and_exits_0_on_sigterm(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    tmp_path: Path,
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    price_server.script(Reply(listing(1, 0)), Reply(b"garbage"), Reply(listing(2, 1)))
    port = free_port()
    log = tmp_path / "monitor.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "battery_worker.cli", "--log-format", "json", "monitor"),
                *("--url", price_server.url, "--site", "cli-site", "--interval", "0.1"),
                *("--metrics-port", str(port)),
            ],
            env={**settings_env(settings), "BATTERY_WORKER_MONITOR__BACKOFF_INITIAL_S": "0.1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while "battery_worker_monitor_ticks_published_total 3.0" not in text:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, text or log.read_text()
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                    text = answer.read().decode()
            except OSError:
                continue
        assert 'battery_worker_monitor_errors_total{kind="malformed"} 1.0' in text
        assert "battery_worker_monitor_last_tick_age_seconds" in text
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = asyncio.run(published(settings))
    assert numbers(records) == [0, 1, 2]
    assert {key for _, key, _ in records} == {b"cli-site"}


def test_demo_live_runs_the_chain_from_a_local_api_to_actions(kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = cli("--log-level", "WARNING", "demo", "--live", "--rate", "500", env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "336 ticks published once, errors: none" in result.stdout
    # The split the domain computes over the sample with the demo's policy: the chain changed nothing.
    demo = make_settings(kafka_bootstrap, "unused", "unused", policy=DEMO_POLICY)
    trace, _ = reference(demo, load_ticks(sample_path(SAMPLE)))
    split = Counter(action for _, action, _, _ in trace)
    counts = f"{split['charge']} charge, {split['discharge']} discharge, {split['hold']} hold"
    assert f"summary: {len(trace)} actions ({counts})" in result.stdout


async def test_a_tick_the_worker_dead_letters_for_its_time_does_not_stop_the_monitor_and_a_lag_is_said(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One record in prices stamped a day after it was published (the worker dead-letters it) was read back
    as the last tick published: the monitor then published nothing, '4 polls, 0 ticks published, errors:
    none', and no line said why."""
    settings = monitor_settings(kafka_bootstrap, new_topic_name(), new_group_id(), price_server.url)
    tomorrow = item(0)
    tomorrow["timestamp"] = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    await send_raw(settings, [(b"site-m", orjson.dumps(tomorrow))])
    price_server.script(Reply(listing(2, 1, 0)))
    with caplog.at_level(logging.INFO, logger="battery_worker.monitor"):
        stats = await Monitor(settings).run(max_polls=2)
    assert stats.published == 3
    assert numbers((await published(settings))[1:]) == [0, 1, 2]
    assert any("stamped more than 3600 s after they were published" in m for m in caplog.messages)

    caplog.clear()
    price_server.script(Reply(listing(1, 0)))  # the API's newest is older than the last published (2)
    with caplog.at_level(logging.WARNING, logger="battery_worker.monitor"):
        behind = await Monitor(settings).run(max_polls=3)
    assert behind.published == 0
    said = [m for m in caplog.messages if "is older than the last one published" in m]
    assert len(said) == 1, caplog.messages
    assert "2025-06-20T10:05:00+00:00" in said[0]
    assert "2025-06-20T10:10:00+00:00" in said[0]


async def test_a_price_corrected_after_it_was_published_is_said_once(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The monitor team's review: a corrected price for a tick already published (1.5 re-sent as 9.99) was
    dropped with no line, no counter: the worker had decided on the first price, and nobody was told."""
    settings = monitor_settings(kafka_bootstrap, new_topic_name(), new_group_id(), price_server.url)
    corrected = [item(2, 3.0), item(1, 9.99), item(0, 1.0)]  # tick 1 was published at 2.0
    price_server.script(Reply(listing(1, 0)), Reply(orjson.dumps(corrected)))
    with caplog.at_level(logging.WARNING, logger="battery_worker.monitor"):
        stats = await Monitor(settings).run(max_polls=4)
    assert stats.published == 3
    said = [m for m in caplog.messages if "listed again with other prices" in m]
    assert len(said) == 1, caplog.messages
    assert "2025-06-20T10:05:00+00:00: energy price 9.99, published 2" in said[0]
    assert [tick.energy_price for _, _, tick in await published(settings)] == [1.0, 2.0, 3.0]


async def test_a_backfilled_tick_and_a_time_listed_twice_are_said_once_and_retry_after_is_kept(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A monitor review: a tick the API added after a newer one was published was dropped without a word;
    an answer listing a time twice was said at the next poll as "listed again with other prices", which it
    was not; and a 429's Retry-After: 30 was polled through every 2 s."""
    caplog.set_level(logging.INFO)
    url = price_server.url
    settings = monitor_settings(  # Retry-After is kept up to the longest back-off (5 s here)
        kafka_bootstrap, new_topic_name(), new_group_id(), url, interval_s=0.2, backoff_max_s=5.0
    )
    twice = orjson.dumps([item(0, 1.0), item(0, 16.0)])
    price_server.script(
        Reply(twice),  # 0 listed twice: the first listed (1) taken
        Reply(twice),  # nothing more said
        Reply(listing(2, 0)),
        Reply(listing(2, 1, 0)),  # 1 backfilled after 2 went out: said, counted, not published
        Reply(listing(2, 1, 0)),  # said once
        Reply(b"{}", status=429, headers=(("Retry-After", "1"),)),
        Reply(listing(3, 2)),
    )
    stats = await Monitor(settings).run(max_polls=7)
    records = await published(settings)
    assert numbers(records) == [0, 2, 3]
    assert records[0][2].energy_price == 1.0
    assert stats.late == 1
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [line for line in said if "listed more than once in one answer" in line] == [
        f"{price_server.url}: 1 times listed more than once in one answer with other prices, e.g. "
        "2025-06-20T10:00:00+00:00: energy price 1 taken (listed first), 16 left"
    ]
    assert not [line for line in said if "listed again with other prices" in line]
    assert [line for line in said if "(a backfill)" in line] == [
        f"{price_server.url}: 1 ticks listed after a newer one was published (a backfill), e.g. "
        "2025-06-20T10:05:00+00:00: not published, as the worker would take them as stale (ticks are "
        "published once each, in time order)"
    ]
    assert "HTTP 429 Too Many Requests (Retry-After 1 s)" in caplog.text
    assert price_server.asked_at[6] - price_server.asked_at[5] >= 0.95  # not the 0.2 s interval


async def test_after_a_failed_publish_prices_is_read_back_so_a_tick_written_all_the_same_is_not_sent_again(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
) -> None:
    """A monitor review stalled the broker: the publish failed (RequestTimedOut) though the tick was
    written, and the next poll wrote it again (two records of one time in prices)."""
    from battery_worker.kafka.clients import make_producer

    settings = monitor_settings(kafka_bootstrap, new_topic_name(), new_group_id(), price_server.url)
    price_server.script(Reply(listing(1, 0)))
    monitor = Monitor(settings)
    await send_raw(settings, [(b"site-m", orjson.dumps(item(0, 1.0)))])  # written, its acknowledgement lost
    monitor._unsure = True  # what a failed publish leaves
    still_queued: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    monitor._in_flight = [still_queued]  # a send of the failed publish, not ended yet (a diff review)
    producer = make_producer(settings.kafka, linger_ms=0)
    await start_client(producer, settings.kafka)
    try:
        assert not await monitor.poll_once(producer, {})  # waits for it: read back only once it ended
        assert monitor.stats.errors["publish"] == 1
        still_queued.set_result(None)
        assert await monitor.poll_once(producer, {})
    finally:
        await producer.stop()
    assert numbers(await published(settings)) == [0, 1]
    assert monitor.stats.published == 2, "the tick written all the same counts as published"


async def test_health_stays_as_the_last_finished_poll_left_it_while_a_slow_one_runs(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    price_server: PriceServer,
) -> None:
    """A monitor review probed /health every 0.5 s of an API answering in 2 s: 503 'the last poll failed'
    while each good poll ran."""
    settings = monitor_settings(
        kafka_bootstrap, new_topic_name(), new_group_id(), price_server.url, timeout_s=3.0
    )
    price_server.script(Reply(listing(0)), Reply(listing(1, 0), hang_s=0.6))
    monitor = Monitor(settings)
    task = asyncio.create_task(monitor.run(max_polls=2))
    seen_in_flight = []
    while not task.done():
        if monitor.stats.polls == 2 and monitor.stats.published == 1:  # the slow second poll in flight
            seen_in_flight.append(monitor.stats.last_poll_ok)
        await asyncio.sleep(0.02)
    stats = await task
    assert stats.published == 2
    assert seen_in_flight
    assert all(seen_in_flight), seen_in_flight


def test_a_bounded_run_whose_every_poll_failed_exits_1(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A monitor review's script saw exit 0 with every poll refused (connection, 429, TLS)."""
    closed = f"http://127.0.0.1:{free_port()}/prices"
    settings = monitor_settings(kafka_bootstrap, new_topic_name(), new_group_id(), closed)
    flags = ["--url", closed, "--site", "site-m", "--max-polls", "2", "--interval", "0.1"]
    result = cli("monitor", *flags, env=settings_env(settings), timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "monitor stopped: 2 polls, 0 ticks published, errors: connection 2" in result.stderr
