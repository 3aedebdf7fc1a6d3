"""The hot path serialises events from plain dicts; every byte must still be what the models would write.

Each output of :class:`TickProcessor` is parsed with its model and encoded again with ``events.encode``:
the bytes must not change (same field order, floats as floats, the same datetime form). ``event_id`` must
equal ``str(uuid.uuid5(...))``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import BaseModel

from battery_worker.battery_config import BatteryConfig
from battery_worker.emissions import EmissionsState
from battery_worker.events import (
    _EVENT_NAMESPACE,
    BatteryAction,
    BatteryStateRecord,
    BatteryStatus,
    HistoryRecord,
    encode,
    event_id,
)
from battery_worker.kafka.exceptions import StateOfNewerVersion
from battery_worker.kafka.store import Stored
from battery_worker.pipeline.partitioning import home_partition, key_partition_uncached, murmur2
from battery_worker.pipeline.processing import InputRecord, OutputRecord, TickProcessor
from battery_worker.settings import TopicNames
from battery_worker.sites import PolicyChoice, SiteDirectory, SiteOverride

TOPICS = TopicNames()
MODELS: dict[str, type[BaseModel]] = {
    TOPICS.actions: BatteryAction,
    TOPICS.status: BatteryStatus,
    TOPICS.history: HistoryRecord,
    TOPICS.state: BatteryStateRecord,
}


def ticks(rng: random.Random, count: int, sites: int) -> list[InputRecord]:
    prices = [-50.0, 0.0, 1.5, 1.7, 2.0, 24.99, 25, 100, 100.01, 5000.0, 1e6, -1e6, 1e-9, 3]
    at = {site: datetime(2023, 8, 1, tzinfo=UTC) for site in range(sites)}
    records = []
    for offset in range(count):
        site = rng.randrange(sites)
        at[site] += timedelta(minutes=rng.choice([5, 15, 60, 61, 180, 0, -30]))  # gaps, stale ticks
        value = {
            "energy_price": rng.choice(prices) if rng.random() < 0.5 else rng.uniform(-100, 300),
            "hash_price": rng.choice([1.5, 0, 2]),
            "token_price": 1.0,
            # with a zone, or zone-less (UTC by contract)
            "timestamp": at[site].isoformat()
            if rng.random() < 0.8
            else at[site].replace(tzinfo=None).isoformat(),
        }
        if rng.random() < 0.6:  # intensity given (int or float), else missing: carried for 3 h, then unknown
            value["carbon_intensity"] = (
                rng.choice([0, 250, 412.5]) if rng.random() < 0.5 else rng.uniform(0, 900)
            )
        partition = home_partition(f"site-{site}", 3)
        records.append(InputRecord("prices", partition, offset, f"site-{site}".encode(), orjson.dumps(value)))
    return records


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_output_is_byte_identical_to_its_model_encoding(seed: int) -> None:
    rng = random.Random(seed)
    directory = SiteDirectory(
        BatteryConfig(),
        PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0}),
        # integer settings (a library user's BatteryConfig(capacity_mwh=200)) must still be written as floats
        {
            "site-1": SiteOverride(battery={"capacity_mwh": 200, "max_charge_rate_mw": 40, "efficiency": 1}),
            "site-2": SiteOverride(battery={"max_cycles_per_day": 1}),  # carries the day's delivered energy
            "site-3": SiteOverride(battery_type="nmc"),
            # machines planned tick by tick, and a fleet with no inference machine (its MW sum to an int 0)
            "site-4": SiteOverride(policy=PolicyChoice("site", {"warmup_hours": 1, "horizon_hours": 3})),
            "site-5": SiteOverride(
                site={"machines": [{"name": "m", "power_kw": 5, "output": 50, "count": 9, "paid_by": "hash"}]}
            ),
        },
    )
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    outputs: list[OutputRecord] = []
    for index, record in enumerate(ticks(rng, 3000, 7)):
        outputs.extend(processor.handle(record).outputs)
        if index % 100 == 99:
            outputs.extend(processor.take_state_records())
    checked = 0
    for output in outputs:
        model = MODELS.get(output.topic)
        if model is None:
            continue
        assert encode(model.model_validate_json(output.value)) == output.value
        checked += 1
    assert checked > 3000


def test_the_status_carries_the_wear_the_energy_delivered_cost() -> None:
    """A review run as the asset owner: the library's ``get_status`` gave the wear and the net after it,
    the worker's status event neither, so a consumer of ``battery.status`` reported an NMC battery's gross
    value as its net, more than twice what it earned."""
    directory = SiteDirectory(
        BatteryConfig(),
        PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0}),
        {
            "site-1": SiteOverride(battery_type="nmc"),
            "site-2": SiteOverride(battery={"cycle_cost_per_mwh": 0}),
        },
    )
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    last: dict[str, BatteryStatus] = {}
    for record in ticks(random.Random(5), 600, 3):
        for output in processor.handle(record).outputs:
            if output.topic == TOPICS.status:
                status = BatteryStatus.model_validate_json(output.value or b"")
                last[status.site_id] = status
    worn, unworn = last["site-1"], last["site-2"]
    assert worn.schema_version == unworn.schema_version == 3
    assert worn.total_energy_used_mwh > 0
    assert unworn.total_energy_used_mwh > 0
    assert worn.wear_cost is not None
    assert worn.wear_cost == pytest.approx(82.0 * worn.total_energy_used_mwh)  # the NMC preset's wear cost
    assert worn.net_value_after_wear == pytest.approx(worn.net_value - worn.wear_cost)
    assert unworn.wear_cost == 0.0
    assert unworn.net_value_after_wear == unworn.net_value


def test_event_id_is_the_uuid5_of_the_coordinates_the_site_and_the_tick_time() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        kind = rng.choice(["action", "status", "history", "state"])
        topic = rng.choice(["prices", "a.prices", "prix-é"])
        partition, offset = rng.randrange(1000), rng.randrange(10**15)
        tick_at = datetime.fromtimestamp(rng.randrange(2 * 10**9), UTC).isoformat()
        site = rng.choice(["default", "texas-1", "site-é"])
        expected = str(uuid.uuid5(_EVENT_NAMESPACE, f"{kind}:{topic}:{partition}:{offset}:{site}:{tick_at}"))
        assert event_id(kind, topic, partition, offset, site, tick_at) == expected  # type: ignore[arg-type]


def test_a_tick_whose_site_id_disagrees_with_its_key_is_dead_lettered_and_applied_nowhere() -> None:
    """Caught before only by the slow fuzz of the fault tests (the test-suite review removed the check)."""
    directory = SiteDirectory(
        BatteryConfig(), PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0})
    )
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    value = {"energy_price": 1.0, "hash_price": 1, "token_price": 1, "timestamp": "2023-08-01T00:00:00Z"}
    home = home_partition("east", 3)
    body = orjson.dumps({**value, "site_id": "west"})
    handled = processor.handle(InputRecord("prices", home, 0, b"east", body))
    assert [output.topic for output in handled.outputs] == [TOPICS.dlq]
    headers = dict(handled.outputs[0].headers)
    assert headers["error.field"] == b"site_id"
    assert b"disagrees with the message key 'east'" in (headers["error"] or b"")
    assert processor.sites() == {}
    agreeing = orjson.dumps({**value, "site_id": "east"})
    assert TOPICS.actions in {
        o.topic for o in processor.handle(InputRecord("prices", home, 1, b"east", agreeing)).outputs
    }


def test_without_status_the_other_outputs_are_the_same_bytes() -> None:
    """The audit replay leaves the status out (``emit_status=False``); what it compares must not change."""
    directory = SiteDirectory(
        BatteryConfig(), PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0})
    )
    full = TickProcessor(directory, TOPICS, prices_partitions=3)
    lean = TickProcessor(directory, TOPICS, prices_partitions=3, emit_status=False)
    for record in ticks(random.Random(4), 2000, 5):
        expected = [o for o in full.handle(record).outputs if o.topic != TOPICS.status]
        assert list(lean.handle(record).outputs) == expected
    assert lean.take_state_records() == full.take_state_records()


def test_our_murmur2_is_kafkas_default_partitioner_hash() -> None:
    """The worker partitions its output records with it: each must land where aiokafka's ``send`` puts it."""
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2

    rng = random.Random(19)
    for length in range(64):
        for _ in range(10):
            data = rng.randbytes(length)
            assert murmur2(data) & 0x7FFFFFFF == aiokafka_murmur2(data) & 0x7FFFFFFF


