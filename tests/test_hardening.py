"""What a hostile new user broke (issue 21), each point with the test that holds it.

1. A site's home partition is its key's partition, not the first partition that shows it: a stray tick
   cannot claim a site, and the audit replay gives the same answer on every run, whatever arrives where.
2. A tick stamped far after its record's Kafka timestamp is dead-lettered instead of bricking its site.
3. Unreachable brokers, malformed addresses, TOML and price files: one line, the right exit code.
4. ``--policy-param`` applies to the configured policy or is refused; never ignored.
5. ``feed`` refuses a negative limit or rate, an oversized site id and a directory.
6. An authentication failure is not an outage: one line naming it, exit 1, no secret; SIGTERM while
   waiting for a broker is exit 0.
7. SIGHUP stops the worker like SIGTERM; a SIGTERM early in start-up is a clean exit too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder

from battery_worker.battery_config import BatteryConfig
from battery_worker.brokers.embedded import EmbeddedBroker
from battery_worker.cli.common import command_settings
from battery_worker.cli.main import build_parser
from battery_worker.errors import InvalidConfig
from battery_worker.kafka.clients import PRODUCER_BATCH_BYTES, make_producer, make_reader
from battery_worker.kafka.reading import read_to_end
from battery_worker.kafka.tools.replay import ReplayOptions, replay
from battery_worker.kafka.topics import prepare_topics
from battery_worker.kafka.worker import Worker
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord, TickProcessor
from battery_worker.settings import Settings, TopicNames, load_settings
from battery_worker.sites import PolicyChoice, SiteDirectory
from tests.faultkit import raw_values
from tests.waiting import wait_until
from tests.workerkit import (
    DATA,
    cli,
    ercot_week,
    feed,
    make_settings,
    settings_env,
    start_worker_process,
)

T0 = datetime(2023, 8, 1, tzinfo=UTC)
NOW_MS = int(datetime(2023, 8, 10, tzinfo=UTC).timestamp() * 1000)
SECRET = "hunter2-not-logged"
Outcomes = dict[tuple[int, int], tuple[str, tuple[bytes, ...]]]
"""(partition, offset) → the outcome's kind and its output values."""


def tick_bytes(hour: int, price: float = 30.0, **extra: object) -> bytes:
    body = {"energy_price": price, "hash_price": 1.0, "token_price": 1.0}
    body["timestamp"] = (T0 + timedelta(hours=hour)).isoformat()  # type: ignore[assignment]
    return orjson.dumps({**body, **extra})


def processor(partitions: int = 3) -> TickProcessor:
    choice = PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0})
    directory = SiteDirectory(BatteryConfig(), choice)
    return TickProcessor(directory, TopicNames(), prices_partitions=partitions)


def off_home(site: str, partitions: int = 3) -> int:
    return (home_partition(site, partitions) + 1) % partitions


# --- 1. the home partition --------------------------------------------------------------------------------


def test_a_stray_tick_on_another_partition_cannot_claim_a_site() -> None:
    proc = processor()
    stray = InputRecord("prices", off_home("beta"), 0, None, tick_bytes(0, site_id="beta"), NOW_MS)
    first = proc.handle(stray)
    assert first.kind == "rejected"
    assert first.error is not None
    assert first.error.field == "site_id"
    assert f"partition {home_partition('beta', 3)}" in str(first.error)
    home = home_partition("beta", 3)
    kinds = [
        proc.handle(InputRecord("prices", home, n, b"beta", tick_bytes(n), NOW_MS)).kind for n in range(1, 25)
    ]
    assert kinds == ["applied"] * 24


