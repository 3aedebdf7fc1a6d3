"""``prices`` created again, or given more partitions, under a kept state topic (a review run).

A site's state names the ``prices`` offset it was stored at, and a tick at or before it was skipped as
already applied. Offsets of a topic created again start over, and a site moved to another partition by a
new partition count has other offsets: every tick of theirs was skipped, without a word, until the new
offsets passed the stored one. A record read again (a restart, a rewind) is skipped as before.
"""

from __future__ import annotations

import logging

import orjson
import pytest

from battery_worker.events import BatteryStateRecord
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord, TickProcessor
from tests.test_hardening import NOW_MS, processor, tick_bytes

SITE = "site-x"


def stored(proc: TickProcessor) -> list[BatteryStateRecord]:
    return [BatteryStateRecord.model_validate_json(r.value or b"") for r in proc.take_state_records()]


def run(
    proc: TickProcessor,
    partition: int,
    offsets: range,
    hours: range,
    site: str = SITE,
    event_ids: list[str] | None = None,
) -> list[str]:
    """Each record's outcome; the ids of the events published go to ``event_ids``."""
    records = [
        InputRecord("prices", partition, offset, site.encode(), tick_bytes(hour), NOW_MS)
        for offset, hour in zip(offsets, hours, strict=True)
    ]
    handled = [proc.handle(record) for record in records]
    if event_ids is not None:
        event_ids += [orjson.loads(out.value or b"")["event_id"] for h in handled for out in h.outputs]
    return [h.kind for h in handled]


def test_ticks_of_prices_created_again_are_applied_and_a_record_read_again_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = home_partition(SITE, 3)
    first = processor()
    published: list[str] = []
    assert run(first, home, range(30), range(30), event_ids=published) == ["applied"] * 30
    restarted = processor()
    restarted.restore(stored(first))
    assert run(restarted, home, range(20, 30), range(20, 30)) == ["already_applied"] * 10
    with caplog.at_level(logging.WARNING):
        applied = run(restarted, home, range(10), range(30, 40), event_ids=published)
        assert applied == ["applied"] * 10  # all skipped before
    said = [r.getMessage() for r in caplog.records if "the topic was created again" in r.getMessage()]
    assert len(said) == 1, said
    assert run(restarted, home, range(10, 12), range(5, 7)) == ["stale"] * 2, "an old tick is still stale"
    assert restarted.sites()[SITE].battery.ticks_applied == 40
    # Offsets 0-9 again, other ticks: their events are other events, with ids of their own (they had the
    # old ticks' ids, and a consumer deduplicating on event_id dropped them).
    assert len(published) == 40 * 3
    assert len(set(published)) == len(published)


def test_a_site_moved_by_a_new_partition_count_goes_on_from_its_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, after = 1, 2
    moved = next(f"site-{n}" for n in range(100) if home_partition(f"site-{n}", after) != 0)
    first = processor(before)
    assert run(first, 0, range(30), range(30), moved) == ["applied"] * 30
    old_home = stored(first)
    grown = processor(after)
    with caplog.at_level(logging.WARNING):
        grown.restore(old_home)
    assert any(f"{moved} (0 → 1)" in r.getMessage() for r in caplog.records), caplog.text
    assert run(grown, 1, range(10), range(30, 40), moved) == ["applied"] * 10  # all skipped before
    assert grown.sites()[moved].battery.ticks_applied == 40
    both = old_home + stored(grown)  # the old home's record and the new one's
    assert [record.source.partition for record in both] == [0, 1]
    for order in (both, both[::-1]):  # whichever partition a restore reads last
        again = processor(after)
        again.restore(order)
        assert again.sites()[moved].battery.ticks_applied == 40


def test_a_state_behind_the_one_restored_does_not_replace_it() -> None:
    """A paused worker's late write lands after the new owner's newer record: read in log order, the late
    one won, and the site went back to it (the restore's rule; the worker also keeps from writing it)."""
    home = home_partition(SITE, 3)
    first = processor()
    run(first, home, range(30), range(30))
    older = stored(first)
    second = processor()
    second.restore(older)
    run(second, home, range(30, 40), range(30, 40))
    newer = stored(second)
    for order in (newer + older, older + newer):
        restarted = processor()
        restarted.restore(order)
        assert restarted.sites()[SITE].battery.ticks_applied == 40
