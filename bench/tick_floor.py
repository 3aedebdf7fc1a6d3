"""The floor under the worker's CPU per tick: the least Python that writes this job's three events.

    .venv/bin/python bench/tick_floor.py                 # 30,000 ticks over 100 sites, best of 5 each
    .venv/bin/python bench/tick_floor.py --in-worker     # both in the worker's loop, embedded broker
    KAFKA_BOOTSTRAP_SERVERS=localhost:9092 .venv/bin/python bench/tick_floor.py --in-worker   # another broker

Issue 19 asks for 35 µs of CPU per tick in the worker's process, and ``tick_cost.py`` measures the data path
alone (no broker) at 43-50 µs. How far can Python go on this job at all? This script runs the same ticks
through a stripped job that keeps only what the output needs and drops everything else the worker does:

- the tick read with ``orjson.loads`` and ``datetime.fromisoformat`` (no pydantic: no type, range or
  finiteness checks, no field errors for the dead-letter topic);
- a threshold rule and the battery's arithmetic inline (no rate, window or cycle limits named, no stale or
  out-of-order tick, no home-partition or clock checks, no site plan computed, no emissions counted);
- the action, status and history events as dict literals with the worker's fields, the same number of
  floats and about the same bytes, their ids by the worker's own ``events.named_event_id``, encoded by
  ``orjson.dumps`` (no trimming copy);
- the records appended to real ``BatchBuilder``s by the worker's own ``batching.send_batched``, as
  ``tick_cost.py`` does, and no state records.

Its events are not the worker's (the numbers are made up), only their shape and size (within 5 % of the
worker's bytes); what it measures is what the three events and the record batches cost in Python before any
rule of the domain runs. Both paths run alternately on the same records in one process, best of
``--repeat`` each, so the machine's drift shows in both.

What the broker costs on top (fetch decoding, the requests, the event loop) is measured with the job in the
worker's own loop: ``child.py worker ... --stripped`` runs the worker with this job in place of
``TickProcessor.handle``, and ``--in-worker`` runs that and the worker alternately on one ``prices`` (the
embedded broker, or ``KAFKA_BOOTSTRAP_SERVERS``), each a process of its own, and prints their process CPU
per tick as ``run.py`` measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from common import POLICY, create_topics, on_broker, produce, tick_messages
from tick_cost import BATCH, BuildingProducer, new_processor, one_pass, records

from battery_worker.events import event_name, named_event_id
from battery_worker.kafka.batching import send_batched
from battery_worker.pipeline.processing import InputRecord, OutputRecord

CAPACITY_MWH, RATE_MW, EFFICIENCY = 100.0, 20.0, 0.9
MACHINES = [
    {"name": name, "running": running, "mw": mw}
    for name, running, mw in (
        ("air_miners", 1000, 3.5),
        ("hydro_miners", 1000, 5.0),
        ("immersion_miners", 650, 6.5),
        ("asic_inference", 400, 6.0),
        ("gpu_inference", 800, 4.0),
    )
]
"""The default site's machines, as the worker's site plan lists them."""


class _Battery:
    __slots__ = ("avoided", "bought", "cost", "delivered", "drawn", "soc", "stored", "ticks")

    def __init__(self) -> None:
        self.soc, self.bought, self.stored, self.drawn = CAPACITY_MWH / 2, 0.0, 0.0, 0.0
        self.delivered, self.cost, self.avoided, self.ticks = 0.0, 0.0, 0.0, 0


class StrippedJob:
    """One tick in, its three events out, with nothing checked and nothing the output does not need."""

    def __init__(self, actions: str = "actions", status: str = "status", history: str = "history") -> None:
        self._topics = actions, status, history
        self._sites: dict[str, _Battery] = {}
        params: dict[str, float] = POLICY["params"]  # type: ignore[assignment]
        self._below, self._above = float(params["charge_below"]), float(params["discharge_above"])

    def handle(self, record: InputRecord) -> tuple[OutputRecord, ...]:
        assert record.key is not None
        assert record.value is not None
        tick = orjson.loads(record.value)
        price, hash_price, token_price = tick["energy_price"], tick["hash_price"], tick["token_price"]
        tick_at: str = tick["timestamp"]
        at = datetime.fromisoformat(tick_at)
        site_id = record.key.decode()
        battery = self._sites.get(site_id)
        if battery is None:
            battery = self._sites[site_id] = _Battery()
        before = battery.soc
        if price < self._below and before < CAPACITY_MWH:
            action, power = "charge", min(RATE_MW, (CAPACITY_MWH - before) / EFFICIENCY)
            battery.soc += power * EFFICIENCY
            battery.bought += power
            battery.stored += power * EFFICIENCY
            battery.cost += power * price
        elif price > self._above and before > 0.0:
            action, power = "discharge", min(RATE_MW, before)
            battery.soc -= power
            battery.drawn += power
            battery.delivered += power
            battery.avoided += power * price
        else:
            action, power = "hold", 0.0
        battery.ticks += 1
        signed = power if action == "charge" else -power
        name = event_name(record.topic, record.partition, record.offset, site_id, tick_at)
        source = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        emissions = {
            "carbon_intensity": None, "intensity_carried": False, "bought_kg": None, "avoided_kg": None,
            "net_kg": None, "total_bought_kg": 0.0, "total_avoided_kg": 0.0, "total_net_kg": 0.0,
            "total_site_kg": 0.0, "steps": battery.ticks, "unknown_steps": battery.ticks, "coverage": 0.0,
        }  # fmt: skip
        if action == "charge":
            reason = f"Energy price ({price:.2f}) below charge threshold ({self._below:.2f})"
        else:
            reason = f"Energy price ({price:.2f}) above discharge threshold ({self._above:.2f})"
        action_event = {
            "schema_version": 3, "event_id": named_event_id("action", name), "site_id": site_id,
            "tick_timestamp": at, "action": action, "power_mw": power, "requested_power_mw": RATE_MW,
            "energy_mwh": power, "duration_hours": 1.0, "reason": reason, "energy_price": price,
            "hash_price": hash_price, "token_price": token_price, "state_of_charge_before_mwh": before,
            "state_of_charge_after_mwh": battery.soc, "limited_by": None, "gap_hours": None,
            "policy": "threshold", "source": source,
            "site_plan": {
                "hours": 1.0, "machines": MACHINES, "mining_mw": 15.0, "inference_mw": 10.0,
                "battery_mw": signed, "grid_import_mw": 25.0 + signed, "grid_export_mw": 0.0,
                "spilled_mw": 0.0,
                "energy_cost": 25.0 * price, "mining_revenue": 15.0 * hash_price,
                "inference_revenue": 10.0 * token_price, "battery_value": -signed * price,
                "net": 15.0 * hash_price + 10.0 * token_price - (25.0 + signed) * price,
                "grid_import_kg": None,
            },
            "emissions": emissions,
        }  # fmt: skip
        net_value = battery.avoided - battery.cost
        status_event = {
            "schema_version": 3, "event_id": named_event_id("status", name), "site_id": site_id,
            "last_tick_at": at, "charge_level_percent": 100.0 * battery.soc / CAPACITY_MWH,
            "available_energy_mwh": battery.soc, "capacity_mwh": CAPACITY_MWH, "max_charge_rate_mw": RATE_MW,
            "max_discharge_rate_mw": RATE_MW, "efficiency": EFFICIENCY, "last_updated": at,
            "total_energy_stored_mwh": battery.stored, "total_energy_used_mwh": battery.delivered,
            "total_energy_bought_mwh": battery.bought,
            "total_energy_lost_mwh": battery.bought - battery.stored + battery.drawn - battery.delivered,
            "full_equivalent_cycles": battery.drawn / CAPACITY_MWH, "charging_cost": battery.cost,
            "avoided_cost": battery.avoided, "net_value": net_value, "wear_cost": 0.0,
            "net_value_after_wear": net_value, "can_charge": battery.soc < CAPACITY_MWH,
            "can_discharge": battery.soc > 0.0, "ticks_applied": battery.ticks, "ticks_stale": 0,
            "policy": "threshold", "emissions": emissions,
        }  # fmt: skip
        history_event = {
            "schema_version": 2, "event_id": named_event_id("history", name), "site_id": site_id,
            "timestamp": at, "action": action, "reason": reason, "requested_power_mw": RATE_MW,
            "power_mw": power, "duration_hours": 1.0, "energy_mwh": power, "charge_before_mwh": before,
            "charge_after_mwh": battery.soc, "energy_price": price, "hash_price": hash_price,
            "token_price": token_price, "source": source, "emissions": emissions,
        }  # fmt: skip
        key, (actions, status, history) = record.key, self._topics
        return (
            OutputRecord(actions, key, orjson.dumps(action_event)),
            OutputRecord(status, key, orjson.dumps(status_event)),
            OutputRecord(
                history, f"{site_id}|{tick_at}".encode(), orjson.dumps(history_event), partition_key=key
            ),
        )


async def _stripped_pass(inputs: list[InputRecord]) -> float:
    """``tick_cost.one_pass`` with the stripped job in the processor's place (it has no state records)."""
    job = StrippedJob()
    producer: Any = BuildingProducer()
    started = time.process_time()
    for start in range(0, len(inputs), BATCH):
        outputs: list[OutputRecord] = []
        for record in inputs[start : start + BATCH]:
            outputs.extend(job.handle(record))
        await send_batched(producer, outputs)
    return (time.process_time() - started) / len(inputs) * 1e6