def test_a_key_lands_on_the_partition_aiokafkas_default_partitioner_chooses() -> None:
    """The partition itself, not the hash: the test above masks both hashes, so the review's
    ``key_partition_uncached`` without its mask passed it (it then chose another partition than Kafka's
    for some keys)."""
    from aiokafka.partitioner import DefaultPartitioner

    choose = DefaultPartitioner()
    rng = random.Random(23)
    for partitions in (1, 3, 7, 64):
        keys = [rng.randbytes(rng.randrange(1, 40)) for _ in range(500)] + [
            f"site-{i}".encode() for i in range(200)
        ]
        for key in keys:
            expected = choose(key, list(range(partitions)), list(range(partitions)))
            assert key_partition_uncached(key, partitions) == expected


def test_a_state_record_written_before_the_daily_delivery_count_still_loads() -> None:
    old = {
        "schema_version": 1,
        "site_id": "s",
        "source": {"topic": "prices", "partition": 0, "offset": 7},
        "state_of_charge_mwh": 50.0,
        "last_tick_at": "2023-01-01T00:00:00Z",
        "ticks_applied": 1,
        "ticks_stale": 0,
        "energy_bought_mwh": 0.0,
        "energy_stored_mwh": 0.0,
        "energy_drawn_mwh": 0.0,
        "energy_delivered_mwh": 0.0,
        "charging_cost": 0.0,
        "avoided_cost": 0.0,
        "policy": "threshold",
        "policy_memory": None,
    }
    record = BatteryStateRecord.model_validate(old)
    assert record.delivered_today_mwh == 0.0
    assert record.state_of_charge_mwh == 50.0
    assert record.emissions_state() == EmissionsState(), "a version 1 record: no emissions counted yet"


