"""How many records a batch may take (``kafka/batch_size.py``): pure, timed by the caller."""

from __future__ import annotations

from battery_worker.kafka.batch_size import FIRST_BATCH_RECORDS, BatchSize


def test_a_batch_takes_what_a_fifth_of_the_session_can_handle() -> None:
    size = BatchSize(session_timeout_s=10.0, heartbeat_interval_s=1.0, most=2000)
    assert size.limit() == FIRST_BATCH_RECORDS
    size.handled(10, 0.05)  # 5 ms a tick: 2 s of the 10 s session is 400 ticks
    assert [size.limit() for _ in range(6)] == [20, 40, 80, 160, 320, 400]
    cheap = BatchSize(session_timeout_s=10.0, heartbeat_interval_s=1.0, most=2000)
    cheap.handled(10, 0.0005)  # 50 µs a tick: the most, once grown to it
    assert [cheap.limit() for _ in range(9)][-1] == 2000


def test_heartbeats_far_apart_for_the_session_leave_less_to_a_batch() -> None:
    size = BatchSize(session_timeout_s=2.0, heartbeat_interval_s=1.0, most=2000)
    size.handled(10, 0.1)  # 10 ms a tick; half of the 1 s the heartbeat leaves: 50 ticks (a fifth: 40)
    assert max(size.limit() for _ in range(10)) == 40
    far = BatchSize(session_timeout_s=10.0, heartbeat_interval_s=9.0, most=2000)
    far.handled(10, 0.1)
    assert max(far.limit() for _ in range(10)) == 50


def test_cheap_records_between_dear_ticks_do_not_open_the_batch_to_the_most() -> None:
    """A review of the diff: stretches of re-read (already applied) records timed as cheap ticks sent the
    limit back to 2,000 at once, and 2,000 ticks at 5 ms hold the loop for the whole session."""
    size = BatchSize(session_timeout_s=10.0, heartbeat_interval_s=1.0, most=2000)
    size.handled(10, 0.05)
    for _ in range(5):
        size.handled(0, 0.001)  # a stretch that applied nothing says nothing of a tick's cost
    assert max(size.limit() for _ in range(10)) == 400
    size.handled(1, 0.00002)  # one cheap tick: the cost halves, and the limit at most doubles a batch
    assert size.limit() <= 800
