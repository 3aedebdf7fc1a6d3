"""Instructions per tick of ``tick_cost.py``'s data path, counted by valgrind: a figure the machine's load
does not move.

    .venv/bin/python bench/tick_instructions.py                        # threshold, 100 sites, 5,000 ticks
    .venv/bin/python bench/tick_instructions.py --part handle-no-status    # the status event left out
    .venv/bin/python bench/tick_instructions.py --policy mpc --warm 200 --ticks 300     # mpc: 3 ms a tick

On this shared 2-core machine ``tick_cost.py``'s best of 5 moves by 5-10 % from run to run (48-73 µs for the
same tree within an hour), so a change worth 2 % took six alternated runs to see, and often none. callgrind
counts the instructions executed instead: the same code and inputs give the same count to within 0.01 %
whatever else runs (430,736 and 430,772 for one tree, one hash seed). Instructions are not time (a cache
miss costs more than an add), but a change to the Python that runs per tick moves them as it moves the time.

The count is a difference: ``tick_cost.one_pass`` over ``--warm`` ticks, then over ``--warm`` + ``--ticks``
(each under ``valgrind --tool=callgrind``, 30-60 s), divided by ``--ticks``; so the interpreter's start,
the imports and the first batch (new sites) cancel, and what is left is a steady-state tick: validation,
decision, the three events, the state records and the record batches. It needs valgrind (``valgrind`` on
the PATH; Debian's package).

``--part`` counts a part instead, or the data path with a part left out, so that the difference is what
that part costs (the breakdown in docs/benchmarks.md): ``handle`` is ``TickProcessor.handle`` alone (no
state records, no record batches), the ``handle-no-*`` parts are it with the status event, the events'
encoding (``payloads.dumped``), their ids or all three events (and then the site plan) left out, and
``parse`` is the tick's validation alone. Leaving a part out patches the processor in the child process;
the outputs are then not the worker's, only the instructions are of interest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import POLICY
from tick_cost import new_processor, one_pass, policy_of, records

from battery_worker import dispatch as dispatching
from battery_worker.pipeline import processing
from battery_worker.pipeline.processing import InputRecord, TickProcessor

PARTS = (
    "all",
    "handle",
    "handle-no-status",
    "handle-no-encoding",
    "handle-no-ids",
    "handle-no-events",
    "handle-no-events-no-plan",
    "parse",
)

_COLLECTED = re.compile(r"Collected : (\d+)")


def counted(ticks: int, args: argparse.Namespace) -> int:
    """Instructions of this script's ``--child`` run over the first ``ticks`` ticks, as callgrind counts
    them. Both runs build all ``--warm`` + ``--ticks`` input records, so building them cancels too."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        str(ticks),
        "--sites",
        str(args.sites),
        "--policy",
        args.policy,
        "--warm",
        str(args.warm),
        "--ticks",
        str(args.ticks),
        "--part",
        args.part,
    ]
    # One hash seed for every run: str hashes, and with them dict and set probing, otherwise differ run to
    # run (0.4 % of the count here).
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def run_part(part: str, inputs: list[InputRecord], policy: dict[str, Any]) -> None:
    """The child's work: ``tick_cost.one_pass`` for ``all``, else the part (see the module's text)."""
    if part == "all":
        asyncio.run(one_pass(inputs, policy))
        return
    if part == "parse":
        for record in inputs:
            processing._tick_from_json(record.value or b"")  # what TickProcessor._parse calls
        return
    processor = new_processor(policy)
    _leave_out(part, processor)
    for record in inputs:
        processor.handle(record, 0)


def _replace(name: str, stand_in: Any) -> None:
    """``processing``'s ``name`` (a function it imported) replaced in this process."""
    setattr(processing, name, stand_in)


def _leave_out(part: str, processor: TickProcessor) -> None:
    if part == "handle-no-status":
        processor._emit_status = False
    elif part == "handle-no-encoding":
        _replace("dumped", lambda payload: b"")
    elif part == "handle-no-ids":
        _replace("named_event_id", lambda kind, name: "00000000-0000-5000-8000-000000000000")
    elif part.startswith("handle-no-events"):
        TickProcessor._events = lambda *arguments: ()  # type: ignore[method-assign]
        if part == "handle-no-events-no-plan":
            planned = dispatching.dispatch

            def unplanned(*arguments: Any, **options: Any) -> Any:
                return planned(*arguments, **{**options, "site_model": None})

            _replace("dispatch", unplanned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=5_000, help="ticks counted (after the warm ones)")
    parser.add_argument("--warm", type=int, default=2_000, help="ticks run before (one batch)")
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--policy", default=POLICY["name"], help="threshold (the benchmark's) or mpc, ...")
    parser.add_argument("--part", choices=PARTS, default="all", help="a part, or one left out (above)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        inputs = records(args.warm + args.ticks, args.sites)
        run_part(args.part, inputs[: args.child], policy_of(args.policy))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on the PATH (Debian: apt-get install valgrind)")
    warm = counted(args.warm, args)
    total = counted(args.warm + args.ticks, args)
    print(
        f"{args.policy}, {args.sites:,} sites, {args.part}: {(total - warm) / args.ticks:,.0f} instructions "
        "per tick "
        f"(ticks {args.warm:,}-{args.warm + args.ticks:,}; {warm:,} for the first {args.warm:,})"
    )


if __name__ == "__main__":
    main()