def test_a_restored_site_carries_on_its_emissions_exactly() -> None:
    """The totals and the carried intensity live in the state record: a restart continues them exactly."""
    directory = SiteDirectory(
        BatteryConfig(), PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0})
    )
    key, partition = b"s", home_partition("s", 3)
    at = datetime(2023, 8, 1, tzinfo=UTC)
    values = []
    for hour, (price, intensity) in enumerate([(10, 300.0), (10, None), (500, 420.0), (500, None)] * 3):
        value: dict[str, float | str] = {"energy_price": price, "hash_price": 0, "token_price": 0}
        value["timestamp"] = (at + timedelta(hours=hour)).isoformat()
        if intensity is not None:
            value["carbon_intensity"] = intensity
        values.append(InputRecord("prices", partition, hour, key, orjson.dumps(value)))
    straight = TickProcessor(directory, TOPICS, prices_partitions=3)
    for record in values:
        straight.handle(record)
    first = TickProcessor(directory, TOPICS, prices_partitions=3)
    for record in values[:5]:  # stops on a tick whose intensity is carried
        first.handle(record)
    stored = [BatteryStateRecord.model_validate_json(out.value) for out in first.take_state_records()]
    assert stored[0].schema_version == 2
    assert stored[0].carried_intensity == 300.0
    second = TickProcessor(directory, TOPICS, prices_partitions=3)
    second.restore(stored)
    for record in values[5:]:
        second.handle(record)
    assert second.sites() == straight.sites()
    totals = straight.sites()["s"].emissions
    assert (totals.steps, totals.known_steps, totals.carried_steps) == (12, 6, 6)
    assert totals.net_kg != 0.0
    assert totals.site_kg > 0.0, "the site's running import emissions are restored too"
    assert stored[0].emissions_site_kg > 0.0


def test_a_restored_site_carries_the_days_delivered_energy() -> None:
    directory = SiteDirectory(
        BatteryConfig(max_cycles_per_day=0.5),
        PolicyChoice("threshold", {"charge_below": 25.0, "discharge_above": 100.0}),
    )
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    at = datetime(2023, 8, 1, 18, tzinfo=UTC)
    for offset, price in enumerate([500.0, 500.0]):
        value = {"energy_price": price, "hash_price": 0, "token_price": 0, "timestamp": at.isoformat()}
        processor.handle(InputRecord("prices", home_partition("s", 3), offset, b"s", orjson.dumps(value)))
        at += timedelta(hours=1)
    records = [BatteryStateRecord.model_validate_json(out.value) for out in processor.take_state_records()]
    assert records[0].delivered_today_mwh == pytest.approx(40.0)
    restored = TickProcessor(directory, TOPICS, prices_partitions=3)
    restored.restore(records)
    assert restored.sites() == processor.sites()