def test_outcomes_do_not_depend_on_the_order_partitions_are_read_in() -> None:
    """Replay reads partitions in any order; each record's outcome must come out the same."""
    sites = [f"site-{n}" for n in range(12)]
    per_partition: dict[int, list[InputRecord]] = {0: [], 1: [], 2: []}
    for index in range(600):
        site = sites[index % len(sites)]
        partition = index % 3  # keyed or not, on any partition: the hostile mix
        key = site.encode() if index % 4 else None
        offset = len(per_partition[partition])
        value = tick_bytes(index // 3, price=float(index % 60), site_id=site)
        per_partition[partition].append(InputRecord("prices", partition, offset, key, value, NOW_MS))

    def outcomes(order: list[int]) -> Outcomes:
        proc = processor()
        seen: Outcomes = {}
        for partition in order:
            for record in per_partition[partition]:
                handled = proc.handle(record)
                seen[(partition, record.offset)] = (handled.kind, tuple(o.value for o in handled.outputs))
        return seen

    first = outcomes([0, 1, 2])
    assert first == outcomes([2, 1, 0]) == outcomes([1, 2, 0])
    kinds = [kind for kind, _ in first.values()]
    assert kinds.count("applied") > 100
    assert kinds.count("rejected") > 100


# --- 2. far-future ticks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_tick_whose_time_lies_outside_the_calendar_in_utc_is_dead_lettered(stamp: str) -> None:
    """Its conversion to UTC raised ``OverflowError``, which validation let through: the worker stopped on
    it at every restart, every partition with it, and the replay too (a review run)."""
    proc, home = processor(), home_partition("alpha", 3)
    body = orjson.dumps({"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, "timestamp": stamp})
    refused = proc.handle(InputRecord("prices", home, 0, b"alpha", body, NOW_MS))
    assert refused.kind == "rejected"
    assert refused.error is not None
    assert refused.error.field == "timestamp"
    assert "lies outside the years 1 to 9999 in UTC" in str(refused.error)
    assert refused.outputs[0].value == body
    assert proc.handle(InputRecord("prices", home, 1, b"alpha", tick_bytes(0), NOW_MS)).kind == "applied"


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"])
def test_a_tick_from_before_2000_is_dead_lettered_as_a_producers_zero_time(stamp: str) -> None:
    """A producer review: a first tick stamped 0001-01-01 or 1970-01-01 (a producer's default or zero
    time) was applied, and its action was a discharge at 20 MW for the schedulers."""
    proc, home = processor(), home_partition("alpha", 3)
    body = orjson.dumps({"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, "timestamp": stamp})
    refused = proc.handle(InputRecord("prices", home, 0, b"alpha", body, NOW_MS))
    assert refused.kind == "rejected"
    assert str(refused.error) == (
        f"timestamp='{stamp.replace('Z', '+00:00')}': before 2000-01-01T00:00:00+00:00: a producer's zero or "
        "default time? (applied, it would be decided as a real price)"
    )
    assert proc.handle(InputRecord("prices", home, 1, b"alpha", tick_bytes(0), NOW_MS)).kind == "applied"


def test_an_empty_message_key_is_no_key_and_off_its_home_is_said_so() -> None:
    """A producer review: an empty key, taken for no key (site ``default``), had been hashed by its producer
    to a partition of its own, and each tick was dead-lettered with advice that did not name it. A diff
    review: refused outright, a single-partition feed keying by body (kcat -K:) stopped working."""
    proc, home = processor(), home_partition("alpha", 3)
    body = tick_bytes(0, site_id="alpha")
    assert proc.handle(InputRecord("prices", home, 0, b"", body, NOW_MS)).kind == "applied"
    away = proc.handle(InputRecord("prices", (home + 1) % 3, 0, b"", tick_bytes(1, site_id="alpha"), NOW_MS))
    assert away.kind == "rejected"
    assert str(away.error).endswith("; this one's key is empty, which a producer places as a key of its own")
    blank = proc.handle(InputRecord("prices", home, 1, b"   ", tick_bytes(2), NOW_MS))
    assert blank.error is not None
    assert (blank.error.field, blank.error.problem) == ("key", "a site id is not blank")


def test_a_far_future_tick_is_dead_lettered_and_the_site_goes_on() -> None:
    proc, home = processor(), home_partition("alpha", 3)
    ahead = orjson.dumps(
        {"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, "timestamp": "9999-12-31T23:00:00Z"}
    )
    assert proc.handle(InputRecord("prices", home, 0, b"alpha", tick_bytes(0), NOW_MS)).kind == "applied"
    refused = proc.handle(InputRecord("prices", home, 1, b"alpha", ahead, NOW_MS))
    assert refused.kind == "rejected"
    assert refused.error is not None
    assert refused.error.field == "timestamp"
    assert "max_tick_ahead_s=3600" in str(refused.error)
    assert refused.outputs[0].value == ahead
    later = [
        proc.handle(InputRecord("prices", home, n, b"alpha", tick_bytes(n), NOW_MS)).kind
        for n in range(2, 10)
    ]
    assert later == ["applied"] * 8


def test_a_dead_letter_keeps_the_producers_headers_up_to_a_bound_and_counts_those_left_out() -> None:
    """A producer's tracing headers were dropped from its dead letters. Kept, a header too many of them
    (here 20 of 5 KB against a 64 KB bound) must not make a dead letter too large to send."""
    proc, home = processor(), home_partition("alpha", 3)
    many = [(f"h{i}", b"x" * 5_000) for i in range(20)]
    refused = proc.handle(InputRecord("prices", home, 0, b"alpha", b"not json", NOW_MS, many))
    assert refused.kind == "rejected"
    kept = [(name, value) for name, value in refused.outputs[0].headers if name.startswith("source.header.")]
    assert kept == [(f"source.header.h{i}", b"x" * 5_000) for i in range(12)]
    assert dict(refused.outputs[0].headers)["dlq.source_headers_dropped"] == b"8"
    # Bounded as encoded: 10,000 empty headers beside a 899,000-byte value made a dead letter of 1,059,242
    # bytes, over a stock broker's message.max.bytes (a review of the diff). It is a batch of its own.
    empty = [("", None)] * 10_000
    big = proc.handle(InputRecord("prices", home, 2, b"alpha", b"x" * 899_000, NOW_MS, empty))
    (letter,) = big.outputs
    builder = BatchBuilder(PRODUCER_BATCH_BYTES, 0, is_transactional=False)
    assert builder.append(key=letter.key, value=letter.value, timestamp=None, headers=list(letter.headers))
    assert len(builder._build()) < 1_000_000
    assert int(dict(letter.headers)["dlq.source_headers_dropped"] or b"0") > 0
    applied = proc.handle(InputRecord("prices", home, 1, b"alpha", tick_bytes(0), NOW_MS, many))
    assert applied.kind == "applied"
    assert all(not record.headers or record.headers[0][0] != "source.header.h0" for record in applied.outputs)


def test_with_unknown_sites_refused_a_mistyped_key_makes_no_site() -> None:
    """The downstream team's review: a tick keyed 'unknown-site-zzz' got a battery and a published
    'discharge 20.0 MW', and no scheduler knew of the site."""
    settings = load_settings(
        None,
        {"worker": {"accept_unknown_sites": False}, "sites": {"alpha": {"battery": {"capacity_mwh": 50}}}},
    )
    proc = TickProcessor(settings.site_directory(), TopicNames(), prices_partitions=3)
    alpha, typo = home_partition("alpha", 3), home_partition("alpah", 3)
    assert proc.handle(InputRecord("prices", alpha, 0, b"alpha", tick_bytes(0), NOW_MS)).kind == "applied"
    refused = proc.handle(InputRecord("prices", typo, 0, b"alpah", tick_bytes(0), NOW_MS))
    assert refused.kind == "rejected"
    assert str(refused.error) == (
        "site_id='alpah': not a configured site (worker.accept_unknown_sites is false): add it under "
        "[sites.<id>]"
    )
    assert proc.site_count == 1
    default = TickProcessor(load_settings(None, {}).site_directory(), TopicNames(), prices_partitions=3)
    assert default.handle(InputRecord("prices", typo, 0, b"alpah", tick_bytes(0), NOW_MS)).kind == "applied"


def test_the_bound_is_the_records_kafka_timestamp_plus_the_setting() -> None:
    directory = SiteDirectory(BatteryConfig(), PolicyChoice())
    proc = TickProcessor(directory, TopicNames(), prices_partitions=1, max_tick_ahead_s=60)
    stamp = int((T0 + timedelta(hours=1)).timestamp() * 1000)
    assert proc.handle(InputRecord("prices", 0, 0, b"s", tick_bytes(1), stamp - 60_000)).kind == "applied"
    assert proc.handle(InputRecord("prices", 0, 1, b"s", tick_bytes(2), stamp + 3600_000 - 61_000)).kind == (
        "rejected"
    )
    assert proc.handle(InputRecord("prices", 0, 2, b"s", tick_bytes(3), -1)).kind == "applied", (
        "a record without a timestamp cannot be bounded"
    )


async def _dead_letters(settings: Settings) -> list[dict[str, bytes | None]]:
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        tps = [TopicPartition(settings.topics.dlq, p) for p in range(3)]
        return [dict(r.headers) async for batch in read_to_end(reader, tps, timeout_s=20) for r in batch]
    finally:
        await reader.stop()


@pytest.mark.broker
async def test_stray_and_future_ticks_on_a_real_broker_and_replay_agrees_every_time(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await prepare_topics(settings)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        # A null-key tick naming beta, on a partition that is not beta's, handled before any beta tick.
        await producer.send_and_wait(
            settings.topics.prices, tick_bytes(0, site_id="beta"), partition=off_home("beta")
        )
        assert await Worker(settings).run(max_messages=1, idle_timeout_s=20) == 1
        week = ercot_week()[:48]
        for n, tick in enumerate(week):
            value = orjson.dumps(
                {
                    "energy_price": tick.energy_price,
                    "hash_price": 1,
                    "token_price": 1,
                    "timestamp": tick.timestamp,
                }
            )
            await producer.send(settings.topics.prices, value, key=b"beta")
            if n == 10:
                future = tick_bytes(0, energy_price=500.0).replace(
                    b"2023-08-01T00:00:00", b"9999-12-31T23:00:00"
                )
                await producer.send(settings.topics.prices, future, key=b"beta")
        await producer.flush()
    finally:
        await producer.stop()
    worker = Worker(settings)
    assert await worker.run(max_messages=49, idle_timeout_s=20) == 49
    assert worker.processor.counters.applied == 48
    assert worker.processor.counters.rejected == 1
    reasons = sorted(headers["error.field"] or b"" for headers in await _dead_letters(settings))
    assert reasons == [b"site_id", b"timestamp"]

    results = [await replay(settings, ReplayOptions()) for _ in range(3)]
    for result in results:
        assert result.identical
        assert (result.counters.applied, result.counters.rejected) == (48, 2)
        assert result.report.totals().matched == 48


# --- 3. one line, the right exit code ---------------------------------------------------------------------

NOBODY = "127.0.0.1:1"


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["history", "export", "--site", "a", "--out", "OUT"],
        ["replay"],
        ["feed", str(DATA / "ercot_2023-08-01_07.csv")],
    ],
    ids=" ".join,
)
def test_an_unreachable_broker_is_one_line_and_exit_1(command: list[str], tmp_path: Path) -> None:
    args = [str(tmp_path / "out.json") if part == "OUT" else part for part in command]
    result = cli(*args, "--bootstrap-servers", NOBODY, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"Kafka at {NOBODY} unavailable" in result.stderr
    assert "connection refused" in result.stderr


def test_bad_addresses_toml_and_price_files_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad_toml = tmp_path / "worker.toml"
    bad_toml.write_text("[kafka\nbootstrap_servers = ")
    binary = tmp_path / "prices.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = {
        "is not valid TOML": ["run", "--config", str(bad_toml)],
        "is a directory": ["run", "--config", str(tmp_path)],
        "IPv6 address in brackets": ["status", "--bootstrap-servers", "::::"],
        "port 'x'": ["status", "--bootstrap-servers", "kafka:x"],
        "is HOST:PORT (localhost:9092), not a URL": ["status", "--bootstrap-servers", "http://kafka:9092"],
        "is a directory, not a carbon file": [
            "feed",
            str(DATA / "ercot_2023-08-01_07.csv"),
            "--carbon",
            str(tmp_path),
        ],
        "not UTF-8": ["feed", str(binary)],
        "is a directory, not a price file": ["feed", str(tmp_path)],
        "not a topic name": ["feed", str(DATA / "ercot_2023-08-01_07.csv"), "--topic", "a b"],
        "not an ISO time": ["replay", "--from-time", "yesterday"],
        "--output-prefix='': is empty": ["replay", "--output-prefix", ""],
    }
    for expected, args in cases.items():
        result = cli(*args, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0, (args, result.stderr)


def test_a_csv_row_short_of_its_timestamp_is_named_by_its_line(tmp_path: Path) -> None:
    """Before: 'unexpected AttributeError: 'NoneType' object has no attribute 'strip' (a bug; ...)'."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    short = tmp_path / "short.csv"
    short.write_text("Price (USD/MWh),Datetime (UTC)\n10,2023-08-01 00:00:00+00:00\n11\n")
    with pytest.raises(
        PriceFileError, match=r"^file='short.csv': line 3 has no Datetime \(UTC\): fewer fields"
    ):
        load_ticks(short)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "timestamp,energy_price,hash_price,token_price\n2025-01-01T00:00:00Z,1,1,1\n2025-01-01T01:00:00Z,1,1\n",
            "line 3 has no token_price: fewer fields than the header's 4",
        ),
        (
            "timestamp,energy_price,hash_price,token_price\n2025-01-01T00:00:00Z,1,1,1,2\n",
            "line 2 has 5 fields where the header has 4",
        ),
    ],
)
def test_a_row_of_more_or_fewer_fields_than_the_header_is_refused_by_its_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    """A MARA row short of its token price was blamed on '--token-price=None', a flag nobody gave; a row
    with a field too many was taken."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    path = tmp_path / "rows.csv"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=f"^file='rows.csv': {problem} "):
        load_ticks(path)


@pytest.mark.parametrize(
    "text",
    [
        "timestamp,energy_price,hash_price,token_price\n2025-01-01T00:00:00Z,1,1,1,\n",
        "timestamp,energy_price,hash_price,token_price,\n2025-01-01T00:00:00Z,1,1,1\n",
        "timestamp,energy_price,note,note\n2025-01-01T00:00:00Z,1,a,b\n",
    ],
    ids=["a trailing comma on rows", "a trailing comma on the header", "a column named twice"],
)
def test_empty_fields_past_the_end_and_columns_nothing_reads_pass(tmp_path: Path, text: str) -> None:
    """A spreadsheet's trailing comma: the diff review found it refused by the first row-length check."""
    from battery_worker.pricefiles import load_ticks

    path = tmp_path / "rows.csv"
    path.write_text(text)
    assert [tick.energy_price for tick in load_ticks(path)] == [1.0]


def test_a_file_of_the_mara_apis_time_and_energy_price_alone_is_read_as_a_market_file(tmp_path: Path) -> None:
    """'timestamp,energy_price' (the API's own names) was 'cannot tell the timestamp and price columns'."""
    from battery_worker.pricefiles import load_ticks

    path = tmp_path / "two.csv"
    path.write_text("timestamp,energy_price\n2025-01-01T00:00:00Z,1.5\n2025-01-01T01:00:00Z,2.5\n")
    ticks = load_ticks(path, hash_price=3.0)
    assert [(t.energy_price, t.hash_price, t.token_price) for t in ticks] == [
        (1.5, 3.0, 0.0),
        (2.5, 3.0, 0.0),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "Datum;Preis (EUR/MWh)\n05.06.2023 19:45;77,1\n",
            "its columns are separated by semicolons, not commas",
        ),
        ("time\tprice\n2023-06-05T19:45:00Z\t77.1\n", "its columns are separated by tabs, not commas"),
        ("", "is empty: no header line of columns"),
    ],
)
def test_a_file_not_separated_by_commas_is_told_so_not_to_name_its_columns(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Before: 'cannot tell the timestamp and price columns; name them with --timestamp-column ...', a fix
    that cannot help a European spreadsheet's export."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    exported = tmp_path / "export.csv"
    exported.write_text(text)
    with pytest.raises(PriceFileError, match=problem):
        load_ticks(exported)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (
            "timestamp,price",
            "cannot tell the price column ('Price (USD/MWh)' or 'energy_price'; else name it with "
            "--price-column)",
        ),
        (
            "time,energy_price",
            "cannot tell the timestamp column ('Datetime (UTC)' or 'timestamp'; else name it with "
            "--timestamp-column)",
        ),
        (
            "time,price",
            "cannot tell the timestamp column ('Datetime (UTC)' or 'timestamp'; else name it with "
            "--timestamp-column) nor the price column ('Price (USD/MWh)' or 'energy_price'; else name it "
            "with --price-column)",
        ),
    ],
)
def test_a_column_not_found_is_named_with_the_names_it_is_looked_for_under(
    tmp_path: Path, header: str, problem: str
) -> None:
    """Before: ``timestamp,price`` was 'cannot tell the timestamp and price columns', though only the
    price column was not found, and the names that are recognised were said nowhere."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    prices = tmp_path / "prices.csv"
    prices.write_text(f"{header}\n2023-06-05T19:45:00Z,77.1\n")
    with pytest.raises(PriceFileError) as raised:
        load_ticks(prices)
    assert str(raised.value).endswith(f"prices.csv: {problem}"), raised.value


def test_two_prices_for_one_time_are_refused_naming_both_lines(tmp_path: Path) -> None:
    """A local-time export without offsets repeats an hour when the clocks go back; read as UTC, the
    second hour's prices were dropped as "not after an earlier tick's time", or, in another order, kept
    instead of the first. Rows repeated as they were still pass."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    local = tmp_path / "local.csv"
    rows = [
        "2023-10-29 01:00:00,80",
        "2023-10-29 02:00:00,70",
        "2023-10-29 02:00:00,60",
        "2023-10-29 03:00:00,50",
    ]
    local.write_text("\n".join(["Datetime (UTC),Price (USD/MWh)", *rows]) + "\n")
    with pytest.raises(PriceFileError) as raised:
        load_ticks(local)
    assert str(raised.value).startswith(
        "timestamp='2023-10-29T02:00:00+00:00': local.csv line 4: a second price for "
        "2023-10-29T02:00:00+00:00 (line 3 has 70, this one 60); its times have no UTC offset"
    ), raised.value
    local.write_text("\n".join(["Datetime (UTC),Price (USD/MWh)", *rows[:2], rows[1], rows[3]]) + "\n")
    assert [t.energy_price for t in load_ticks(local)] == [80, 70, 70, 50]
    mara = tmp_path / "mara.json"
    tick = '{"energy_price": %s, "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:00:00Z"}'
    mara.write_text(f"[{tick % 1}, {tick % 2}]")
    with pytest.raises(
        PriceFileError, match=r"mara.json object 2: a second price .* \(object 1 has 1, this one 2\)$"
    ):
        load_ticks(mara)
    # Two sites of one MARA file may share a time (a review of the diff: this was refused), and a row of
    # another time between two of one time does not hide them.
    sited = '{"site_id": "%s", "energy_price": %s, "hash_price": 1, "token_price": 1, "timestamp": "%s"}'
    at, later = "2025-06-20T10:00:00Z", "2025-06-20T10:05:00Z"
    mara.write_text(f"[{sited % ('a', 1, at)}, {sited % ('b', 2, at)}]")
    assert [(t.site_id, t.energy_price) for t in load_ticks(mara)] == [("a", 1), ("b", 2)]
    mara.write_text(f"[{sited % ('a', 1, at)}, {sited % ('a', 5, later)}, {sited % ('a', 2, at)}]")
    third = r"object 3: a second price .* \(object 1 has 1, this one 2\)$"
    with pytest.raises(PriceFileError, match=third):
        load_ticks(mara)


def test_a_json_price_file_under_another_name_is_read_as_json(tmp_path: Path) -> None:
    """Before: a MARA API answer saved as .txt was read as a CSV ('cannot tell the timestamp and price
    columns', its header quoted as '[{"energy_price":1.5')."""
    from battery_worker.pricefiles import load_ticks

    answer = DATA / "mara_api_5min_2025-05-22_48h.json"
    saved = tmp_path / "prices.txt"
    saved.write_bytes(answer.read_bytes())
    assert load_ticks(saved) == load_ticks(answer)


def test_a_json_file_of_another_shape_is_described_not_quoted(tmp_path: Path) -> None:
    """Before: an object wrapping the ticks under another key was read as one tick, and the error quoted
    the whole file as its energy_price (a 1.2 MB line for 30 days of 5-minute ticks)."""
    from battery_worker.errors import InvalidTick
    from battery_worker.pricefiles import PriceFileError, load_ticks

    tick = {"energy_price": 0.8, "hash_price": 0.5, "token_price": 0.9, "timestamp": "2025-06-21T16:15:00"}
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_bytes(orjson.dumps({"data": [tick] * 10_000}))
    with pytest.raises(PriceFileError) as raised:
        load_ticks(wrapped)
    assert str(raised.value).startswith("file='wrapped.json': an object of data: expected a price tick")
    (tmp_path / "under_prices.json").write_bytes(orjson.dumps({"prices": [tick]}))
    assert len(load_ticks(tmp_path / "under_prices.json")) == 1
    long = str(InvalidTick("energy_price", "x" * 100_000, "Input should be a valid number"))
    assert len(long) < 300
    assert long.endswith("... (100,002 characters): Input should be a valid number")


# --- 4. --policy-param ------------------------------------------------------------------------------------


def test_policy_params_without_policy_apply_to_the_configured_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(
        '[policy]\nname = "threshold"\nparams = { charge_below = 20.0, discharge_above = 90.0 }\n'
    )
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    args = build_parser().parse_args(
        ["run", "--config", str(config), "--policy-param", "discharge_above=120"]
    )
    policy = command_settings(args).policy
    assert policy.name == "threshold"
    assert dict(policy.params) == {"charge_below": 20.0, "discharge_above": 120}
    other = build_parser().parse_args(
        ["run", "--config", str(config), "--policy", "adaptive", "--policy-param", "window_hours=48"]
    )
    params = dict(command_settings(other).policy.params)
    assert params == {"window_hours": 48}, "another policy: the flags' only"


def test_a_policy_named_by_a_later_layer_takes_no_parameters_of_the_earlier_layers_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review run: the file's threshold parameters under BATTERY_WORKER_POLICY__NAME=mpc were refused by
    mpc, and --policy could not help; variables for the configured threshold were checked against it under
    --policy adaptive. Defaults <- file <- environment <- flags: each layer's parameters go with its name."""
    config = tmp_path / "worker.toml"
    config.write_text(
        '[policy]\nname = "threshold"\nparams = { charge_below = 25.0, discharge_above = 100.0 }\n'
    )
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("BATTERY_WORKER_POLICY__NAME", "mpc")
    run = ["run", "--config", str(config)]
    policy = command_settings(build_parser().parse_args(run)).policy
    assert (policy.name, dict(policy.params)) == ("mpc", {})
    monkeypatch.setenv("BATTERY_WORKER_POLICY__PARAMS__HORIZON_HOURS", "24")
    policy = command_settings(build_parser().parse_args(run)).policy
    assert (policy.name, dict(policy.params)) == ("mpc", {"horizon_hours": "24"})  # built: mpc took it
    policy = command_settings(build_parser().parse_args([*run, "--policy", "threshold"])).policy
    assert policy.name == "threshold"
    assert dict(policy.params) == {}, "--policy of another policy than the environment's: the flags' only"

    monkeypatch.delenv("BATTERY_WORKER_POLICY__NAME")
    monkeypatch.delenv("BATTERY_WORKER_POLICY__PARAMS__HORIZON_HOURS")
    monkeypatch.setenv("BATTERY_WORKER_POLICY__PARAMS__CHARGE_BELOW", "250")  # above discharge_above
    with pytest.raises(InvalidConfig, match="charge_below"):
        command_settings(build_parser().parse_args(run))
    policy = command_settings(build_parser().parse_args([*run, "--policy", "adaptive"])).policy
    assert (policy.name, dict(policy.params)) == ("adaptive", {})


def test_the_later_layers_policy_rule_holds_for_a_json_table_and_for_a_sites_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of the diff: the whole [policy] table as JSON, and a site's policy named by a variable,
    still took the file's parameters of another policy, and were refused."""
    config = tmp_path / "worker.toml"
    threshold = 'name = "threshold"\nparams = { charge_below = 25.0, discharge_above = 100.0 }\n'
    config.write_text(f"[policy]\n{threshold}[sites.s1.policy]\n{threshold}")
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("BATTERY_WORKER_POLICY", '{"name": "mpc"}')
    monkeypatch.setenv("BATTERY_WORKER_SITES__S1__POLICY__NAME", "adaptive")
    settings = command_settings(build_parser().parse_args(["run", "--config", str(config)]))
    assert (settings.policy.name, dict(settings.policy.params)) == ("mpc", {})
    site = settings.sites["s1"].policy
    assert site is not None
    assert (site.name, dict(site.params)) == ("adaptive", {})
    monkeypatch.setenv("BATTERY_WORKER_SITES__S1__POLICY__NAME", "threshold")
    monkeypatch.setenv("BATTERY_WORKER_SITES__S1__POLICY__PARAMS__CHARGE_BELOW", "20")
    site = command_settings(build_parser().parse_args(["run", "--config", str(config)])).sites["s1"].policy
    assert site is not None
    # "20" as the variable gives it (pydantic-settings 2.4 reads it as 20): the policy reads either as 20.0.
    params = {name: float(value) for name, value in site.params.items()}
    assert (site.name, params) == ("threshold", {"charge_below": 20.0, "discharge_above": 100.0})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["charge_below=5", "discharge_above=1"], "must not exceed discharge_above"),
        (["garbage"], "expected KEY=VALUE"),
        (["="], "expected KEY=VALUE"),
        (["nan"], "expected KEY=VALUE"),
        (["charge_below=nan"], "finite number"),
        (["charge_below=abc"], "valid number"),
        (["no_such_param=1"], "unknown parameters"),
    ],
)
@pytest.mark.parametrize("command", ["run", "replay"])
def test_bad_policy_params_are_refused_not_ignored(command: str, params: list[str], expected: str) -> None:
    flags = [part for param in params for part in ("--policy-param", param)]
    result = cli(command, *flags, "--bootstrap-servers", NOBODY, timeout=60)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert result.stderr.strip().count("\n") == 0


