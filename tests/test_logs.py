"""Logs: one JSON object per line with the coordinates, text on a terminal, and never a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaError, NodeNotReadyError

from battery_worker.ops.logs import (
    JsonFormatter,
    KafkaClientNoise,
    TextFormatter,
    resolve_format,
    setup_logging,
)
from tests.workerkit import cli


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "battery_worker.kafka.worker", logging.WARNING, __file__, 1, "%s to DLQ", ("x",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_json_line_carries_site_partition_and_offset() -> None:
    line = JsonFormatter().format(_record(site_id="texas-1", partition=2, offset=41, unrelated="no"))
    event = json.loads(line)
    assert "\n" not in line
    assert event["message"] == "x to DLQ"
    assert event["level"] == "WARNING"
    assert event["logger"] == "battery_worker.kafka.worker"
    assert (event["site_id"], event["partition"], event["offset"]) == ("texas-1", 2, 41)
    assert "unrelated" not in event
    assert event["ts"].endswith("+00:00")


def test_exceptions_stay_on_one_json_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "second line" in json.loads(line)["exception"]


def test_text_lines_append_the_coordinates() -> None:
    line = TextFormatter().format(_record(site_id="texas-1", partition=0))
    assert line.endswith("x to DLQ site_id=texas-1 partition=0")


def test_a_text_line_cannot_be_forged_by_a_site_id_or_a_message() -> None:
    """Before: a record keyed "evil\\n2026-12-05 ... ERROR battery_worker: FORGED" printed that second
    line as a log line of its own (a site id is a key anyone writing to ``prices`` chooses)."""
    forged = "evil\n2026-12-05 00:00:00,000 ERROR battery_worker: FORGED"
    record = _record(site_id=forged)
    record.args = ("bad\r\x1b[2Jtick",)
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert line.endswith(
        "bad\\r\\x1b[2Jtick to DLQ site_id=evil\\n2026-12-05 00:00:00,000 ERROR battery_worker: FORGED"
    )
    assert TextFormatter().format(_record(site_id="texas-ü")).endswith("site_id=texas-ü"), "printable stays"


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", _Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Terminal()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


@pytest.mark.usefixtures("restore_root_logger")
def test_setup_logging_sets_level_and_format() -> None:
    out = io.StringIO()
    setup_logging("warning", "json", out)
    logging.getLogger("battery_worker.test").info("hidden")
    logging.getLogger("battery_worker.test").warning("shown", extra={"site_id": "s"})
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["shown"]
    assert logging.getLogger("aiokafka").level == logging.WARNING


def test_log_format_comes_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "BATTERY_WORKER_LOG_FORMAT": "json", "BATTERY_WORKER_BATTERY__EFFICIENCY": "1.5"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    # Settings are refused before any log line, so force one through the text/JSON switch with a bad level.
    result = cli("--log-level", "LOUD", "run", env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "battery-worker: error: log_level='LOUD': expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
    ]


def test_a_sasl_password_from_the_environment_never_reaches_the_logs(tmp_path: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATTERY_WORKER_", "KAFKA_"))}
    env.update(
        BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",
        BATTERY_WORKER_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
        BATTERY_WORKER_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
        BATTERY_WORKER_KAFKA__SASL_USERNAME="battery-worker",
        BATTERY_WORKER_KAFKA__SASL_PASSWORD=password,
        BATTERY_WORKER_WORKER__BACKOFF_INITIAL_S="0.1",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "battery_worker.cli",
                "--log-level",
                "DEBUG",
                "--log-format",
                "json",
                "run",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("unavailable") < 2:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        stdout, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log.read_text() + stdout.decode()
    # JSON log lines; the CLI's closing one-line error (if any) is plain text.
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    starting = next(e["message"] for e in events if e["message"].startswith("battery-worker starting"))
    assert "'sasl_password': '**********'" in starting
    assert "'sasl_username': 'battery-worker'" in starting
    assert password not in text
    assert any("unavailable" in e["message"] for e in events)


def _aiokafka_line(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, "aiokafka.py", 1, msg, args, None)


@pytest.mark.usefixtures("restore_root_logger")
def test_aiokafka_bootstrap_failures_are_dropped_below_debug() -> None:
    """On the handler: aiokafka logs under child loggers, which a filter on ``aiokafka`` itself never sees."""
    for level, shown in (("info", False), ("debug", True)):
        out = io.StringIO()
        setup_logging(level, "json", out)
        client = logging.getLogger("aiokafka.client")
        client.error('Unable connect to "%s:%s": %s', "127.0.0.1", 1, "refused")
        client.error('Unable to request metadata from "%s:%s": %s', "127.0.0.1", 1, "refused")
        client.error("Unable connect to node with id %s: %s", 1, "refused")
        messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
        bootstrap = [
            'Unable connect to "127.0.0.1:1": refused',
            'Unable to request metadata from "127.0.0.1:1": refused',
        ]
        expected = [*bootstrap] if shown else []
        assert messages[:-1] == expected
        assert messages[-1].startswith("Unable connect to node with id 1: refused")


@pytest.mark.usefixtures("restore_root_logger")
def test_a_new_clusters_missing_coordinator_is_info_not_error() -> None:
    """``status`` and ``run`` on a brand-new Apache Kafka printed this at ERROR while it made its offsets
    topic."""
    out = io.StringIO()
    setup_logging("info", "json", out)
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["level"] == "INFO"
    assert line["message"] == "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    out.truncate(0)
    setup_logging("warning", "json", out)
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )
    assert out.getvalue() == ""


def test_a_coordinator_missing_for_long_is_a_warning_once_per_interval() -> None:
    now = [100.0]
    noise = KafkaClientNoise(logging.INFO, persist_s=10.0, clock=lambda: now[0])

    def lookup_failed(error: Exception) -> logging.LogRecord | None:
        record = _aiokafka_line(
            "aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s", error
        )
        return record if noise.filter(record) else None

    levels = []
    for step in range(0, 260):  # every 0.1 s for 26 s, as aiokafka retries
        now[0] = 100.0 + step / 10
        record = lookup_failed(GroupCoordinatorNotAvailableError())
        levels.append(None if record is None else (record.levelname, record.getMessage()))
    infos = [entry for entry in levels if entry is not None and entry[0] == "INFO"]
    warnings = [entry for entry in levels if entry is not None and entry[0] == "WARNING"]
    assert len(infos) == 100  # the first 10 s
    assert [message for _, message in warnings] == [
        f"no group coordinator for {seconds} s (can the brokers create and lead __consumer_offsets?): "
        "[Error 15] GroupCoordinatorNotAvailableError"
        for seconds in (10, 20)
    ]
    now[0] += 60  # a quiet minute: the next failure starts a new run, INFO again
    record = lookup_failed(GroupCoordinatorNotAvailableError())
    assert record is not None
    assert record.levelname == "INFO"
    not_retriable = lookup_failed(KafkaError("refused"))
    assert not_retriable is not None
    assert not_retriable.levelname == "ERROR"
    other = _aiokafka_line("aiokafka.consumer.fetcher", "Unexpected error: %s", "x")
    assert noise.filter(other)
    assert other.levelname == "ERROR"


def test_a_topic_missing_from_the_metadata_is_one_warning_per_topic_per_interval() -> None:
    """An SRE review restarted the broker empty: 90 ERROR lines 'Topic prices not found in cluster metadata'
    in 50 ms before the worker's own line naming the missing topic."""
    now = [100.0]
    noise = KafkaClientNoise(logging.INFO, persist_s=10.0, clock=lambda: now[0])
    shown = []
    for step in range(90):
        now[0] = 100.0 + step / 1000
        for topic in ("prices", "battery.state"):
            record = _aiokafka_line("aiokafka.cluster", "Topic %s not found in cluster metadata", topic)
            if noise.filter(record):
                shown.append((record.levelname, record.getMessage()))
    assert shown == [
        ("WARNING", f"Topic {topic} not found in cluster metadata (said once per 10 s)")
        for topic in ("prices", "battery.state")
    ]
    now[0] += 10
    assert noise.filter(
        _aiokafka_line("aiokafka.cluster", "Topic %s not found in cluster metadata", "prices")
    )