def test_stored_state_records_are_parsed_one_by_one_and_an_unreadable_one_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Read from the state topic: restored a site at a time; a bad record is logged, not fatal."""
    directory = SiteDirectory(BatteryConfig(), PolicyChoice("mpc", {}))
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    at = datetime(2023, 8, 1, tzinfo=UTC)
    for site in ("a", "b"):
        for hour, price in enumerate([30.0, 20.0, 90.0, 40.0]):
            value = {"energy_price": price, "hash_price": 0, "token_price": 0}
            tick = orjson.dumps({**value, "timestamp": (at + timedelta(hours=hour)).isoformat()})
            processor.handle(InputRecord("prices", home_partition(site, 3), hour, site.encode(), tick))
    values = {out.key or b"": out.value for out in processor.take_state_records()}
    values[b"broken"] = b'{"site_id": "broken", "state_of_charge_mwh": "lots"}'
    stored = Stored(values, records_read=7)
    parsed = stored.records()
    assert next(parsed).site_id == "a", "parsed when asked for, not all up front"
    restored = TickProcessor(directory, TOPICS, prices_partitions=3)
    assert restored.restore(stored.records()) == 2
    assert restored.sites() == processor.sites()
    assert "state record for b'broken' is unreadable, the site starts afresh" in caplog.text


@pytest.mark.parametrize("extra", [{}, {"field_of_version_3": 1}])
def test_a_stored_state_record_of_a_newer_version_is_refused_not_started_afresh(
    extra: dict[str, int],
) -> None:
    """Started afresh, as an unreadable record is, a rollback reset every battery (an upgrade review):
    a newer version is refused whether or not its record reads as this version's."""
    directory = SiteDirectory(BatteryConfig(), PolicyChoice("threshold", {}))
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    tick = orjson.dumps(
        {"energy_price": 30.0, "hash_price": 0, "token_price": 0, "timestamp": "2023-08-01T00:00:00Z"}
    )
    processor.handle(InputRecord("prices", home_partition("s", 3), 0, b"s", tick))
    (record,) = processor.take_state_records()
    newer = orjson.dumps({**orjson.loads(record.value), "schema_version": 3, **extra})
    with pytest.raises(
        StateOfNewerVersion, match="site 's' is of version 3, newer than this battery-worker reads \\(2\\)"
    ):
        TickProcessor(directory, TOPICS, prices_partitions=3).restore(Stored({b"s": newer}, 1).records())


def test_a_stored_policy_memory_that_cannot_be_read_starts_the_policy_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A compacted record whose memory is garbage raised InvalidConfig out of the restore, which stopped
    every worker assigned its partition, at every start: now the battery is kept, the policy starts over."""
    directory = SiteDirectory(BatteryConfig(), PolicyChoice("mpc", {}))
    processor = TickProcessor(directory, TOPICS, prices_partitions=3)
    at = datetime(2023, 8, 1, tzinfo=UTC)
    for hour, price in enumerate([30.0, 20.0, 90.0, 40.0]):
        value = {"energy_price": price, "hash_price": 0, "token_price": 0}
        tick = orjson.dumps({**value, "timestamp": (at + timedelta(hours=hour)).isoformat()})
        processor.handle(InputRecord("prices", home_partition("s", 3), hour, b"s", tick))
    (record,) = [BatteryStateRecord.model_validate_json(out.value) for out in processor.take_state_records()]
    broken = record.model_copy(update={"policy_memory": {"garbage": 1}})
    restored = TickProcessor(directory, TOPICS, prices_partitions=3)
    assert restored.restore([broken]) == 1
    site = restored.sites()["s"]
    assert site.battery == processor.sites()["s"].battery
    assert site.policy_memory == directory.setup("s").policy.initial_memory()
    assert "policy memory of site 's' is unreadable, its mpc policy starts afresh" in caplog.text


def test_a_restored_site_outside_its_window_as_configured_now_is_said_and_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fleet review shrank a battery from 1000 to 300 MWh while it held 868 MWh: the worker restored it
    without a word and its status read 148.9 %. The energy is kept (the stored state is the truth of what
    was done); the start now says which sites lie outside their window, and by how much."""
    big = SiteDirectory(BatteryConfig(capacity_mwh=1000.0, initial_charge_percent=90.0), PolicyChoice())
    processor = TickProcessor(big, TOPICS, prices_partitions=3)
    tick = orjson.dumps(
        {"energy_price": 30.0, "hash_price": 0, "token_price": 0, "timestamp": "2023-08-01T00:00:00Z"}
    )
    for site in ("big", "fits"):
        processor.handle(InputRecord("prices", home_partition(site, 3), 0, site.encode(), tick))
    records = [BatteryStateRecord.model_validate_json(out.value) for out in processor.take_state_records()]
    held = {record.site_id: record.state_of_charge_mwh for record in records}
    overrides = {"fits": SiteOverride(battery={"capacity_mwh": 1000.0, "initial_charge_percent": 90.0})}
    shrunk = SiteDirectory(BatteryConfig(capacity_mwh=300.0), PolicyChoice(), overrides)
    restored = TickProcessor(shrunk, TOPICS, prices_partitions=3)
    assert restored.restore(records) == 2
    assert restored.sites()["big"].battery.state_of_charge_mwh == held["big"] > 300.0
    assert "1 restored sites hold energy outside their battery's state-of-charge window" in caplog.text
    assert f"big ({held['big']:.2f} MWh, above 0–300 MWh of 300 MWh)" in caplog.text
    assert "fits (" not in caplog.text
    assert "stored under another policy" not in caplog.text
    caplog.clear()
    assert restored.restore(records) == 2  # a rebalance gives the partition back: said once
    assert "outside their battery's" not in caplog.text

    caplog.clear()
    adaptive = SiteDirectory(BatteryConfig(capacity_mwh=1000.0), PolicyChoice("adaptive", {}))
    assert TickProcessor(adaptive, TOPICS, prices_partitions=3).restore(records) == 2
    assert (
        "2 restored sites were stored under another policy than they run now (big (threshold → adaptive)"
        in (caplog.text)
    )


