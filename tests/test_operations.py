"""Operating the worker: /metrics, /health, /ready scraped over HTTP from a real worker process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from battery_worker.brokers.launcher import free_port
from battery_worker.cli.common import terminal_text
from battery_worker.kafka.worker import Worker
from battery_worker.ops.server import OpsServer
from battery_worker.settings import Settings
from battery_worker.ticks import PriceTick
from tests.conftest import PrivateBroker
from tests.waiting import wait_until, wait_until_async
from tests.workerkit import (
    cli,
    ercot_week,
    feed,
    make_settings,
    reference,
    send_raw,
    settings_env,
    start_worker_process,
)


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _feed_all(settings: Settings, ticks: list[PriceTick]) -> None:
    await feed(settings, ticks, "alpha")
    await feed(settings, ticks[:2], "alpha")  # two duplicates: stale
    bad = [(b"alpha", b"{not json"), (b"alpha", b'{"energy_price": "NaN"}'), (b"beta", None)]
    await send_raw(settings, bad)


@pytest.mark.broker
def test_metrics_health_and_ready_are_scraped_from_a_running_worker(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    asyncio.run(_feed_all(settings, ticks))
    expected, final = reference(settings, ticks)

    port = free_port()
    stderr = tmp_path / "worker.log"
    worker = start_worker_process(
        settings, stderr, "--metrics-port", str(port), global_args=("--log-format", "json")
    )
    try:
        wait_until(lambda: _answers(port, "/ready") == 200, 45, "/ready to answer 200")

        def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            status, body = get(port, "/metrics")
            assert status == 200
            return samples(body.decode())

        def settled() -> bool:
            # Outcomes count as records are handled; batches_total only once the batch's events are
            # acknowledged, an await later: a scrape in between sees 53 handled and 0 batches.
            now = scraped()
            return sum(_outcomes(now).values()) == 53 and now[("battery_worker_batches_total", ())] >= 1

        wait_until(settled, 30, "all 53 records handled and their batch's events acknowledged")
        metrics = scraped()
        assert _outcomes(metrics) == {"applied": 48, "stale": 2, "already_applied": 0, "rejected": 3}
        dlq = {
            dict(labels)["reason"]: value
            for (name, labels), value in metrics.items()
            if name == "battery_worker_dlq_total"
        }
        assert sum(dlq.values()) == 3
        decisions = {
            dict(labels)["action"]: value
            for (name, labels), value in metrics.items()
            if name == "battery_worker_decisions_total"
        }
        want = Counter(row[1] for row in expected)
        assert decisions == {action: float(want.get(action, 0)) for action in ("charge", "discharge", "hold")}
        site = (("site_id", "alpha"),)
        assert metrics[("battery_worker_state_of_charge_mwh", site)] == pytest.approx(
            final.battery.state_of_charge_mwh
        )
        last_action, last_power = expected[-1][1], expected[-1][2]
        assert metrics[("battery_worker_power_mw", site)] == pytest.approx(
            -last_power if last_action == "discharge" else last_power
        )
        assert (
            metrics[("battery_worker_last_tick_timestamp_seconds", site)] == ticks[-1].timestamp.timestamp()
        )
        lags = {
            dict(labels)["partition"]: v
            for (name, labels), v in metrics.items()
            if name == "battery_worker_consumer_lag"
        }
        assert lags
        assert set(lags.values()) == {0.0}
        assert metrics[("battery_worker_assigned_partitions", ())] == 3
        assert metrics[("battery_worker_ready", ())] == 1
        assert metrics[("battery_worker_batches_total", ())] >= 1
        assert (
            metrics[("battery_worker_processing_seconds_count", ())]
            == metrics[("battery_worker_batches_total", ())]
        )
        assert metrics[("battery_worker_tick_age_seconds_count", ())] >= 1
        assert metrics[("battery_worker_restores_total", ())] >= 1
        for kind in ("fetch", "produce", "commit", "restore"):
            assert metrics[(f"battery_worker_{kind}_errors_total", ())] == 0
        assert ("process_resident_memory_bytes", ()) in metrics

        status, body = get(port, "/health")
        assert status == 200
        assert orjson.loads(body)["broker_reachable"] is True
        status, body = get(port, "/ready")
        assert (status, orjson.loads(body)["assigned_partitions"]) == (200, [0, 1, 2])
        assert get(port, "/live")[0] == 200
        assert get(port, "/nope")[0] == 404

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=settings.worker.shutdown_timeout_s) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    lines = stderr.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assigned = [e for e in events if e["message"].startswith("assigned")]
    assert assigned
    assert assigned[0]["partitions"] == [0, 1, 2]
    assert any("metrics and probes on" in e["message"] for e in events)
    # One line per stale or dead-lettered record, with the coordinates to find it again.
    stale = [e for e in events if e["message"].startswith("stale tick")]
    assert [(e["site_id"], e["offset"]) for e in stale] == [("alpha", 48), ("alpha", 49)]
    assert stale[0]["level"] == "INFO"
    rejected = [e for e in events if e["message"].startswith("rejected to the dead-letter topic")]
    assert sorted((e["site_id"], e["level"]) for e in rejected) == [
        ("alpha", "WARNING"),
        ("alpha", "WARNING"),
        ("beta", "WARNING"),
    ]
    alpha_partition = stale[0]["partition"]
    assert sorted(e["offset"] for e in rejected if e["site_id"] == "alpha") == [50, 51]
    assert {e["partition"] for e in rejected if e["site_id"] == "alpha"} == {alpha_partition}
    assert all(e["topic"] == settings.topics.prices for e in stale + rejected)


def _answers(port: int, path: str) -> int:
    try:
        return get(port, path)[0]
    except OSError:
        return 0


def _outcomes(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in metrics.items()
        if name == "battery_worker_ticks_total"
    }


async def test_not_ready_and_not_healthy_before_the_worker_has_connected() -> None:
    settings = make_settings("127.0.0.1:1", "never", "never")
    server = await OpsServer(Worker(settings), "127.0.0.1", 0).start()
    try:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, get, server.port, "/ready")
        health = await loop.run_in_executor(None, get, server.port, "/health")
        live = await loop.run_in_executor(None, get, server.port, "/live")
        metrics = await loop.run_in_executor(None, get, server.port, "/metrics")
    finally:
        await server.close()
    assert ready[0] == 503
    assert orjson.loads(ready[1])["ready"] is False
    assert health[0] == 503
    assert orjson.loads(health[1])["broker_reachable"] is False
    assert live[0] == 200
    parsed = samples(metrics[1].decode())
    assert parsed[("battery_worker_ready", ())] == 0
    assert parsed[("battery_worker_ticks_total", (("outcome", "applied"),))] == 0
    fingerprint = settings.decisions_fingerprint()
    assert parsed[("battery_worker_settings_info", (("decisions_fingerprint", fingerprint),))] == 1


def test_the_decision_settings_fingerprint_changes_with_what_decides_only() -> None:
    """A fleet operator's review: restarted with another config, one worker decided a site by 400 MWh and
    the other by 150, as partitions moved between them, and nothing showed the two differed."""
    base = make_settings("127.0.0.1:1", "p", "g")
    same = make_settings("10.0.0.1:9092", "other-topics", "other-group", worker={"commit_interval_ms": 5000})
    assert same.decisions_fingerprint() == base.decisions_fingerprint(), "where and how it runs: no matter"
    site = make_settings("127.0.0.1:1", "p", "g", sites={"s1": {"battery": {"capacity_mwh": 400}}})
    policy = make_settings("127.0.0.1:1", "p", "g", policy={"name": "mpc", "params": {}})
    ahead = make_settings("127.0.0.1:1", "p", "g", worker={"max_tick_ahead_s": 60})
    unknown = make_settings("127.0.0.1:1", "p", "g", worker={"accept_unknown_sites": False})
    larger = make_settings("127.0.0.1:1", "p", "g", worker={"max_message_bytes": 1000})
    carried = make_settings("127.0.0.1:1", "p", "g", emissions={"carry_hours": 1})
    preset = make_settings("127.0.0.1:1", "p", "g", battery_type="lfp")
    variants = (base, site, policy, ahead, unknown, larger, carried, preset)
    prints = {s.decisions_fingerprint() for s in variants}
    assert len(prints) == len(variants)
    assert all(len(fingerprint) == 12 for fingerprint in prints)


@pytest.mark.broker
async def test_health_answers_within_a_second_while_the_broker_is_silent(
    private_broker: PrivateBroker, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """A frozen broker held /health for the check's whole 3 s: a Kubernetes probe (1 s timeout) failed by
    timeout, not by 503. The check now runs in the background and a probe waits for it 0.8 s at most.
    The broker here is one of the test's own, SIGSTOPped."""
    settings = make_settings(private_broker.bootstrap_servers, new_topic_name(), new_group_id())
    worker = Worker(settings)
    running = asyncio.create_task(worker.run())
    server = await OpsServer(worker, "127.0.0.1", 0).start()
    loop = asyncio.get_running_loop()
    try:
        await wait_until_async(_ready(worker), 60, "the worker to be ready")
        healthy = await loop.run_in_executor(None, get, server.port, "/health")
        pid = private_broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(
                2.1
            )  # past the cached answer: the next probe checks again, of a silent broker
            started = time.monotonic()
            silent = await loop.run_in_executor(None, get, server.port, "/health")
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        worker.stop()
        await running
        await server.close()
    assert healthy[0] == 200
    assert silent[0] == 503
    assert orjson.loads(silent[1])["broker_reachable"] is False
    assert took < 1.0  # the probe's own timeout, the promise under test