# --- 5. feed ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--limit", "-1"], "--limit: -1 is below 1"),
        (["--limit", "0"], "--limit: 0 is below 1"),
        (["--rate", "-5"], "--rate: -5 must be above 0"),
        (["--rate", "inf"], "not a finite number"),
        (["--site", "s" * 300], "at most 200 bytes"),
        (["--site", ""], "not blank"),
        (["--hash-price", "nan"], "not a finite number"),
    ],
)
def test_feed_refuses_what_the_worker_would_refuse(flags: list[str], expected: str) -> None:
    result = cli("feed", str(DATA / "ercot_2023-08-01_07.csv"), *flags, "--bootstrap-servers", NOBODY)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert result.stderr.strip().count("\n") == 0


# --- 6. authentication is not an outage; SIGTERM while waiting ----------------------------------------------


def _sasl_env(bootstrap: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATTERY_WORKER_", "KAFKA_"))}
    env.update(
        BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        BATTERY_WORKER_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
        BATTERY_WORKER_KAFKA__SASL_MECHANISM=mechanism,
        BATTERY_WORKER_KAFKA__SASL_USERNAME="bob",
        BATTERY_WORKER_KAFKA__SASL_PASSWORD=SECRET,
    )
    return env


@pytest.mark.broker
@pytest.mark.parametrize("command", [["run"], ["status"], ["replay"]], ids=" ".join)
def test_a_refused_sasl_mechanism_is_one_line_naming_authentication(
    command: list[str], embedded_broker: object
) -> None:
    """On the embedded broker, which offers no SASL mechanism (Apache Kafka: a wrong password, in
    ``test_apache_kafka_security.py``)."""
    bootstrap = embedded_broker.bootstrap_servers  # type: ignore[attr-defined]
    started = time.monotonic()
    result = cli(*command, env=_sasl_env(bootstrap), timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("battery-worker: error")]
    assert len(errors) == 1, result.stderr
    assert "authentication to Kafka" in errors[0]
    assert "UnsupportedSaslMechanism" in errors[0]
    assert "retrying" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_sigterm_while_waiting_for_a_broker_is_exit_0(tmp_path: Path) -> None:
    settings = make_settings(NOBODY, "never", "never", worker={"backoff_initial_s": 0.2})
    log = tmp_path / "worker.log"
    process = start_worker_process(settings, log)
    deadline = time.monotonic() + 30
    while "retrying in" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "unavailable" in log.read_text()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    assert "nothing was in flight" in log.read_text()


# --- 7. SIGHUP and an early SIGTERM -------------------------------------------------------------------------


@pytest.mark.broker
async def test_sighup_stops_the_worker_gracefully_and_commits(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    await feed(settings, ercot_week()[:24], "hup")
    log = tmp_path / "worker.log"
    process = await _worker_that_applied(settings, log, "hup", 24)
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "SIGHUP received" in text
    assert "battery-worker stopped: 24 records" in text
    again = start_worker_process(settings, tmp_path / "again.log", "--idle-timeout", "2")
    assert again.wait(timeout=60) == 0
    assert "stopped: 0 records" in (tmp_path / "again.log").read_text(), "offsets were committed"


@pytest.mark.broker
async def test_the_idle_clock_of_a_bounded_run_starts_with_its_assignment(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    """A review run: a worker started with --idle-timeout while the group waited out a killed member's
    session got its partitions after the timeout had passed, and stopped at its first empty poll with the
    backlog unread. Here the join waits some 6 s (the killed member's session), past a 3 s idle timeout."""
    session = {"session_timeout_ms": 6000}  # the premise: longer than the idle timeout
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id(), partitions=1, worker=session)
    week = ercot_week()
    await feed(settings, week[:24], "late")
    short_polls = settings.worker.model_copy(update={"poll_timeout_ms": 1})
    polling = settings.model_copy(update={"worker": short_polls})
    killed = await _worker_that_applied(settings, tmp_path / "killed.log", "late", 24)
    killed.kill()
    killed.wait()
    await feed(settings, week[24:48], "late")
    worker = Worker(polling)  # short polls: the first after the assignment comes back before any record
    started = time.monotonic()
    handled = await worker.run(idle_timeout_s=3)
    # The premise: the partitions came more than the idle timeout after the start (the time the run took
    # is no proof of it: a run with a 3 s idle timeout always lasts more than 3 s).
    assert worker.assignment.assigned_at - started > 3, "the join waited out the killed member's session"
    assert handled >= 24, "the backlog was read, not left for the next run"
    assert worker.processor.sites()["late"].battery.ticks_applied == 48


async def _worker_that_applied(
    settings: Settings, log: Path, site: str, ticks: int
) -> subprocess.Popen[bytes]:
    """``battery-worker run`` in a process of its own, once its status says ``site`` applied ``ticks``."""
    process = start_worker_process(settings, log)
    deadline = time.monotonic() + 60
    while _ticks_applied(settings, site) < ticks:
        assert time.monotonic() < deadline, _last_lines(log)
        await asyncio.sleep(0.5)
    return process


def _last_lines(log: Path) -> str:
    return log.read_text()[-2000:]


def _ticks_applied(settings: Settings, site: str) -> int:
    status = cli("status", "--json", env=settings_env(settings))
    if status.returncode != 0 or not status.stdout.strip():
        return 0
    return int(orjson.loads(status.stdout).get(site, {}).get("ticks_applied", 0))


def test_a_bounded_run_gives_up_on_a_broker_it_cannot_reach_within_its_idle_timeout() -> None:
    """Before: ``run --idle-timeout 3`` against a wrong address waited for ever (the idle clock starts with
    an assignment), and a job runner's SIGTERM then ended it with exit 0."""
    started = time.monotonic()
    result = cli(
        "--log-level", "ERROR", "run", "--bootstrap-servers", NOBODY, "--idle-timeout", "3", timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("gave up after 3 s (--idle-timeout)")
    assert time.monotonic() - started < 30


def _sigterm_caught(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: the ``SigCgt`` mask of /proc/PID/status)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see the handler")
def test_sigterm_early_in_start_up_is_a_clean_exit() -> None:
    """The handlers are installed before pydantic and aiokafka load (about 0.05 s after exec).

    The signal is sent the moment the handler is there, not after a fixed sleep: on a loaded machine
    0.2 s could pass before the interpreter got that far, and the default action killed the process."""
    for extra_delay in (0.0, 0.1):
        process = subprocess.Popen(
            [sys.executable, "-m", "battery_worker.cli", "run", "--bootstrap-servers", NOBODY],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with process:
            deadline = time.monotonic() + 20
            while not _sigterm_caught(process.pid) and time.monotonic() < deadline:
                time.sleep(0.002)
            assert _sigterm_caught(process.pid), "no SIGTERM handler after 20 s"
            time.sleep(extra_delay)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, f"SIGTERM {extra_delay} s after the handler"


async def _records_in(settings: Settings, topic: str) -> int:
    reader = make_reader(settings.kafka)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        return sum([len(batch) async for batch in read_to_end(reader, tps, timeout_s=20)])
    finally:
        await reader.stop()


@pytest.mark.broker
def test_a_feed_stopped_halfway_exits_with_the_signal_and_says_how_many_ticks_it_published(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    """Before: exit 0 and no line, with 37 of 336 ticks published: a script took a partial feed for a
    whole one."""
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    asyncio.run(prepare_topics(settings))
    week = DATA / "ercot_2023-08-01_07.csv"
    command = [sys.executable, "-m", "battery_worker.cli", "feed", str(week), "--rate", "20", "--site", "s"]
    process = subprocess.Popen(
        command, env=settings_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = "battery-worker feed: stopped by SIGINT: "
    suffix = f" of 168 ticks of {week} published to {settings.topics.prices}"
    assert lines[0].startswith(prefix), lines[0]
    assert lines[0].endswith(suffix), lines[0]
    said = int(lines[0].removeprefix(prefix).removesuffix(suffix))
    assert 0 < said < 168
    assert said == asyncio.run(_records_in(settings, settings.topics.prices))


@pytest.mark.broker
def test_a_feed_the_broker_stalls_under_fails_in_one_line_that_says_what_was_published(
    embedded_broker: EmbeddedBroker,
) -> None:
    """Before: ten lines of aiokafka's retries ("Unable connect to node with id 111") before a bare
    "Kafka: RequestTimedOutError", with nothing on how much of the file had gone out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATTERY_WORKER_", "KAFKA_"))}
    env["BATTERY_WORKER_KAFKA__REQUEST_TIMEOUT_MS"] = "3000"
    week = DATA / "ercot_2023-08-01_07.csv"
    command = [sys.executable, "-m", "battery_worker.cli", "--log-level", "WARNING", "feed", str(week)]
    command += ["--rate", "20", "--bootstrap-servers", embedded_broker.bootstrap_servers]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert embedded_broker.pid is not None
    settings = load_settings(None, {"kafka": {"bootstrap_servers": embedded_broker.bootstrap_servers}})

    def published() -> int:  # the broker stopped once some ticks are out (8.4 s at 20/s), not by a clock
        return len(asyncio.run(raw_values(settings, settings.topics.prices)))  # Tansu's ListOffsets is off

    wait_until(lambda: published() > 0, 60, "the feed to publish its first ticks")
    os.kill(embedded_broker.pid, signal.SIGSTOP)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        os.kill(embedded_broker.pid, signal.SIGCONT)
    assert process.returncode == 1, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    found = re.fullmatch(
        rf"battery-worker: error: Kafka: \w+: .*; (\d+) of 168 ticks of {re.escape(str(week))} published to "
        "prices",
        lines[0],
    )
    assert found is not None, lines[0]
    assert 0 < int(found.group(1)) < 168


def test_a_status_stopped_before_it_answers_exits_with_the_signal_in_one_line() -> None:
    """Before: exit 0 and nothing printed, as if no site had a status. A broker that takes the connection
    and never answers holds ``status`` for its request timeout (30 s)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        command = [sys.executable, "-m", "battery_worker.cli", "status", "--json"]
        process = subprocess.Popen(
            [*command, "--bootstrap-servers", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3.0)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    assert out == ""
    assert err.splitlines() == ["battery-worker status: stopped by SIGTERM"]


def test_the_cli_entry_point_loads_neither_pydantic_nor_aiokafka_before_its_signal_handlers() -> None:
    """What makes the test above hold, checked without timing: ``cli.main`` and ``cli.common`` import only
    the standard library at module level (an import of the settings there once broke it)."""
    probe = (
        "import sys, battery_worker.cli.main, battery_worker.cli.common\n"
        "print(sorted(m for m in ('pydantic', 'aiokafka', 'battery_worker.settings') if m in sys.modules))"
    )
    command = [sys.executable, "-c", probe]
    found = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "[]", found.stdout


@pytest.mark.broker
@pytest.mark.apache_needs("group.min/max.session.timeout.ms enforced at a join")
def test_a_session_timeout_the_broker_refuses_is_a_settings_error(apache_kafka: object) -> None:
    """Kafka refuses a join whose session timeout lies outside its group.min/max.session.timeout.ms
    (error 26); retrying cannot help, so it is exit 2 naming the setting, not a rewind every 30 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATTERY_WORKER_", "KAFKA_"))}
    env.update(
        BATTERY_WORKER_WORKER__SESSION_TIMEOUT_MS="2000000",  # over the broker's 30 min maximum
        BATTERY_WORKER_WORKER__MAX_POLL_INTERVAL_MS="3000000",
        BATTERY_WORKER_WORKER__GROUP_ID="session-timeout-refused",
    )
    bootstrap = apache_kafka.bootstrap_servers  # type: ignore[attr-defined]
    result = cli("run", "--bootstrap-servers", bootstrap, env=env, timeout=90)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("battery-worker: error")]
    assert len(errors) == 1
    assert "worker.session_timeout_ms" in errors[0]
    assert "rewinding" not in result.stderr


@pytest.mark.parametrize("site_id", ["é" * 150, "   "])
def test_a_site_id_is_refused_alike_as_a_key_in_a_tick_in_the_settings_and_on_the_command_line(
    site_id: str,
) -> None:
    """One rule, 200 bytes of UTF-8 and not blank: the settings took 300 bytes of 'é' (200 characters) for
    monitor.site, whose every tick the worker then dead-lettered by its key, and a tick carrying the same id
    in its body was applied; a blank id was refused on the command line only."""
    settings = load_settings(None, {})
    processor = TickProcessor(settings.site_directory(), settings.topics.names(), prices_partitions=1)
    tick = {"energy_price": 1.0, "hash_price": 1.0, "token_price": 1.0, "timestamp": "2024-01-01T00:00:00Z"}
    keyed = processor.handle(InputRecord("prices", 0, 0, site_id.encode(), orjson.dumps(tick)))
    in_body = processor.handle(InputRecord("prices", 0, 1, None, orjson.dumps({**tick, "site_id": site_id})))
    assert (keyed.kind, in_body.kind) == ("rejected", "rejected")
    with pytest.raises(InvalidConfig, match=r"monitor\.site"):
        load_settings(None, {"monitor": {"site": site_id}})
    with pytest.raises(InvalidConfig, match="sites"):
        load_settings(None, {"sites": {site_id: {}}})
    result = cli(
        "feed", str(DATA / "ercot_2023-08-01_07.csv"), "--site", site_id, "--bootstrap-servers", NOBODY
    )
    assert result.returncode == 2
    assert ("at most 200 bytes" if site_id.strip() else "not blank") in result.stderr


async def test_a_send_that_fails_half_way_raises_the_cause_and_leaves_no_error_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A security review (exactly-once, WRITE withheld on actions): the batch the broker refused failed
    the transaction, the next batch's queuing raised "IllegalOperation: Can't send messages while not in
    transaction", said as 'a bug', and asyncio logged the refused batches' errors as 'Future exception was
    never retrieved'. The cause is raised, at once, and every queued batch's error is retrieved."""
    import gc

    from aiokafka.errors import IllegalOperation, TopicAuthorizationFailedError
    from aiokafka.producer.message_accumulator import BatchBuilder

    from battery_worker.kafka.batching import send_batched
    from battery_worker.pipeline.processing import OutputRecord

    loop = asyncio.get_running_loop()
    queued: list[asyncio.Future[None]] = []

    class Refusing:
        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1, 2}

        def create_batch(self) -> BatchBuilder:
            return BatchBuilder(PRODUCER_BATCH_BYTES, 0, is_transactional=False)

        async def send_batch(
            self, batch: BatchBuilder, topic: str, *, partition: int
        ) -> asyncio.Future[None]:
            if len(queued) == 2:
                raise IllegalOperation("Can't send messages while not in transaction")
            future: asyncio.Future[None] = loop.create_future()
            if len(queued) == 1:  # the broker's refusal, already answered
                future.set_exception(TopicAuthorizationFailedError({"actions"}))
            queued.append(future)
            return future

    outputs = [OutputRecord("actions", b"s", b"{}", partition) for partition in (0, 1, 2)]
    with pytest.raises(TopicAuthorizationFailedError) as raised:
        await send_batched(Refusing(), outputs)
    assert isinstance(raised.value.__cause__, IllegalOperation)
    queued[0].set_exception(TopicAuthorizationFailedError({"actions"}))  # answered later
    await asyncio.sleep(0)
    queued.clear()
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


def test_a_time_written_as_a_number_is_seconds_or_milliseconds_since_1970_never_iso_text(
    tmp_path: Path,
) -> None:
    """A backtest review: ``1691020800000`` parsed by ``fromisoformat`` as 1691-02-08, so 7 rows of 72
    landed in the 17th century and the rest in 2023, and the run went on (exit 0)."""
    from battery_worker.pricefiles import load_ticks

    start = datetime(2023, 8, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=n) for n in range(72)]
    for scale, name in ((1000, "ms.csv"), (1, "s.csv")):
        path = tmp_path / name
        rows = [f"{int(at.timestamp() * scale)},{n}" for n, at in enumerate(hours)]
        path.write_text("\n".join(["timestamp,energy_price", *rows]) + "\n")
        assert [tick.timestamp for tick in load_ticks(path)] == hours


def test_a_number_time_before_2000_is_refused_as_a_spreadsheets_day_number(tmp_path: Path) -> None:
    """A backtest review: Excel's serial days (45139 for 2023-08-01) read as seconds put three days of
    prices into three seconds of 1970, and the backtest reported them (exit 0)."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    path = tmp_path / "excel.csv"
    path.write_text("timestamp,energy_price\n45139.000000,10\n45139.041667,11\n")
    with pytest.raises(PriceFileError) as raised:
        load_ticks(path)
    assert str(raised.value) == (
        "timestamp='45139.000000': excel.csv line 2: a time written as a number is seconds since 1970-01-01 "
        "UTC (milliseconds above 2e10), so 45139.000000 is 1970-01-01T12:32:19+00:00, before 2000: a "
        "spreadsheet's day number? write ISO 8601 times (2023-08-01T00:00:00Z)"
    )
    # ISO 8601's basic date is a date, not 20,230,801 seconds; float()'s '1_000' is no number here (a
    # diff review).
    compact = tmp_path / "compact.csv"
    compact.write_text("timestamp,energy_price\n20230801,10\n20230802,11\n")
    assert [tick.timestamp.day for tick in load_ticks(compact)] == [1, 2]
    underscored = tmp_path / "underscored.csv"
    underscored.write_text("timestamp,energy_price\n1_690_848_000,10\n")
    with pytest.raises(PriceFileError, match="timestamp='1_690_848_000'"):
        load_ticks(underscored)


def test_times_without_an_offset_are_noted_and_a_decimal_comma_hinted(tmp_path: Path) -> None:
    """A backtest review: a file in Berlin's local time ran as UTC, every price an hour or two off, with
    no word (documented, but said nowhere in the run); and a quoted ``"55,0"`` got pydantic's bare line."""
    from battery_worker.pricefiles import PriceFileError, load_ticks

    local = tmp_path / "local.csv"
    local.write_text("timestamp,energy_price\n2023-03-26 01:00:00,1\n2023-03-26T04:00:00+02:00,2\n")
    notes: list[str] = []
    assert len(load_ticks(local, notes=notes)) == 2
    assert notes == [
        "local.csv: 1 of 2 times have no UTC offset and are read as UTC (a file in local time needs its "
        "offsets, e.g. +01:00)"
    ]
    utc = tmp_path / "utc.csv"
    utc.write_text("timestamp,energy_price\n2023-03-26T01:00:00Z,1\n")
    notes.clear()
    load_ticks(utc, notes=notes)
    assert notes == []
    # The MARA API's times and a market file's "Datetime (UTC)" are UTC by their format: nothing to note.
    mara = tmp_path / "mara.csv"
    mara.write_text("energy_price,hash_price,token_price,timestamp\n1,2,3,2025-06-20T10:00:00\n")
    market = tmp_path / "market.csv"
    market.write_text("Datetime (UTC),Price (USD/MWh)\n2023-03-26 01:00:00,1\n")
    for quiet in (mara, market):
        load_ticks(quiet, notes=notes)
    assert notes == []
    comma = tmp_path / "comma.csv"
    comma.write_text('timestamp,energy_price\n2023-03-26T01:00:00Z,"55,0"\n')
    with pytest.raises(PriceFileError, match=r"line 2: .* \(a decimal comma\? write numbers with a decimal"):
        load_ticks(comma)