def test_a_broker_out_of_reach_is_one_warning_then_one_every_interval_not_a_hundred_errors_a_second() -> None:
    """A broker stopped for 87 s: some 9,000 aiokafka lines, ERROR most, and 'no group coordinator (can the
    brokers create and lead __consumer_offsets?)' every 10 s, where the broker was simply down."""
    now = [100.0]
    noise = KafkaClientNoise(logging.INFO, persist_s=10.0, clock=lambda: now[0])
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 19331)")
    lines = [
        ("aiokafka.client", "Unable connect to node with id %s: %s", (1, refused)),
        ("aiokafka.client", "Unable to update metadata from %s", ([1],)),
        ("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", (1, NodeNotReadyError("node 1"))),
        ("aiokafka.producer.sender", "Got error produce response: %s", (NodeNotReadyError("node 1"),)),
        (
            "aiokafka.consumer.group_coordinator",
            "Group Coordinator Request failed: %s",
            (GroupCoordinatorNotAvailableError(),),
        ),
    ]
    shown = []
    for step in range(250):  # 25 s, a line every 0.1 s
        now[0] = 100.0 + step / 10
        name, message, args = lines[step % len(lines)]
        record = _aiokafka_line(name, message, *args)
        if noise.filter(record):
            shown.append((record.levelname, record.getMessage()))
    assert [level for level, _ in shown] == ["WARNING"] * 3
    assert shown[0][1] == (
        "Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 19331) (the Kafka "
        "client retries; lines like it are counted, not shown, until none has come for 10 s)"
    )
    assert shown[1][1].startswith(
        "Kafka connections failing for 10 s: 100 client errors in the last 10 s, the latest: "
    )
    assert shown[2][1].startswith("Kafka connections failing for 20 s: 100 client errors in the last 10 s")
    assert not any("__consumer_offsets" in message for _, message in shown)

    now[0] += 11  # back for longer than the interval: the next failure is a new run, shown
    record = _aiokafka_line("aiokafka.client", "Unable to update metadata from %s", [1])
    assert noise.filter(record)
    assert record.getMessage().startswith("Unable to update metadata from [1] (the Kafka client retries")
    denied = _aiokafka_line(
        "aiokafka.producer.sender", "Got error produce response: %s", KafkaError("denied")
    )
    assert noise.filter(denied)
    assert denied.levelname == "ERROR", "an error that is no connection failure stays as aiokafka logged it"
    refused_certificate = _aiokafka_line(
        "aiokafka.client", "Unable connect to node with id %s: %s", 1, ssl.SSLCertVerificationError("no")
    )
    assert noise.filter(refused_certificate)
    assert refused_certificate.levelname == "ERROR", (
        "a refused certificate is no outage: as aiokafka logged it"
    )
    debug = KafkaClientNoise(logging.DEBUG, persist_s=10.0, clock=lambda: now[0])
    assert all(
        debug.filter(_aiokafka_line("aiokafka.client", "Unable to update metadata from %s", [1]))
        for _ in range(5)
    )