def _ready(worker: Worker) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return worker.ready

    return check


@pytest.mark.broker
async def test_status_shows_last_action_tick_age_and_the_groups_lag(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    ticks = ercot_week()[:48]
    await feed(settings, ticks, "alpha")
    assert await Worker(settings).run(max_messages=40, idle_timeout_s=20) == 40
    expected, _ = reference(settings, ticks[:40])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "battery_worker.cli",
        "status",
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    text = out.decode()
    row = next(line for line in text.splitlines() if "alpha" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    action, power = expected[-1][1], expected[-1][2]
    assert cells[0] == "alpha"
    assert cells[3] == "100.00"  # the capacity: a fleet review's 148.9 % said nothing of a shrunk battery
    assert cells[4:6] == [action, f"{power:.2f}"]
    assert cells[7].endswith(" d")  # August 2023 ticks: days old
    assert cells[9] == "8"  # 48 fed, 40 committed
    assert f"on {settings.topics.prices}: 8 (" in text

    # One site of a fleet, or a few; a site without a status is said, exit 1 (a probe's answer).
    await feed(settings, ticks[:2], "beta")
    assert await Worker(settings).run(max_messages=10, idle_timeout_s=20) == 10
    env = settings_env(settings)
    one = cli("status", "--json", "--site", "beta", env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    assert list(json.loads(one.stdout)) == ["beta"]
    both = cli("status", "--site", "beta", "--site", "no-such-site", env=env)
    assert both.returncode == 1
    assert "no status of site 'no-such-site'" in both.stderr
    assert "beta" in both.stdout
    assert "alpha" not in both.stdout
    none = cli("status", "--site", "no-such-site", env=env)  # not also "no status published yet"
    assert (none.returncode, none.stdout) == (1, "")
    assert (
        none.stderr.strip()
        == f"battery-worker status: no status of site 'no-such-site' in {settings.topics.status}"
    )


@pytest.mark.broker
async def test_status_shows_a_site_id_as_written_never_as_markup_or_terminal_codes(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Whoever may write to ``prices`` names sites: a review run's site id set bold red text and a hidden
    link in ``status`` (rich markup), and another cleared the screen and set the window title."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    site = "[bold red]PWN[/] esc\x1b[2Jcls\x1b]0;TITLE\x07"
    await feed(settings, ercot_week()[:3], site)
    assert await Worker(settings).run(max_messages=3, idle_timeout_s=20) == 3
    shown = cli("status", env=settings_env(settings))
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout
    assert "\x07" not in shown.stdout
    assert "[bold red]PWN[/] esc\\x1b[2Jcls\\x1b]0;TITLE\\x07" in shown.stdout


def test_text_read_from_a_topic_is_shown_with_every_control_character_escaped() -> None:
    """Tabs and newlines too (a site id's newline broke ``status``'s one row per site), and C1 codes, which
    some terminals read as escape sequences (``\\x9b`` is CSI); markup is never read."""
    shown = terminal_text("a\tb\nc\x9b31m[red]d\x7f")
    assert shown.plain == "a\\x09b\\x0ac\\x9b31m[red]d\\x7f"
    assert not shown.spans
    # Invisible format characters that reorder or hide text (a review of the diff).
    assert terminal_text("evil\u202etxt.exe a\u200bb\u2028c\ufeff").plain == (
        "evil\\u202etxt.exe a\\u200bb\\u2028c\\ufeff"
    )
    assert terminal_text("Zürich 北京 ⚡").plain == "Zürich 北京 ⚡", "letters of any script pass"


def test_the_dockerfile_asks_for_non_root_a_slim_base_and_a_stop_budget_within_the_grace_period() -> None:
    """What the files say, read: no Docker engine here builds or runs the image (docs/operations.md)."""
    root = Path(__file__).resolve().parent.parent
    dockerfile = (root / "Dockerfile").read_text()
    compose = (root / "docker-compose.kafka.yml").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "USER 10001" in dockerfile
    assert "STOPSIGNAL SIGTERM" in dockerfile
    assert "EXPOSE 9400" in dockerfile
    assert "BATTERY_WORKER_WORKER__METRICS_PORT=9400" in dockerfile
    assert "127.0.0.1:9400/live" in dockerfile, "a broker outage must not get the container replaced"
    shutdown_s = make_settings("x:1", "t", "g").worker.shutdown_timeout_s
    assert "stop_grace_period: 30s" in compose
    assert shutdown_s < 30  # Kubernetes' default terminationGracePeriodSeconds, and compose's above


def test_the_compose_files_topics_have_the_configs_the_worker_gives_its_own() -> None:
    """A docs review: kafka-init made the state and status topics compacted alone, without the hourly
    segments operations.md calls needed for fast restores (a topic made by hand keeps its segments)."""
    from battery_worker.kafka.topics import topic_specs
    from battery_worker.settings import TopicSettings

    compose = (Path(__file__).resolve().parent.parent / "docker-compose.kafka.yml").read_text()
    made: dict[str, dict[str, str]] = {}
    names: list[str] = []
    for line in compose.splitlines():
        line = line.strip()
        if line.startswith("for t in "):
            names = line.removeprefix("for t in ").removesuffix("; do").split()
        elif "--create" in line:
            configs = dict(part.split("=", 1) for part in re.findall(r"--config (\S+)", line))
            made.update(dict.fromkeys(names, configs))
    assert made == {spec.name: spec.configs for spec in topic_specs(TopicSettings())}


def test_metrics_port_comes_from_toml_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from battery_worker.settings import load_settings

    config = tmp_path / "worker.toml"
    config.write_text('[worker]\nmetrics_port = 9400\nmetrics_host = "0.0.0.0"\n')
    monkeypatch.delenv("BATTERY_WORKER_WORKER__METRICS_PORT", raising=False)
    assert load_settings(config).worker.metrics_port == 9400
    assert load_settings(config).worker.metrics_host == "0.0.0.0"
    monkeypatch.setenv("BATTERY_WORKER_WORKER__METRICS_PORT", "9500")
    assert load_settings(config).worker.metrics_port == 9500
    assert load_settings(config, {"worker": {"metrics_port": 9600}}).worker.metrics_port == 9600


def test_a_metrics_port_in_use_is_one_clear_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = settings_env(make_settings("127.0.0.1:1", "never", "never"))
        result = cli("run", "--metrics-port", str(port), env=env, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"battery-worker: error: worker.metrics_port={port}: cannot listen on 127.0.0.1:"
    )
    assert "address already in use" in lines[-1]
    assert "Traceback" not in result.stderr


_STOP_WITH_A_PROBE_OPEN = """
import asyncio, logging
from battery_worker.ops.server import HttpEndpoints, Response

class Endpoints(HttpEndpoints):
    async def respond(self, path):
        return Response(200, b"ok")

async def main():
    server = await Endpoints("127.0.0.1", 0).start()
    # a probe's connection, its request not sent yet, held open past the stop
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await asyncio.sleep(0.2)
    await server.close()
    print("closed", reader is not None, writer is not None)

logging.basicConfig(level=logging.INFO)
asyncio.run(main())
"""


def test_a_stop_with_a_probe_connection_open_logs_no_error() -> None:
    """A platform engineer's review: a probe caught by a rolling update's SIGTERM logged an ERROR with the
    traceback of its handler's cancellation, so an alert on level=ERROR fired on every deploy."""
    result = subprocess.run(
        [sys.executable, "-c", _STOP_WITH_A_PROBE_OPEN], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "metrics and probes on" in result.stderr
    assert "CancelledError" not in result.stderr
    assert "ERROR" not in result.stderr


async def test_a_broker_that_takes_connections_but_never_answers_is_said_while_waited_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A platform engineer's review: a worker started against a SIGSTOPped broker logged nothing after its
    settings for 40 s, until the request timed out. Here a socket that accepts and never answers."""
    from battery_worker.kafka import connecting

    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # never answers; returns when the worker closes the connection

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    monkeypatch.setattr(connecting, "SLOW_ANSWER_S", 0.3)
    caplog.set_level("WARNING", logger="battery_worker")
    worker = Worker(make_settings(f"127.0.0.1:{port}", "never", "never"))
    running = asyncio.create_task(worker.run())
    try:
        said = f"Kafka at 127.0.0.1:{port} has not answered for 1 s (a broker stalled or overloaded?)"

        async def saying() -> bool:
            return said in caplog.text

        await wait_until_async(saying, 10, "the wait to be said")  # at 0.6 s and 0.9 s
    finally:
        worker.stop()
        await asyncio.wait_for(running, 60)
        silent.close()
        for writer in held:
            writer.close()
        await silent.wait_closed()


async def test_a_bounded_run_gives_up_on_a_broker_that_never_answers_within_its_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review of the diff: ``run --idle-timeout 3`` against a SIGSTOPped broker exited after 82 s, saying
    it gave up after 41: each unanswered attempt ran to the request's timeout first. An attempt gets at
    least ``MIN_ATTEMPT_S`` (10 s; creating the topics takes longer than a tiny idle timeout): 0.5 s here."""
    from battery_worker.kafka import connecting
    from battery_worker.kafka.exceptions import BrokerUnavailable

    monkeypatch.setattr(connecting, "MIN_ATTEMPT_S", 0.5)

    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(
            BrokerUnavailable, match=r"has not answered; gave up after 1 s \(--idle-timeout\)"
        ):
            await Worker(make_settings(f"127.0.0.1:{port}", "never", "never")).run(idle_timeout_s=1.0)
    finally:
        silent.close()
        for writer in held:
            writer.close()
        await silent.wait_closed()
    assert time.monotonic() - started < 10


@pytest.mark.broker
async def test_a_worker_holding_no_partition_says_so(
    kafka_bootstrap: str,
    new_topic_name: Callable[[], str],
    new_group_id: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An upgrade review started workers that got no assignment for 90 s and said nothing after their start
    lines. Here the second worker of a one-partition prices holds none."""
    from battery_worker.kafka import worker as worker_module

    monkeypatch.setattr(worker_module, "UNASSIGNED_NOTICE_S", 0.3)
    caplog.set_level("INFO", logger="battery_worker")
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1)
    first, second = Worker(settings), Worker(settings)
    running = [asyncio.create_task(first.run())]
    try:
        await wait_until_async(_ready(first), 60, "the first worker to hold the partition")
        running.append(asyncio.create_task(second.run()))
        said = f"no {settings.topics.prices} partition assigned for "

        async def saying() -> bool:
            return said in caplog.text

        await wait_until_async(saying, 60, "the idle worker to say so")
        assert f"(group {settings.worker.group_id}): more workers than partitions" in caplog.text
    finally:
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(*running), 60)
