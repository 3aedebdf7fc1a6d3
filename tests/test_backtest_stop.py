"""``battery-worker backtest`` stops on SIGTERM or Ctrl-C, starting or solving: quickly, in one line.

A real command in a subprocess on a generated 5-minute file long enough for the optimum to take seconds.
Not a timing benchmark: "within a few seconds" only separates stopping from not stopping (before, HiGHS held
the process until it finished, minutes on such a file).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DAYS = 240
SOLVING = "optimum: solving"


@pytest.fixture(scope="module")
def five_minute_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noisy 5-minute prices in the MARA CSV format, a third of them negative."""
    rng = np.random.default_rng(16)
    n = DAYS * 288
    hour = (np.arange(n) % 288) / 12.0
    prices = 40 + 30 * np.cos(2 * np.pi * (hour - 19) / 24) + rng.normal(0, 30, n)
    prices -= np.quantile(prices, 1 / 3)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows = ["energy_price,hash_price,token_price,timestamp"]
    rows += [
        f"{price:.3f},1,1,{(t0 + timedelta(minutes=5 * i)).strftime('%Y-%m-%dT%H:%M:%S')}"
        for i, price in enumerate(prices)
    ]
    path = tmp_path_factory.mktemp("stop") / "prices_5min.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_during_the_optimum_ends_the_backtest_in_one_line(
    five_minute_file: Path, sig: signal.Signals, code: int
) -> None:
    command = [sys.executable, "-m", "battery_worker.cli", "backtest", str(five_minute_file)]
    process = subprocess.Popen(
        [*command, "--policy", "threshold", "--no-png", "--progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith(SOLVING), first
        time.sleep(0.5)  # into the solve
        sent = time.monotonic()
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, err
    # Nothing between the "solving" line and the stop: it stopped during the optimum, without a traceback.
    assert err.splitlines() == [f"battery-worker backtest: stopped by {sig.name}"], err
    assert out == ""
    assert took < 5.0


@pytest.fixture(scope="module")
def carbon_file(five_minute_file: Path) -> Path:
    """An hourly intensity over the same days, in the shared carbon files' columns."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows = ["Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct)"]
    rows += [
        f"{(t0 + timedelta(hours=h)).strftime('%Y-%m-%d %H:%M:%S')},{300 + 100 * (h % 7)}"
        for h in range(DAYS * 24)
    ]
    path = five_minute_file.parent / "carbon.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("flags", "solving"),
    [
        (["--site"], "site optimum: solving"),
        (
            ["--policy", "threshold", "--carbon", "{carbon}", "--carbon-price", "100"],
            "carbon-priced optimum: solving",
        ),
    ],
)
def test_the_site_and_carbon_optima_stop_at_once_too(
    five_minute_file: Path, carbon_file: Path, flags: list[str], solving: str
) -> None:
    """They were solved in the command's own process: HiGHS held a stop until it finished (2.6 s after the
    signal on 90 days), and --progress said nothing meanwhile."""
    argv = [str(five_minute_file), "--no-png", "--progress", *(f.format(carbon=carbon_file) for f in flags)]
    with subprocess.Popen(
        [sys.executable, "-m", "battery_worker.cli", "backtest", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stderr is not None
            seen: list[str] = []
            while not (line := process.stderr.readline()).startswith(solving):
                assert line, f"ended before {solving!r}: {seen}"
                seen.append(line)
            time.sleep(0.5)  # into the solve
            sent = time.monotonic()
            process.send_signal(signal.SIGINT)
            _out, err = process.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, err
    assert err.splitlines() == ["battery-worker backtest: stopped by SIGINT"], err
    assert took < 2.0


STOPPED_WHILE_STARTING = """
import importlib, os, signal, sys

cli = importlib.import_module("battery_worker.cli.main")  # the package's ``main`` is the function

build_parser = cli.build_parser


def stopped_while_building() -> object:
    os.kill(os.getpid(), signal.SIGTERM)  # delivered here: while the parser's imports would run
    return build_parser()


cli.build_parser = stopped_while_building
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (["backtest", "prices.csv"], 143, "battery-worker backtest: stopped by SIGTERM"),
        (["--log-level", "DEBUG", "replay"], 143, "battery-worker replay: stopped by SIGTERM"),
        (["run"], 0, None),
    ],
)
def test_a_stop_while_starting_is_no_result_for_a_backtest_or_replay_and_a_clean_stop_for_the_worker(
    argv: list[str], code: int, line: str | None
) -> None:
    """A backtest stopped in its first 0.3 s exited 0 with no output, which a script reads as done."""
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WHILE_STARTING, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines() == ([] if line is None else [line])
    assert done.stdout == ""


def test_the_command_is_found_past_every_global_option_that_takes_a_value() -> None:
    from battery_worker.cli.main import build_parser, command_of

    global_options = [
        action.option_strings[-1]
        for action in build_parser()._actions
        if action.option_strings and action.nargs != 0 and action.dest != "help"
    ]
    assert global_options  # --log-level, --log-format
    for option in global_options:
        assert command_of([option, "backtest", "replay", "x"]) == "replay"
    assert command_of(["--log-level=DEBUG", "backtest", "replay"]) == "backtest"
    assert command_of([]) is None