@pytest.mark.usefixtures("restore_root_logger")
def test_a_heartbeat_answered_rebalancing_is_info_not_a_warning() -> None:
    """A soak on Apache Kafka: one WARNING per worker at every deploy, which an operator alerting on
    WARNING was paged for; the worker's own revoked/assigned lines say what happened."""
    out = io.StringIO()
    setup_logging("info", "json", out)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "battery-worker")
    (line,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["level"] == "INFO"
    assert line["message"] == "Heartbeat failed for group battery-worker because it is rebalancing"
    out = io.StringIO()
    setup_logging("warning", "json", out)
    coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "battery-worker")
    coordinator.warning("Marking the coordinator dead (node %s)for group %s.", 1, "battery-worker")
    (kept,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert kept["level"] == "WARNING"
    assert kept["message"].startswith("Marking the coordinator dead")


@pytest.mark.usefixtures("restore_root_logger")
def test_the_errors_aiokafka_logs_after_a_broker_stall_are_warnings_not_pages() -> None:
    """An observability review froze Apache Kafka three times: 11 'Heartbeat session expired', 8 'Error
    sending HeartbeatRequest' and a 'LeaveGroup request failed' at a stop, each an ERROR an alert on
    level=ERROR paged for, though the worker recovers by itself. A fatal group error stays an ERROR."""
    import aiokafka.errors as Errors

    out = io.StringIO()
    setup_logging("info", "json", out)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Heartbeat session expired - marking coordinator dead")
    coordinator.error(
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "HeartbeatRequest",
        1,
        Errors.RequestTimedOutError(),
    )
    coordinator.error("LeaveGroup request failed: %s", Errors.GroupCoordinatorNotAvailableError())
    coordinator.error(
        "Attempt to join group failed due to fatal error: %s", Errors.GroupAuthorizationFailedError()
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["WARNING", "WARNING", "ERROR"], lines
    assert lines[0]["message"] == "Heartbeat session expired - marking coordinator dead"
    assert lines[1]["message"].startswith("Error sending HeartbeatRequest to node 1 [")
    assert "the Kafka client retries; lines like it are counted" in lines[1]["message"]
    assert lines[2]["message"].startswith("Attempt to join group failed due to fatal error")


def test_a_stale_tick_is_logged_with_its_time_and_the_sites_last(caplog: pytest.LogCaptureFixture) -> None:
    """The line said only 'at or before the last tick': an operator could not tell a repeated hour from a
    producer hours behind without reading the record and the site's status."""
    from battery_worker.battery_config import BatteryConfig
    from battery_worker.kafka.record_log import log_handled
    from battery_worker.kafka.tools.feed import tick_payload
    from battery_worker.pipeline.partitioning import home_partition
    from battery_worker.pipeline.processing import InputRecord, TickProcessor
    from battery_worker.settings import TopicNames
    from battery_worker.sites import PolicyChoice, SiteDirectory
    from battery_worker.ticks import PriceTick

    directory = SiteDirectory(BatteryConfig(), PolicyChoice("threshold", {}), {})
    processor = TickProcessor(directory, TopicNames(), prices_partitions=3)
    partition = home_partition("s", 3)

    def tick(offset: int, hour: int) -> InputRecord:
        at = datetime(2023, 8, 1, hour, tzinfo=UTC)
        payload = tick_payload(PriceTick(energy_price=30.0, hash_price=1.0, token_price=1.0, timestamp=at))
        return InputRecord("prices", partition, offset, b"s", payload)

    assert processor.handle(tick(0, 6)).kind == "applied"
    late = tick(1, 5)
    handled = processor.handle(late)
    assert handled.kind == "stale"
    with caplog.at_level(logging.INFO, logger="battery_worker"):
        log_handled(late, handled)
    assert caplog.messages == [
        "stale tick skipped: its time 2023-08-01T05:00:00+00:00 is at or before the site's last applied "
        "tick, 2023-08-01T06:00:00+00:00"
    ]
