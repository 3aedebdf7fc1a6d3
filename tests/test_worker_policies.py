"""The Kafka worker and the backtest decide alike, stateful policies included, across a restart.

Stateful policies keep their memory in the state record, so a worker restarted mid-stream decides exactly as
the uninterrupted backtest does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from battery_worker.backtest.engine import run_policy
from battery_worker.policies import make_policy
from tests.workerkit import ercot_week, feed, make_settings, read_published, run_with_a_restart, trace_of

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("policy", ["adaptive", "mpc"])
async def test_worker_with_a_restart_decides_like_the_backtest(
    policy: str, kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str]
) -> None:
    settings = make_settings(
        kafka_bootstrap,
        new_topic_name(),
        new_group_id(),
        partitions=1,
        policy={"name": policy, "params": {}},
        worker={"max_batch_records": 25},
    )
    ticks = ercot_week()
    await feed(settings, ticks, "plant")
    await run_with_a_restart(settings, ticks, half=len(ticks) // 2)

    backtest = run_policy(ticks, settings.battery, make_policy(policy))
    expected = [
        (stamp, decision.action.value)
        for stamp, decision in zip(backtest.timestamps, backtest.decisions, strict=True)
    ]
    published = await read_published(settings)
    worker_trace = trace_of(published.actions, "plant")
    assert [(row[0], row[1]) for row in worker_trace] == expected
    assert [row[3] for row in worker_trace] == list(backtest.state_of_charge_mwh)
    assert {a.policy for a in published.actions} == {policy}
    assert len({row[1] for row in worker_trace}) > 1, "the policy trades"
