"""The monitor's pure part: what a price API answer holds, and which of its ticks are new."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from battery_worker.monitor.answers import parse_answer, select_new
from battery_worker.ticks import PriceTick

NOW = datetime(2025, 6, 20, 12, 0, tzinfo=UTC)
AHEAD = timedelta(hours=1)
SITE = "mara-1"


def item(minute: int, price: float = 1.0, **extra: object) -> dict[str, object]:
    stamp = datetime(2025, 6, 20, 10, 0) + timedelta(minutes=minute)  # zone-less: UTC, as the API sends
    return {
        "energy_price": price,
        "hash_price": 1.5,
        "token_price": 2.5,
        "timestamp": stamp.isoformat(),
        **extra,
    }


def stamps(ticks: tuple[PriceTick, ...]) -> list[int]:
    start = datetime(2025, 6, 20, 10, 0, tzinfo=UTC)
    return [int((t.timestamp - start).total_seconds() // 60) for t in ticks]


def test_a_mara_list_newest_first_is_read_whole() -> None:
    answer = parse_answer(orjson.dumps([item(10, 3.0), item(5, 2.0), item(0, 1.0)]), SITE)
    assert not answer.rejected
    assert stamps(answer.ticks) == [10, 5, 0]
    assert answer.ticks[0].energy_price == 3.0
    assert answer.ticks[0].timestamp.tzinfo is not None


def test_a_single_object_is_one_tick_and_unknown_fields_are_ignored() -> None:
    answer = parse_answer(orjson.dumps(item(0, site_id=SITE, volume=3)), SITE)
    assert stamps(answer.ticks) == [0]
    assert not answer.rejected


def test_an_item_of_another_site_is_rejected_not_published_as_this_sites() -> None:
    """The monitor published an item naming another ``site_id`` under its own key, the id dropped (a
    review run); the worker reads the key, so that site's prices became this one's."""
    answer = parse_answer(orjson.dumps([item(5, site_id="other-site"), item(0)]), SITE)
    assert stamps(answer.ticks) == [0]
    assert [(r.kind, r.index) for r in answer.rejected] == [("invalid_tick", 0)]
    assert (
        "site_id='other-site': another site's tick, this monitor's is 'mara-1'" in answer.rejected[0].reason
    )


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_item_whose_time_lies_outside_the_calendar_in_utc_is_rejected_alone(stamp: str) -> None:
    """Its conversion to UTC overflowed and stopped the monitor at every poll (a review run)."""
    answer = parse_answer(orjson.dumps([item(0, timestamp=stamp), item(5)]), SITE)
    assert stamps(answer.ticks) == [5]
    assert answer.rejected[0].reason.startswith(f"timestamp='{stamp}': Value error, {stamp} lies outside")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'[{"energy_price": 1', "not JSON"),
        (b"42", "a JSON int"),
        (b'"prices"', "a JSON str"),
        (b"null", "a JSON NoneType"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_an_unusable_body_is_one_malformed_rejection(body: bytes, reason: str) -> None:
    answer = parse_answer(body, SITE)
    assert answer.ticks == ()
    assert len(answer.rejected) == 1
    assert answer.rejected[0].kind == "malformed"
    assert answer.rejected[0].reason.startswith(reason)


def test_each_bad_item_is_rejected_alone_with_its_reason_and_the_good_ones_are_kept() -> None:
    body = (
        b'[{"energy_price": NaN, "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:00:00"},'
        b' {"energy_price": Infinity, "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:00:00"},'
        b' {"energy_price": 1e999, "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:00:00"},'
        b' {"hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:05:00"},'
        b' {"energy_price": 1, "hash_price": 1, "token_price": 1, "timestamp": "yesterday"},'
        b' {"energy_price": "1.5", "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:05:00"},'
        b' {"energy_price": 1, "hash_price": 1, "token_price": 1},'
        b" 7,"
        b' {"energy_price": 2, "hash_price": 1, "token_price": 1, "timestamp": "2025-06-20T10:10:00Z"}]'
    )
    answer = parse_answer(body, SITE)
    assert stamps(answer.ticks) == [10]
    reasons = [(r.index, r.reason) for r in answer.rejected]
    assert [r.kind for r in answer.rejected] == ["invalid_tick"] * 8
    assert reasons[0] == (0, "energy_price=nan: Input should be a finite number")
    assert reasons[1][1].startswith("energy_price=inf")
    assert reasons[2][1].startswith("energy_price=inf")
    assert reasons[3] == (3, "energy_price: missing")
    assert reasons[4][1].startswith("timestamp='yesterday'")
    assert reasons[5][1].startswith("energy_price='1.5'")
    assert reasons[6] == (6, "timestamp: missing")
    assert reasons[7] == (7, "a JSON int, not an object")


def test_only_ticks_after_the_last_published_one_are_new_oldest_first() -> None:
    ticks = parse_answer(orjson.dumps([item(m) for m in (20, 15, 10, 5, 0)]), SITE).ticks
    last = ticks[2].timestamp  # minute 10
    selection = select_new(ticks, last, now=NOW, max_ahead=AHEAD)
    assert stamps(selection.new) == [15, 20]
    assert selection.already_published == 3
    assert selection.duplicates == 0
    assert select_new(ticks, None, now=NOW, max_ahead=AHEAD).new == tuple(reversed(ticks))


def test_duplicates_and_any_order_come_out_once_in_order_the_first_listed_winning() -> None:
    answer = parse_answer(
        orjson.dumps([item(5, 9.0), item(0), item(10), item(5, 1.0), item(10), item(0)]), SITE
    )
    selection = select_new(answer.ticks, None, now=NOW, max_ahead=AHEAD)
    assert stamps(selection.new) == [0, 5, 10]
    assert selection.new[1].energy_price == 9.0
    assert selection.duplicates == 3


def test_a_tick_stamped_too_far_ahead_is_never_new() -> None:
    ticks = parse_answer(orjson.dumps([item(0), item(24 * 60)]), SITE).ticks
    selection = select_new(ticks, None, now=NOW, max_ahead=AHEAD)
    assert stamps(selection.new) == [0]
    assert stamps(selection.ahead) == [24 * 60]


def test_nothing_new_when_the_answer_holds_only_published_ticks() -> None:
    ticks = parse_answer(orjson.dumps([item(5), item(0)]), SITE).ticks
    selection = select_new(ticks, ticks[0].timestamp, now=NOW, max_ahead=AHEAD)
    assert selection.new == ()
    assert selection.already_published == 2


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (b"\x1f\x8b\x08\x00\x00\x00", "(a gzip body: the API compressed it though the monitor asks for"),
        (b"  <html><body>Down for maintenance</body></html>", "(markup, an error or maintenance page?: "),
        (b"plain text", None),
    ],
)
def test_a_body_that_is_not_json_says_what_it_seems_to_be(body: bytes, hint: str | None) -> None:
    """A monitor review: a gzip body and an HTML maintenance page were each a bare decoding error."""
    (rejected,) = parse_answer(body, "m").rejected
    assert rejected.reason.startswith("not JSON: ")
    if hint is None:
        assert "gzip body" not in rejected.reason
        assert "markup" not in rejected.reason
    else:
        assert hint in rejected.reason


def _monitor() -> Any:
    from battery_worker.monitor.service import Monitor
    from battery_worker.settings import load_settings

    return Monitor(load_settings(None, {"monitor": {"url": "http://127.0.0.1:1/p", "site": "m"}}))


def _tick(minutes: int, price: float = 1.0) -> PriceTick:
    stamp = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return PriceTick(energy_price=price, hash_price=1.0, token_price=1.0, timestamp=stamp)


def test_late_ticks_are_counted_once_each_however_many_and_leave_the_bad_items_memory_alone() -> None:
    """A diff review: 11,293 late ticks a poll (an hourly history listed again every 5 minutes) were
    counted again at every poll, and pushed the bad items already said out of their shared memory."""
    monitor = _monitor()
    hours = [_tick(60 * n) for n in range(1400)]
    monitor._published = {t.timestamp: (t.energy_price, t.hash_price, t.token_price) for t in hours}
    monitor.stats.last_tick_at = hours[-1].timestamp
    monitor._first_seen(["a bad item"])
    listed = [_tick(5 * n) for n in range(1400 * 12)]
    for _ in range(3):
        monitor._say_late(listed)
    assert monitor.stats.late == 1399 * 11
    assert monitor._first_seen(["a bad item"]) == [], "still remembered as said"


def test_a_time_listed_three_times_is_one_time_said_with_the_prices_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A diff review: one time listed with 1, 2, 3 was '2 times listed twice'; listed next with 1, 2, 4,
    the line quoted 2 as left, not 4."""
    monitor = _monitor()
    for listed in (
        [_tick(0, 1.0), _tick(0, 2.0), _tick(0, 3.0)],
        [_tick(0, 1.0), _tick(0, 2.0), _tick(0, 4.0)],
    ):
        monitor._say_listed_twice(listed, {listed[0].timestamp: listed[0]})
    said = [r.getMessage() for r in caplog.records]
    assert [line.split(": ", 1)[1] for line in said] == [
        "1 times listed more than once in one answer with other prices, e.g. 2025-01-01T00:00:00+00:00: "
        "energy price 1 taken (listed first), 2, 3 left",
        "1 times listed more than once in one answer with other prices, e.g. 2025-01-01T00:00:00+00:00: "
        "energy price 1 taken (listed first), 2, 4 left",
    ]


async def test_an_unacknowledged_publish_fails_in_time_leaving_its_sends_to_be_waited_for() -> None:
    """A diff review: the acknowledgement's bound cancelled the sends (wait_for over gather), so the next
    poll's read-back did not wait for records still queued in the producer, which could land after it."""
    from aiokafka.errors import KafkaTimeoutError

    from battery_worker.monitor.service import Monitor
    from battery_worker.settings import load_settings

    config = {"url": "http://127.0.0.1:1/p", "site": "m", "timeout_s": 0.1}
    monitor = Monitor(load_settings(None, {"monitor": config}))
    queued: list[asyncio.Future[object]] = []

    class Stalled:
        async def send(self, *args: object, **kwargs: object) -> asyncio.Future[object]:
            queued.append(asyncio.get_running_loop().create_future())
            return queued[-1]

    with pytest.raises(KafkaTimeoutError, match=r"within 0\.1 s"):
        await monitor._publish(Stalled(), [_tick(0), _tick(5)])
    assert monitor._in_flight == queued
    assert not any(sent.cancelled() or sent.done() for sent in queued)
    assert monitor.stats.published == 0
