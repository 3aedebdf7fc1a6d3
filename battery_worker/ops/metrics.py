"""Prometheus metrics of a running worker, read when scraped: the hot path does no metric work.

:class:`WorkerCollector` reads ``worker.stats`` (WorkerStats), ``worker.assignment``,
``worker.processor.counters`` (Counters), ``worker.processor.sites()``, ``worker.latency`` (per-batch
histograms) and the lag measured just before the scrape. Only the per-site power and last action need
something per record: :class:`SiteActivity` keeps the last one per site, fed by the worker's
``on_handled`` hook when the metrics server is on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from battery_worker.kafka.latency import Histogram
from battery_worker.pipeline.processing import Handled, InputRecord

if TYPE_CHECKING:
    from aiokafka import TopicPartition

    from battery_worker.kafka.worker import Worker
    from battery_worker.kafka.worker_stats import FailureKind

PREFIX = "battery_worker"

_ERRORS: dict[FailureKind, str] = {
    "fetch": "Fetches of input records that failed to the worker (not aiokafka's own retries)",
    "produce": "Failed sends of events or state records",
    "commit": "Failed offset commits, other than refused after a rebalance",
    "restore": "Failed state restores (on assignment or in a rewind)",
}
"""``battery_worker_<kind>_errors_total``: each failure counted once, where it happened."""


@dataclass(frozen=True, slots=True)
class LastAction:
    action: str
    power_mw: float
    """Signed: positive while charging (bought from the grid), negative while discharging (delivered)."""
    partition: int


@dataclass(slots=True)
class SiteActivity:
    """The last applied action per site; an ``on_handled`` hook (one dict store per applied record)."""

    last: dict[str, LastAction] = field(default_factory=dict)

    def __call__(self, record: InputRecord, handled: Handled) -> None:
        if handled.outcome is None or handled.site_id is None:
            return
        step = handled.outcome.step
        sign = -1.0 if step.action.value == "discharge" else 1.0
        self.last[handled.site_id] = LastAction(step.action.value, sign * step.power_mw, record.partition)


class WorkerCollector(Collector):
    """Everything on ``/metrics`` except the process figures, built from the worker at scrape time."""

    def __init__(self, worker: Worker, activity: SiteActivity | None = None) -> None:
        self._worker = worker
        self._activity = activity
        self._directory = worker.settings.site_directory()
        self._fingerprint = worker.settings.decisions_fingerprint()
        self.lag: dict[TopicPartition, int] = {}
        """Set by the server right before each scrape (measuring it needs the event loop)."""

    def collect(self) -> Iterator[Metric]:
        worker = self._worker
        stats, assignment = worker.stats, worker.assignment
        counters = worker.processor.counters

        ticks = CounterMetricFamily(
            f"{PREFIX}_ticks", "Input records handled, by outcome", labels=["outcome"]
        )
        for outcome in ("applied", "stale", "already_applied", "rejected"):
            ticks.add_metric([outcome], getattr(counters, outcome))
        yield ticks
        dlq = CounterMetricFamily(
            f"{PREFIX}_dlq", "Records sent to the dead-letter topic, by reason", labels=["reason"]
        )
        for reason, count in sorted(counters.rejected_by_reason.items()):
            dlq.add_metric([reason], count)
        yield dlq
        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions", "Applied decisions, by action", labels=["action"]
        )
        for action in ("charge", "discharge", "hold"):
            decisions.add_metric([action], counters.actions.get(action, 0))
        yield decisions

        yield from self._sites()

        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag",
            "Records not yet fetched per assigned partition",
            labels=["topic", "partition"],
        )
        for tp, records in sorted(self.lag.items()):
            lag.add_metric([tp.topic, str(tp.partition)], records)
        yield lag

        yield _histogram(
            f"{PREFIX}_processing_seconds",
            "Per batch: fetched to events acknowledged",
            worker.latency.processing,
        )
        yield _histogram(
            f"{PREFIX}_tick_age_seconds",
            "Per partition and batch: the oldest record's Kafka timestamp to its events acknowledged",
            worker.latency.tick_age,
        )
        for name, help_text, value in (
            ("batches", "Batches whose events are acknowledged", stats.batches),
            (
                "checkpoints",
                "At-least-once: state records and offsets stored",
                stats.checkpoints,
            ),
            ("rebalances", "Partition revocations (rebalances)", stats.rebalances),
            ("restores", "State restores (assignments and rewinds)", stats.restores),
            ("commit_failures", "Offset commits refused after a rebalance", stats.commit_failures),
            ("rewinds", "Rewinds to the stored state", stats.rewinds),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        transactions = CounterMetricFamily(
            f"{PREFIX}_transactions",
            "Exactly-once: partition transactions by outcome (fenced: another worker owns the partition)",
            labels=["outcome"],
        )
        for outcome, count in stats.transactions.items():
            transactions.add_metric([outcome], count)
        yield transactions
        for kind, help_text in _ERRORS.items():
            yield CounterMetricFamily(f"{PREFIX}_{kind}_errors", help_text, value=stats.errors[kind])
        settings_info = GaugeMetricFamily(
            f"{PREFIX}_settings_info",
            "1, labelled with the digest of the settings decisions depend on: one value across a group",
            labels=["decisions_fingerprint"],
        )
        settings_info.add_metric([self._fingerprint], 1.0)
        yield settings_info
        for name, help_text, gauge in (
            ("restore_seconds", "Duration of the last state restore", stats.last_restore_seconds),
            ("sites_restored", "Sites loaded by the last state restore", stats.sites_restored),
            ("sites", "Sites held in memory", worker.processor.site_count),
            ("assigned_partitions", "Partitions of the prices topic assigned", len(assignment.partitions)),
            ("ready", "1 when state is restored for every assigned partition and consuming", worker.ready),
            (
                "batch_in_flight_seconds",
                "How long the batch in hand has been since it was fetched (0 between batches): a worker "
                "whose sends hang shows here first",
                0.0 if stats.batch_started_at is None else time.monotonic() - stats.batch_started_at,
            ),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=float(gauge))

    def _sites(self) -> Iterator[Metric]:
        soc = GaugeMetricFamily(f"{PREFIX}_state_of_charge_mwh", "Energy stored per site", labels=["site_id"])
        percent = GaugeMetricFamily(
            f"{PREFIX}_state_of_charge_percent", "State of charge per site", labels=["site_id"]
        )
        last_tick = GaugeMetricFamily(
            f"{PREFIX}_last_tick_timestamp_seconds",
            "Time of the last applied tick per site",
            labels=["site_id"],
        )
        for site_id, state in sorted(self._worker.processor.sites().items()):
            battery = state.battery
            capacity = self._directory.setup(site_id).config.capacity_mwh
            soc.add_metric([site_id], battery.state_of_charge_mwh)
            percent.add_metric([site_id], 100.0 * battery.state_of_charge_mwh / capacity)
            if battery.last_tick_at is not None:
                last_tick.add_metric([site_id], battery.last_tick_at.timestamp())
        yield soc
        yield percent
        yield last_tick
        yield from self._emissions()
        if self._activity is None:
            return
        power = GaugeMetricFamily(
            f"{PREFIX}_power_mw",
            "Power of the last action per site: + charging (from the grid), - discharging (to the site)",
            labels=["site_id"],
        )
        held = self._worker.processor.sites()
        for site_id, last in sorted(self._activity.last.items()):
            if site_id in held:
                power.add_metric([site_id], last.power_mw)
        yield power

    def _emissions(self) -> Iterator[Metric]:
        """Per site, the running totals the state holds (so a restarted worker carries them on).

        Bought, avoided and the whole site's grid import (``site``) only grow: counters. Net (bought −
        avoided) can fall and be negative, which a counter may not: a gauge of its own,
        ``battery_worker_emissions_net_kg``.
        """
        totals = CounterMetricFamily(
            f"{PREFIX}_emissions_kg",
            "kgCO2eq per site over the steps with an intensity: bought (charging), avoided (delivered) "
            "and site (the whole site's grid import)",
            labels=["site_id", "kind"],
        )
        net = GaugeMetricFamily(
            f"{PREFIX}_emissions_net_kg",
            "kgCO2eq per site, bought - avoided: the battery's effect (negative: lower emissions)",
            labels=["site_id"],
        )
        unknown = CounterMetricFamily(
            f"{PREFIX}_emissions_unknown_steps",
            "Applied ticks per site whose carbon intensity was unknown (left out of the totals)",
            labels=["site_id"],
        )
        coverage = GaugeMetricFamily(
            f"{PREFIX}_emissions_coverage_ratio",
            "Share of a site's counted steps with a known or carried carbon intensity",
            labels=["site_id"],
        )
        for site_id, state in sorted(self._worker.processor.sites().items()):
            counted = state.emissions
            totals.add_metric([site_id, "bought"], counted.bought_kg)
            totals.add_metric([site_id, "avoided"], counted.avoided_kg)
            totals.add_metric([site_id, "site"], counted.site_kg)
            net.add_metric([site_id], counted.net_kg)
            unknown.add_metric([site_id], counted.unknown_steps)
            coverage.add_metric([site_id], counted.coverage)
        yield totals
        yield net
        yield unknown
        yield coverage


def _histogram(name: str, help_text: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text)
    family.add_metric([], [(le, float(count)) for le, count in histogram.cumulative()], histogram.sum)
    return family


def build_registry(collector: WorkerCollector) -> CollectorRegistry:
    """A private registry (not the global one): the worker's metrics plus the process figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