def test_a_restored_site_like_a_configured_one_without_state_is_said_to_be_misspelt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fleet operator's review wrote ``[sites.nmc-l]`` for ``nmc-1``: the site restored with the default
    battery (100 MWh for its 40) and the start said nothing of it."""
    fleet = SiteDirectory(BatteryConfig(capacity_mwh=40.0), PolicyChoice())
    processor = TickProcessor(fleet, TOPICS, prices_partitions=3)
    tick = orjson.dumps(
        {"energy_price": 30.0, "hash_price": 0, "token_price": 0, "timestamp": "2023-08-01T00:00:00Z"}
    )
    for site in ("nmc-1", "plain-7", "lfp-2"):
        processor.handle(InputRecord("prices", home_partition(site, 3), 0, site.encode(), tick))
    records = [BatteryStateRecord.model_validate_json(out.value) for out in processor.take_state_records()]
    small = SiteOverride(battery={"capacity_mwh": 40.0})
    overrides = {"nmc-l": small, "lfp-2": small, "brand-new": small, "plain-8": small}  # plain-8: a new site
    typo = SiteDirectory(BatteryConfig(), PolicyChoice(), overrides)
    restored = TickProcessor(typo, TOPICS, prices_partitions=3)
    assert restored.restore(records) == 3
    assert (
        "1 restored sites are not configured under sites, each read as a configured site that has no "
        "state (nmc-1 (sites.nmc-l)): a misspelt id?" in caplog.text
    )
    assert "plain-7" not in caplog.text, "unlike every configured id: a site of the default battery"
    assert "plain-7 (sites.plain-8)" not in caplog.text
    caplog.clear()
    assert restored.restore(records) == 3  # a rebalance gives the partition back: said once
    assert "misspelt" not in caplog.text


def test_a_site_policy_site_given_ticks_without_hash_or_token_price_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A site manager's review fed a market file without --hash-price and --token-price to a worker run with
    ``--policy site``: every machine was curtailed for a month, and neither feed nor the worker said so."""
    overrides = {"mine": SiteOverride(policy=PolicyChoice("site", {"warmup_hours": 1}))}
    processor = TickProcessor(
        SiteDirectory(BatteryConfig(), PolicyChoice(), overrides), TOPICS, prices_partitions=3
    )
    for hour, (site, hash_price) in enumerate([("mine", 0), ("mine", 0), ("other", 0), ("mine", 1.5)]):
        tick = {
            "energy_price": 30.0,
            "hash_price": hash_price,
            "token_price": 0,
            "timestamp": f"2023-08-01T0{hour}:00:00Z",
        }
        processor.handle(
            InputRecord("prices", home_partition(site, 3), hour, site.encode(), orjson.dumps(tick))
        )
    said = [r.getMessage() for r in caplog.records if "hash_price and token_price both 0" in r.getMessage()]
    assert said == [
        "site mine: a tick with hash_price and token_price both 0 under the site policy: no machine earns, "
        "so every one is curtailed (a market file fed without --hash-price and --token-price?)"
    ]