def _bytes_a_tick(
    handle: Callable[[InputRecord], Sequence[OutputRecord]], inputs: list[InputRecord]
) -> float:
    """The events' bytes a tick, counted in a pass of their own (outside any clock)."""
    return sum(len(output.value or b"") for record in inputs for output in handle(record)) / len(inputs)


def _child(*args: str) -> dict[str, Any]:
    here = Path(__file__).resolve().parent
    command = [sys.executable, str(here / "child.py"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child.py {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def in_worker(args: argparse.Namespace) -> None:
    """The worker and the stripped job in the worker's loop, alternately, on one ``prices``."""

    async def measure(bootstrap: str) -> None:
        token = f"floor-{time.time_ns()}"
        prices = f"{token}.prices"
        await create_topics(bootstrap, [prices])
        await produce(bootstrap, prices, tick_messages(args.ticks, args.sites))
        runs: dict[str, list[dict[str, Any]]] = {"worker": [], "stripped": []}
        for run in range(args.repeat):
            for name, extra in (("worker", []), ("stripped", ["--stripped"])):
                prefix = f"{token}.r{run}.{name}"
                got = await asyncio.to_thread(
                    _child, "worker", bootstrap, prices, prefix, f"{prefix}.g", str(args.ticks), *extra
                )
                runs[name].append(got)
                print(
                    f"  run {run + 1} {name}: {got['ticks_per_s']:,.0f} ticks/s, "
                    f"{got['cpu_us_per_tick']:.1f} µs CPU per tick, {got['cpu_share']:.2f} of a core",
                    flush=True,
                )
        for name, results in runs.items():
            cpu = sorted(result["cpu_us_per_tick"] for result in results)
            rate = sorted(result["ticks_per_s"] for result in results)
            print(
                f"{name}: process CPU per tick median {cpu[len(cpu) // 2]:.1f} µs "
                f"({cpu[0]:.1f}-{cpu[-1]:.1f}), ticks/s median {rate[len(rate) // 2]:,.0f}"
            )

    print(f"threshold, {args.sites:,} sites, {args.ticks:,} ticks, {args.repeat} runs each, alternated:")
    on_broker(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), measure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30_000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--in-worker", action="store_true", help="both in the worker's loop, on a broker")
    args = parser.parse_args()
    if args.in_worker:
        in_worker(args)
        return
    inputs = records(args.ticks, args.sites)
    stripped: list[float] = []
    worker: list[float] = []
    for _ in range(args.repeat):
        stripped.append(asyncio.run(_stripped_pass(inputs)))
        worker.append(asyncio.run(one_pass(inputs, POLICY)))
    processor = new_processor(POLICY)
    per_tick = {
        "stripped": _bytes_a_tick(StrippedJob().handle, inputs),
        "worker": _bytes_a_tick(lambda record: processor.handle(record, 0).outputs, inputs),
    }
    print(
        f"threshold, {args.sites:,} sites, {args.ticks:,} ticks, best of {args.repeat}, alternated:\n"
        f"  worker's data path (tick_cost.py): {min(worker):.1f} µs CPU per tick, "
        f"events {per_tick['worker']:,.0f} bytes a tick (all: {', '.join(f'{p:.1f}' for p in worker)})\n"
        f"  stripped job:                      {min(stripped):.1f} µs CPU per tick, "
        f"events {per_tick['stripped']:,.0f} bytes a tick (all: {', '.join(f'{p:.1f}' for p in stripped)})\n"
        f"  the worker's domain and checks: {min(worker) - min(stripped):.1f} µs a tick "
        f"({min(worker) / min(stripped):.2f}× the stripped job)"
    )


if __name__ == "__main__":
    main()
