"""Backtest: the worker's decisions, fair values, per-month figures, and the ``backtest`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from battery_worker.backtest.engine import (
    backtest,
    before_first,
    optimum_for,
    optimum_inputs,
    run_policy,
    terminal_price,
    warmed_site,
)
from battery_worker.backtest.optimum import terminal_value
from battery_worker.backtest.optimum_process import solve_in_child
from battery_worker.backtest.report import amount, month_table, monthly_capture, ratio_text
from battery_worker.battery_config import BatteryConfig
from battery_worker.cli.backtest import main, parse_params, warmup_ticks
from battery_worker.dispatch import dispatch, new_site_state
from battery_worker.emissions import EmissionsState
from battery_worker.errors import InvalidConfig
from battery_worker.policies import BATTERY_POLICIES, POLICIES, make_policy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick

DATA = Path(__file__).parent / "data"
CONFIG = BatteryConfig()
MARA_JSON = DATA / "mara_api_5min_2025-05-22_48h.json"


@pytest.fixture(scope="module")
def ercot_week() -> list[PriceTick]:
    return load_ticks(DATA / "ercot_2023-08-01_07.csv")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_backtest_makes_exactly_the_dispatch_decisions(name: str, ercot_week: list[PriceTick]) -> None:
    policy = make_policy(name)
    run = run_policy(ercot_week, CONFIG, policy)
    site = new_site_state(CONFIG, policy)
    decisions = []
    for tick in ercot_week:
        outcome = dispatch(tick, site, CONFIG, policy)
        decisions.append(outcome.decision)
        site = outcome.state
    assert list(run.decisions) == decisions
    assert run.final == site


@pytest.mark.parametrize("name", BATTERY_POLICIES)
def test_value_is_cash_plus_fairly_valued_end_and_never_beats_the_optimum(
    name: str, ercot_week: list[PriceTick]
) -> None:
    run, summary = backtest(ercot_week, CONFIG, make_policy(name))
    battery = run.final.battery
    assert summary.cash_value == pytest.approx(battery.net_value)
    delta = battery.state_of_charge_mwh - CONFIG.initial_energy_mwh
    price = terminal_price([t.energy_price for t in ercot_week])
    assert summary.terminal_value == pytest.approx(terminal_value(CONFIG, delta, price))
    assert summary.value == pytest.approx(summary.cash_value + summary.terminal_value)
    assert summary.capture_ratio == pytest.approx(summary.value / summary.optimum_value)
    assert summary.value <= summary.optimum_value * (1 + 1e-6)
    assert summary.cycles == pytest.approx(battery.full_equivalent_cycles(CONFIG))
    assert summary.energy_lost_mwh == pytest.approx(battery.energy_lost_mwh)


def test_month_figures_add_up() -> None:
    # The last 300 hours of the slice span late March and early April.
    ticks = load_ticks(DATA / "ercot_2023_first_2400h.csv")[-300:]
    _run, summary = backtest(ticks, CONFIG, make_policy("adaptive"))
    optimum = optimum_for(ticks, CONFIG)
    assert [m.month for m in summary.months] == ["2023-03", "2023-04"]
    assert sum(m.ticks for m in summary.months) == len(ticks)
    assert sum(m.value for m in summary.months) == pytest.approx(summary.cash_value)
    assert sum(m.optimum_value for m in summary.months) == pytest.approx(optimum.cash_value)
    assert sum(m.cycles for m in summary.months) == pytest.approx(summary.cycles)


def test_stale_ticks_are_skipped_like_the_worker(ercot_week: list[PriceTick]) -> None:
    ticks = [*ercot_week[:10], ercot_week[5], *ercot_week[10:20]]
    run, summary = backtest(ticks, CONFIG, make_policy("mpc"))
    assert summary.skipped_ticks == 1
    assert summary.ticks == 20
    assert run.prices.size == optimum_for(ticks, CONFIG).cash_flows.size


def test_a_tick_repeated_at_once_is_stale_like_the_worker(ercot_week: list[PriceTick]) -> None:
    """A producer's retry sends the last tick again, its time equal to the last applied one: the edge of
    "at or before", which the test-suite review moved to "before" with every test passing."""
    ticks = [*ercot_week[:10], ercot_week[9], *ercot_week[10:20]]
    _run, summary = backtest(ticks, CONFIG, make_policy("threshold"))
    assert summary.skipped_ticks == 1
    assert summary.ticks == 20
    state = new_site_state(CONFIG, make_policy("threshold"))
    assert not state.is_stale(ercot_week[9])
    applied = dispatch(ercot_week[9], state, CONFIG, make_policy("threshold")).state
    assert applied.is_stale(ercot_week[9])
    assert not applied.is_stale(ercot_week[10])


def test_policy_params_parse_as_json_values() -> None:
    assert parse_params(["horizon_hours=24", "mpc.level_decay=0.9", "adaptive.name=x"]) == {
        "": {"horizon_hours": 24},
        "mpc": {"level_decay": 0.9},
        "adaptive": {"name": "x"},
    }
    with pytest.raises(InvalidConfig):
        parse_params(["no-equals-sign"])


def test_cli_backtest_on_mara_json_writes_summary_and_png(tmp_path: Path) -> None:
    summary_path, png = tmp_path / "summary.json", tmp_path / "run.png"
    code = main(
        [
            str(MARA_JSON),
            "--policy",
            "adaptive",
            "--policy-param",
            "window_hours=24",
            "--summary",
            str(summary_path),
            "--png",
            str(png),
        ]
    )
    assert code == 0
    summary = orjson.loads(summary_path.read_bytes())
    assert {"policy", "value", "optimum_value", "capture_ratio"} <= set(summary)
    assert summary["policy"] == "adaptive"
    assert 0 < summary["capture_ratio"] <= 1
    assert summary["months"][0]["month"] == "2025-05"
    assert png.read_bytes().startswith(b"\x89PNG")


def test_cli_compare_lists_every_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary_path = tmp_path / "summary.json"
    code = main([str(MARA_JSON), "--compare", "threshold,mpc", "--no-png", "--summary", str(summary_path)])
    assert code == 0
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["policy"] == "threshold"
    assert [p["policy"] for p in summary["policies"]] == ["threshold", "mpc"]
    out = capsys.readouterr().out
    assert "| mpc |" in out
    assert "| threshold |" in out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MARA_JSON), "--policy", "nope", "--no-png"]) == 2
    assert main([str(tmp_path / "missing.csv"), "--no-png"]) == 2
    assert main([str(MARA_JSON), "--policy", "mpc", "--policy-param", "horizon_hours=0", "--no-png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert all(line.startswith("battery-worker backtest: error: ") for line in err)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--compare", ","], "--compare=','"),
        (["--compare", ""], "--compare=''"),
        (["--site", "--policy", "threshold"], "--policy='threshold'"),
        (["--site", "--compare", "mpc"], "--compare='mpc'"),
        (["--policy", "mpc", "--compare", "threshold"], "--policy='mpc'"),
        (["--summary", "{file}/summary.json"], "is a file, not a folder"),
    ],
)
def test_flags_that_cannot_be_honoured_are_refused_before_any_work(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``--compare ,`` solved the optimum and then crashed (IndexError), ``--site`` ran its own
    policies ignoring ``--policy`` or ``--compare``, and a summary under a file failed after the whole run."""
    a_file = tmp_path / "a.csv"
    a_file.write_text("x")
    argv = [str(MARA_JSON), "--no-png", *(flag.format(file=a_file) for flag in flags)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no optimum solved, no policy run
    assert named in captured.err
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--png", "chart.txt"], "name it .png"),  # matplotlib's ValueError after the run, 'a bug'
        (["--png", "x.png", "--no-png"], "given with --no-png"),  # the chart silently not drawn
        (["--site", "--png", "x.png"], "--site draws no chart"),
        (["--site", "--months", "--no-png"], "--site draws no chart"),
        (["--carbon-price", "100", "--no-png"], "needs --carbon FILE"),  # ignored: no carbon data
        (["--carbon-price", "-100", "--no-png"], "must be >= 0"),  # the optimum rewarded for emitting
        (["--compare", "mpc,mpc", "--no-png"], "names mpc twice"),
        (["--hash-price", "3", "--no-png"], "carries its own hash and token prices"),  # ignored
        (["--max-rate-mw", "-1", "--no-png"], "--max-rate-mw=-1.0: must be >= 0"),  # said max_charge_rate_mw
        # Accepted and without effect, as --carbon-price without --carbon was (a review run).
        (["--site", "--policy-param", "site.carbon_price=50"], "site.carbon_price=50': needs --carbon FILE"),
        (["--policy-param", "carbon_price=50", "--no-png"], "mpc.carbon_price=50': needs --carbon FILE"),
    ],
)
def test_flags_that_would_be_ignored_or_fail_late_are_refused_first(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(MARA_JSON), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert named in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_ticks_the_chart_cannot_draw_are_refused_before_the_run_unless_no_chart_is_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ticks of the year 1 ran the backtest, printed its tables, then ended in matplotlib's 'Date ordinal
    ... must be between year 0001 and 9999' as 'a bug' (a review of the last stop's diff)."""
    first = datetime(1, 1, 1, tzinfo=UTC)
    rows = [f"{(first + timedelta(hours=h)).isoformat()},{(h % 24) * 3.5 - 20}" for h in range(72)]
    early = tmp_path / "early.csv"
    early.write_text("\n".join(["timestamp,energy_price", *rows]) + "\n")
    argv = [str(early), "--policy", "threshold"]
    assert main([*argv, "--png", str(tmp_path / "c.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the chart draws the years 2 to 9998" in captured.err
    assert "from 0001-01-01T00:00:00+00:00 to 0001-01-03T23:00:00+00:00: give --no-png" in captured.err
    assert main([*argv, "--no-png"]) == 0
    assert "| threshold |" in capsys.readouterr().out


def test_the_chart_is_a_png_where_it_was_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder that did not exist failed after the whole run (the summary lost); a name without an ending
    was written as NAME.png and reported as NAME."""
    summary = tmp_path / "s.json"
    for chart in (tmp_path / "new" / "folder" / "chart.png", tmp_path / "chart"):
        argv = [str(DATA / "ercot_2023-08-01_07.csv"), "--policy", "threshold", "--png", str(chart)]
        assert main([*argv, "--summary", str(summary)]) == 0
        assert f"chart: {chart}" in capsys.readouterr().out
        assert chart.read_bytes().startswith(b"\x89PNG")
        assert summary.is_file()
    assert not (tmp_path / "chart.png").exists()


def test_the_output_says_how_many_ticks_were_left_out_and_names_a_missing_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a repeated hour was dropped with only the JSON's ``skipped_ticks`` telling, and
    ``--timestamp-column nope`` said it could not tell the columns, not that there is no ``nope``. A
    repeated hour at another price was taken at the price of the row first in the file: it is refused."""
    prices = tmp_path / "prices.csv"
    rows = [f"2023-08-01 {hour:02d}:00:00+00:00,{20 + hour}" for hour in range(6)]
    prices.write_text("\n".join(["time,price", *rows, "2023-08-01 03:00:00+00:00,23"]) + "\n")
    flags = ["--timestamp-column", "time", "--price-column", "price", "--policy", "threshold", "--no-png"]
    assert main([str(prices), *flags]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(
        "6 ticks, 2023-08-01T00:00:00+00:00 .. 2023-08-01T05:00:00+00:00 "
        "(1 more left out: not after an earlier tick's time)"
    ), first
    prices.write_text("\n".join(["time,price", *rows, "2023-08-01 03:00:00+00:00,9999"]) + "\n")
    assert main([str(prices), *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "battery-worker backtest: error: timestamp='2023-08-01T03:00:00+00:00': prices.csv line 8: a second "
        "price for 2023-08-01T03:00:00+00:00 (line 5 has 23, this one 9999)"
    ]
    assert main([str(prices), "--timestamp-column", "nope", "--no-png"]) == 2
    assert "--timestamp-column='nope': prices.csv has no such column (its columns: time, price)" in (
        capsys.readouterr().err
    )


def test_wear_is_reported_apart_and_capture_stays_against_what_no_policy_beats(
    ercot_week: list[PriceTick],
) -> None:
    worn = BatteryConfig(cycle_cost_per_mwh=20.0, max_cycles_per_day=1.0)
    run, summary = backtest(ercot_week, worn, make_policy("adaptive"))
    battery = run.final.battery
    assert summary.energy_delivered_mwh == pytest.approx(battery.energy_delivered_mwh)
    assert summary.wear_cost == pytest.approx(20.0 * battery.energy_delivered_mwh)
    assert summary.value == pytest.approx(summary.gross_value - summary.wear_cost)
    assert summary.gross_value == pytest.approx(summary.cash_value + summary.terminal_value)
    assert sum(m.wear_cost for m in summary.months) == pytest.approx(summary.wear_cost)
    assert summary.optimum_exact  # no negative prices in this week
    assert summary.value <= summary.optimum_value
    plain = backtest(ercot_week, CONFIG, make_policy("adaptive"))[1]
    assert summary.optimum_value < plain.optimum_value


def test_with_wear_a_months_capture_is_of_cash_less_wear_on_both_sides(ercot_week: list[PriceTick]) -> None:
    """A review run as the asset owner: under NMC the run said 80.0 % and its one month, of cash, 92.5 %,
    in a column named value, with no wear beside it."""
    worn = BatteryConfig(cycle_cost_per_mwh=40.0)
    _run, summary = backtest(ercot_week, worn, make_policy("mpc"))
    optimum = optimum_for(ercot_week, worn)
    (month,) = summary.months
    assert month.optimum_wear_cost == pytest.approx(40.0 * float(optimum.delivered_mwh.sum()))
    assert month.optimum_wear_cost > 0
    expected = (month.value - month.wear_cost) / (month.optimum_value - month.optimum_wear_cost)
    ((name, ratio),) = monthly_capture(summary)
    assert name == month.month
    assert ratio == pytest.approx(expected)
    assert expected < month.value / month.optimum_value  # what the month said before
    table = month_table(summary)
    assert "| wear | optimum cash | optimum wear | captured (net of wear) |" in table
    assert ratio_text(expected) in table.splitlines()[-1]
    assert "wear" not in month_table(backtest(ercot_week, CONFIG, make_policy("mpc"))[1])


def test_with_negative_prices_capture_is_against_the_bound(ercot_week: list[PriceTick]) -> None:
    # The same week shifted down so that a third of the hours are negative.
    shift = sorted(t.energy_price for t in ercot_week)[len(ercot_week) // 3]
    ticks = [t.model_copy(update={"energy_price": t.energy_price - shift}) for t in ercot_week]
    optimum = optimum_for(ticks, CONFIG)
    for name in BATTERY_POLICIES:
        _run, summary = backtest(ticks, CONFIG, make_policy(name), optimum=optimum)
        assert summary.optimum_value == optimum.bound
        assert summary.optimum_schedule_value == optimum.value <= optimum.bound
        assert summary.optimum_exact == optimum.exact
        assert summary.value <= summary.optimum_value * (1 + 1e-9)


LFP_WORN = BatteryConfig(
    efficiency=0.85,
    min_charge_percent=5.0,
    max_charge_percent=95.0,
    max_cycles_per_day=2.0,
    cycle_cost_per_mwh=0.01,
)
"""The LFP preset with a wear cost of 0.01 written out: the battery of ``--battery-type lfp`` and the
``--cycle-cost-per-mwh 0.01`` flag, or of the same in the worker's variables."""


def test_the_backtest_reads_the_workers_variables_without_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review run as the asset owner: ``BATTERY_WORKER_BATTERY_TYPE=lfp``, set for the worker, was left
    out of the backtest unless ``--config`` was given, so it backtested another battery without a word."""
    summary_path = tmp_path / "summary.json"
    args = [str(MARA_JSON), "--policy", "adaptive", "--no-png", "--summary", str(summary_path)]
    monkeypatch.setenv("BATTERY_WORKER_BATTERY_TYPE", "lfp")
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__CYCLE_COST_PER_MWH", "0.01")
    monkeypatch.setenv("BATTERY_WORKER_POLICY__NAME", "nosuch")  # the worker's: the backtest runs --policy
    assert main(args) == 0
    summary = orjson.loads(summary_path.read_bytes())
    _, expected = backtest(load_ticks(MARA_JSON), LFP_WORN, make_policy("adaptive"))
    assert summary["value"] == expected.value
    assert summary["wear_cost"] == pytest.approx(0.01 * summary["energy_delivered_mwh"])
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__CYCLE_COST_PER_MWH", "-1")
    assert main(args) == 2  # refused as the worker refuses it


def test_the_backtest_runs_the_policy_its_settings_file_gives_the_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fleet operator's review: a site run live under threshold 25 / 40 (``[policy]``) was backtested with
    ``--config --site-id`` under mpc, and under the seed's 1.7 / 2.0 with ``--policy threshold``."""
    config = tmp_path / "worker.toml"
    config.write_text(
        '[policy]\nname = "threshold"\nparams = { charge_below = 25, discharge_above = 40 }\n'
        '[sites.nmc-1]\nbattery_type = "nmc"\n[sites.tz-1]\npolicy = { name = "adaptive" }\n'
    )
    summary_path = tmp_path / "summary.json"
    base = [str(DATA / "ercot_2023-08-01_07.csv"), "--no-png", "--summary", str(summary_path)]

    def run(*flags: str) -> tuple[dict[str, object], str, str]:
        assert main([*base, "--config", str(config), *flags]) == 0
        out, err = capsys.readouterr()
        return orjson.loads(summary_path.read_bytes()), out, err

    configured, out, _ = run("--site-id", "nmc-1")
    assert configured["policy"] == "threshold"
    assert (
        out.splitlines()[0] == f"policy threshold (charge_below=25, discharge_above=40): [policy] of {config}"
    )
    named, _, _ = run("--site-id", "nmc-1", "--policy", "threshold")
    assert named["value"] == configured["value"], "the configured parameters, not 1.7 / 2.0"
    seed, _, _ = run(
        "--site-id", "nmc-1", "--policy-param", "charge_below=1.7", "--policy-param", "discharge_above=2"
    )
    assert seed["value"] != configured["value"]
    own, out, _ = run("--site-id", "tz-1")
    assert own["policy"] == "adaptive"
    assert out.splitlines()[0] == f"policy adaptive: sites.tz-1.policy of {config}"
    other, _, err = run("--site-id", "nmc-1", "--policy", "mpc")
    assert other["policy"] == "mpc"
    assert "threshold (charge_below=25, discharge_above=40); not run, the flags name mpc" in err
    unnamed = tmp_path / "battery.toml"
    unnamed.write_text("[battery]\ncapacity_mwh = 40.0\n")
    assert main([*base, "--config", str(unnamed)]) == 0
    assert orjson.loads(summary_path.read_bytes())["policy"] == "mpc", "a file naming no policy: the default"
    capsys.readouterr()
    priced = tmp_path / "priced.toml"  # the settings' carbon price, refused by their name, not a flag's
    priced.write_text('[policy]\nname = "mpc"\nparams = { carbon_price = 50 }\n')
    assert main([*base, "--config", str(priced)]) == 2
    assert f"[policy] of {priced}='mpc.carbon_price=50': needs --carbon FILE" in capsys.readouterr().err
    assert main([*base, "--config", str(priced), "--policy-param", "carbon_price=0"]) == 0


def test_the_backtest_runs_the_policy_the_variables_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of the diff: the battery was read from the BATTERY_WORKER_* variables, the policy not."""
    summary_path = tmp_path / "summary.json"
    monkeypatch.setenv("BATTERY_WORKER_POLICY__NAME", "adaptive")
    args = [str(DATA / "ercot_2023-08-01_07.csv"), "--no-png", "--summary", str(summary_path)]
    assert main(args) == 0
    assert orjson.loads(summary_path.read_bytes())["policy"] == "adaptive"
    assert capsys.readouterr().out.splitlines()[0] == "policy adaptive: BATTERY_WORKER_POLICY__NAME"


def test_cli_battery_type_and_wear_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary_path = tmp_path / "summary.json"
    flags = [
        "--battery-type",
        "lfp",
        "--cycle-cost-per-mwh",
        "0.01",
        "--no-png",
        "--summary",
        str(summary_path),
    ]
    assert main([str(MARA_JSON), "--policy", "adaptive", *flags]) == 0
    summary = orjson.loads(summary_path.read_bytes())
    # The preset's window, efficiency and cycle cap, the flag's wear cost over the preset's: the same run
    # as a battery built with those numbers written out.
    _, expected = backtest(load_ticks(MARA_JSON), LFP_WORN, make_policy("adaptive"))
    assert (summary["value"], summary["final_charge_percent"]) == (
        expected.value,
        expected.final_charge_percent,
    )
    assert summary["wear_cost"] == pytest.approx(0.01 * summary["energy_delivered_mwh"])
    assert summary["value"] == pytest.approx(summary["gross_value"] - summary["wear_cost"])
    assert summary["optimum_exact"] is True
    assert summary["optimum_gap"] == 0.0
    out = capsys.readouterr().out
    assert "optimum: " in out
    assert "exact" in out
    assert "adaptive: gross " in out


def test_the_optimum_solved_in_a_child_process_is_the_same(ercot_week: list[PriceTick]) -> None:
    inputs = optimum_inputs(ercot_week, CONFIG)
    waits: list[float] = []
    child = solve_in_child(CONFIG, inputs, on_wait=waits.append)
    here = inputs.solve(CONFIG)
    assert (child.value, child.bound, child.exact) == (here.value, here.bound, here.exact)
    assert list(child.cash_flows) == list(here.cash_flows)
    assert waits == sorted(waits)


def test_progress_without_a_terminal_is_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MARA_JSON), "--policy", "adaptive", "--no-png", "--progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "optimum: solving 576 steps (0 at negative prices)"
    assert err[1].startswith("optimum: ")
    assert ", exact (" in err[1]
    assert err[-1].startswith("adaptive: 100% (576/576 ticks, ")


def test_a_warmed_site_has_learned_the_history_and_nothing_else(ercot_week: list[PriceTick]) -> None:
    history = load_ticks(DATA / "ercot_2023_first_2400h.csv")[-200:]
    policy = make_policy("mpc")
    site = warmed_site(history, CONFIG, policy)
    assert site.battery == new_site_state(CONFIG, policy).battery
    assert site.emissions == EmissionsState()
    assert site.policy_memory == run_policy(history, CONFIG, policy).final.policy_memory
    week = ercot_week[:12]
    warm, warm_summary = backtest(week, CONFIG, policy, warmup=history)
    cold, cold_summary = backtest(week, CONFIG, policy)
    assert cold.decisions[0].reason.startswith("warming up")
    assert warm.decisions[0].reason.startswith("mpc plan")
    assert warm.decisions == run_policy(week, CONFIG, policy, site=site).decisions
    assert warm_summary.optimum_value == cold_summary.optimum_value
    assert warm_summary.ticks == cold_summary.ticks == len(week)


def test_warmup_ticks_at_or_after_the_first_tick_are_not_the_past(ercot_week: list[PriceTick]) -> None:
    assert before_first(ercot_week, ercot_week[3:]) == ercot_week[:3]
    assert before_first(ercot_week, []) == []


def test_cli_warmup_says_what_it_learned_from(capsys: pytest.CaptureFixture[str]) -> None:
    week, early = DATA / "ercot_2023-08-01_07.csv", DATA / "ercot_2023_first_2400h.csv"
    assert main([str(week), "--warmup", str(early), "--policy", "adaptive", "--no-png"]) == 0
    assert "warm-up: 2,400 ticks of ercot_2023_first_2400h.csv" in capsys.readouterr().out
    assert main([str(early), "--warmup", str(week), "--no-png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("battery-worker backtest: error: --warmup")
    assert "holds no price tick before 2023-01-01" in err


def test_cli_cycle_day_timezone_moves_the_days_the_cap_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Capped at a cycle a day, ERCOT's UTC day turns at 19:00 in Texas (CDT), inside the evening peak."""
    week = str(DATA / "ercot_2023-08-01_07.csv")
    optimum_lines = []
    for zone in ("UTC", "America/Chicago"):
        flags = [
            "--policy",
            "threshold",
            "--max-cycles-per-day",
            "1",
            "--cycle-day-timezone",
            zone,
            "--no-png",
        ]
        assert main([week, *flags]) == 0
        optimum_lines.append(
            next(line for line in capsys.readouterr().out.splitlines() if "optimum: " in line)
        )
    # 318,418 and 325,226 here: the zone reaches the optimum (and the battery, which replays it exactly).
    utc, chicago = optimum_lines
    assert utc != chicago
    assert utc.endswith(", exact")
    assert chicago.endswith(", exact")
    assert main([week, "--cycle-day-timezone", "Mars/Base", "--no-png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("battery-worker backtest: error: --cycle-day-timezone='Mars/Base': not a time zone")


def test_the_warm_up_is_read_with_the_carbon_file_as_the_run_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--warmup ignored --carbon: a carbon-aware mpc learnt from ticks without intensities (69.7 % against
    85.6 % of the optimum on the review's ERCOT slice)."""
    week = (DATA / "ercot_2023-08-01_07.csv").read_text().splitlines()
    run_file = tmp_path / "last_day.csv"
    run_file.write_text("\n".join([week[0], *week[-24:]]) + "\n")
    args = argparse.Namespace(
        warmup=DATA / "ercot_2023-08-01_07.csv",
        carbon=DATA / "ercot_carbon_2023-08-01_07.csv",
        timestamp_column=None,
        price_column=None,
        hash_price=None,
        token_price=None,
    )
    warm = warmup_ticks(args, load_ticks(run_file))
    assert len(warm) == 168 - 24
    assert all(tick.carbon_intensity is not None for tick in warm)
    span = "2023-08-01T00:00:00+00:00 .. 2023-08-06T23:00:00+00:00"  # as the run's first line writes times
    assert f"warm-up: 144 ticks of ercot_2023-08-01_07.csv, {span}" in capsys.readouterr().out


def test_a_share_near_zero_keeps_two_digits() -> None:
    """threshold on ERCOT 2023 made -1.39 k of 5.07 M: the chart's legend said '-0.0% of the optimum'."""
    shares = [-1_390 / 5_068_030, 0.0, 0.967, 1.0, None]
    assert [ratio_text(share) for share in shares] == ["-0.027%", "0.0%", "96.7%", "100.0%", "n/a"]


def test_figures_in_small_units_keep_their_digits(capsys: pytest.CaptureFixture[str]) -> None:
    """On a MARA file (prices about 1) the optimum printed '124' and a policy '-0': whole units only."""
    assert [amount(v, 124.31) for v in (124.31, -0.04, 5.0)] == ["124.3", "0.0", "5.0"]
    assert [amount(v, 63.19) for v in (63.19, 0.4)] == ["63.19", "0.40"]
    assert amount(5_068_030.2, 5_068_030.2) == "5,068,030"
    assert main([str(MARA_JSON), "--policy", "threshold", "--no-png"]) == 0
    out = capsys.readouterr().out
    _, run = backtest(load_ticks(MARA_JSON), BatteryConfig(), make_policy("threshold"))
    optimum = f"{run.optimum_value:.2f}"  # two decimals at this scale (tens), where '64' was printed
    assert f"optimum: {optimum}, exact" in out
    assert f"| threshold | {run.value:.2f} | {optimum} | {ratio_text(run.capture_ratio)} |" in out


def test_a_price_file_may_be_a_pipe(tmp_path: Path) -> None:
    """'backtest /dev/stdin' said 'no such file' (a pipe is no regular file), and a file read twice (its
    start for JSON, then whole) would have lost the pipe's first bytes."""
    fifo = tmp_path / "prices.csv"
    os.mkfifo(fifo)
    text = (DATA / "ercot_2023-08-01_07.csv").read_bytes()
    writer = threading.Thread(target=fifo.write_bytes, args=(text,))
    writer.start()
    try:
        ticks = load_ticks(fifo)
    finally:
        writer.join(timeout=10)
    assert ticks == load_ticks(DATA / "ercot_2023-08-01_07.csv")


def test_a_price_file_after_a_bare_compare_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """'backtest --compare FILE' said 'the following arguments are required: file': --compare took it."""
    assert main(["--compare", str(MARA_JSON), "--no-png"]) == 2
    assert "is the price file: give it before --compare" in capsys.readouterr().err
    assert main(["--no-png"]) == 2
    assert "give the price file" in capsys.readouterr().err


def test_a_site_backtest_says_its_carbon_price_and_its_emissions_coverage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--carbon-price changed the site runs (91.9 % to 82.4 %) with nothing said, and the site's tonnes
    had no coverage beside them, so a partial total read as a whole one (a review run)."""
    carbon = tmp_path / "carbon.csv"
    rows = (DATA / "ercot_carbon_2023-08-01_07.csv").read_text(encoding="utf-8").splitlines()
    carbon.write_text("\n".join(rows[: 1 + 84]) + "\n", encoding="utf-8")  # the first half of the week
    argv = [str(DATA / "ercot_2023-08-01_07.csv"), "--site", "--hash-price", "60", "--token-price", "25"]
    summary = tmp_path / "s.json"
    assert main([*argv, "--carbon", str(carbon), "--carbon-price", "200", "--summary", str(summary)]) == 0
    out = capsys.readouterr().out
    assert "carbon price 200 per t CO2eq: given to mpc and the site policy" in out
    covered = (84 + 3) / 168  # and carried 3 hours past the file's end
    assert f"{100 * covered:.1f} % of ticks with an intensity" in out
    assert json.loads(summary.read_text())["emissions_coverage"] == pytest.approx(covered)


def test_gaps_in_the_prices_are_said_and_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's review: a file with a 7-month hole ran without a word, each gap booked as one default
    step and drawn across by the chart."""
    rows = (DATA / "ercot_2023-08-01_07.csv").read_text().splitlines()
    prices = tmp_path / "holes.csv"
    prices.write_text("\n".join([rows[0], *rows[1:30], *rows[40:60], *rows[66:80]]) + "\n")
    summary = tmp_path / "s.json"
    assert main([str(prices), "--policy", "threshold", "--no-png", "--summary", str(summary)]) == 0
    said = capsys.readouterr().out.splitlines()[1]
    assert said == (
        "gaps: 2 gaps longer than max_step_hours (2 h), the longest 11.0 h after 2023-08-02T04:00:00+00:00: "
        "the step after each is booked as default_step_hours (1 h), and the chart draws a line across it"
    )
    assert json.loads(summary.read_text())["gaps"] == [
        {"after": "2023-08-02T04:00:00+00:00", "hours": 11.0},
        {"after": "2023-08-03T10:00:00+00:00", "hours": 7.0},
    ]
    assert main([str(DATA / "ercot_2023-08-01_07.csv"), "--policy", "threshold", "--no-png"]) == 0
    assert "gaps:" not in capsys.readouterr().out


def test_energy_moved_without_a_known_intensity_is_said_beside_the_emissions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's review: 10 hours cut from the carbon file, all of them charging, made adaptive's net
    benefit 2.5 times the whole file's, with a coverage of 96.8 % and nothing else said."""
    rows = (DATA / "ercot_carbon_2023-08-01_07.csv").read_text().splitlines()
    holes = tmp_path / "carbon.csv"
    holes.write_text("\n".join([rows[0], *rows[1:30], *rows[40:]]) + "\n")
    summary = tmp_path / "s.json"
    prices = str(DATA / "ercot_2023-08-01_07.csv")
    flags = ["--compare", "--no-png", "--summary", str(summary)]
    assert main([prices, "--carbon", str(holes), *flags]) == 0
    out = capsys.readouterr().out
    assert (
        "adaptive: 105 MWh bought and 0 MWh delivered in steps without a known intensity are in no total: "
        "its net leaves them out"
    ) in out
    carbon = {row["run"]: row for row in json.loads(summary.read_text())["carbon"]}
    assert carbon["adaptive"]["emissions_uncounted_bought_mwh"] == pytest.approx(105, abs=0.5)
    assert carbon["threshold"]["emissions_uncounted_bought_mwh"] == 0.0
    assert main([prices, "--carbon", str(DATA / "ercot_carbon_2023-08-01_07.csv"), *flags]) == 0
    assert "in no total" not in capsys.readouterr().out


def test_a_bound_far_above_the_best_schedule_also_gives_capture_against_the_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's review: on a fortnight of negative prices the bound lay 9.45 % above the best schedule,
    and the table's capture alone read up to 10 points low."""
    start = datetime(2023, 3, 1, tzinfo=UTC)
    prices = tmp_path / "negative.csv"
    price = [-50 + 30 * math.sin(h * 0.5) + 10 * math.sin(h * 1.7) for h in range(336)]
    rows = [f"{(start + timedelta(hours=h)).isoformat()},{p:.2f}" for h, p in enumerate(price)]
    prices.write_text("timestamp,energy_price\n" + "\n".join(rows) + "\n")
    assert main([str(prices), "--compare", "--no-png"]) == 0
    out = capsys.readouterr().out
    assert "(LP bound; capture is measured against it)" in out
    said = [line for line in out.splitlines() if line.startswith("against the best schedule found")]
    assert len(said) == 1
    assert said[0].endswith("(each policy's share of the true optimum lies between this and the table's)")
    assert ", adaptive " in said[0]
    assert ", mpc " in said[0]
    assert main([str(DATA / "ercot_2023-08-01_07.csv"), "--policy", "threshold", "--no-png"]) == 0
    assert "against the best schedule" not in capsys.readouterr().out, "an exact optimum needs no second"


def test_the_optimums_wear_and_cycles_are_printed_and_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's review: the wear table's optimum columns came only from bench/wear_table.py."""
    summary = tmp_path / "s.json"
    week = str(DATA / "ercot_2023-08-01_07.csv")
    flags = ["--policy", "mpc", "--cycle-cost-per-mwh", "20", "--no-png", "--summary", str(summary)]
    assert main([week, *flags]) == 0
    said = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("optimum (best schedule)")
    ]
    data = json.loads(summary.read_text())
    assert data["optimum_wear_cost"] > 0
    assert data["optimum_cycles"] > 1
    assert said == [
        f"optimum (best schedule): gross {data['optimum_schedule_value'] + data['optimum_wear_cost']:,.0f}, "
        f"wear {data['optimum_wear_cost']:,.0f}, net {data['optimum_schedule_value']:,.0f}, "
        f"{data['optimum_cycles']:,.1f} cycles"
    ]


def test_a_first_tick_booked_longer_than_the_files_ticks_is_said_and_small_figures_keep_their_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backtest review counted 15-minute prices 10, 10, 10, 10, 100, 100, 100, 100 with a 1 MWh, 1 MW
    battery by hand: 80.00. The run said 84.33 (its first tick booked as an hour, as a worker's first tick
    is), with no word of it; and its 0.105 MWh lost and 0.95 MWh delivered showed as 0 and 1."""
    start = datetime(2023, 8, 1, tzinfo=UTC)
    prices = tmp_path / "hand15.csv"
    rows = [f"{(start + timedelta(minutes=15 * n)).isoformat()},{10 if n < 4 else 100}" for n in range(8)]
    prices.write_text("\n".join(["timestamp,energy_price", *rows]) + "\n")
    flags = [str(prices), "--policy", "threshold", "--no-png", "--capacity-mwh", "1", "--max-rate-mw", "1"]
    flags += ["--initial-charge-percent", "0", "--policy-param", "charge_below=20"]
    flags += ["--policy-param", "discharge_above=50", "--cycle-cost-per-mwh", "20"]
    assert main(flags) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "first step: the first tick is booked as default_step_hours (1 h), as a worker books a site's first "
        "tick, where this file's ticks are 15 min apart (BATTERY_WORKER_BATTERY__DEFAULT_STEP_HOURS=0.25 "
        "books one interval)"
    )
    assert out[5] == "| threshold | 65.35 | 65.35 | 100.0% | 1.0 | 0.105 | 0% |"
    assert out[6] == "threshold: gross 84.33, wear 18.97 (0.949 MWh delivered), net 65.35"
    monkeypatch.setenv("BATTERY_WORKER_BATTERY__DEFAULT_STEP_HOURS", "0.25")
    assert main(flags[:-2]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("first step:") for line in out)
    assert out[1] == "optimum: 80.00, exact"
    assert main([str(DATA / "ercot_2023-08-01_07.csv"), "--policy", "threshold", "--no-png"]) == 0
    assert "first step:" not in capsys.readouterr().out


def test_an_empty_price_cell_of_a_mara_file_is_named_by_its_column_not_a_flag_never_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site manager's review: an empty hash cell was refused as ``--hash-price=''``, a flag not given."""
    mara = tmp_path / "mara.csv"
    mara.write_text("timestamp,energy_price,hash_price,token_price\n2025-06-21T10:00:00Z,1.0,,2.0\n")
    assert main([str(mara), "--no-png"]) == 2
    err = capsys.readouterr().err
    assert "hash_price='': mara.csv line 2" in err
    assert "--hash-price" not in err


def test_the_site_policy_over_a_file_without_hash_or_token_price_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review of the diff: the worker says it (a site the site policy plans given unpaid ticks), the
    backtest of the same said nothing, though ``--config`` may now choose that policy by itself."""
    day = tmp_path / "day.csv"
    day.write_text("".join((DATA / "ercot_2023-08-01_07.csv").read_text().splitlines(keepends=True)[:31]))
    hours = str(day)
    assert main([hours, "--policy", "site", "--no-png", "--policy-param", "horizon_hours=6"]) == 0
    assert "under the site policy no machine earns and every one is curtailed" in capsys.readouterr().err
    assert main([hours, "--policy", "site", "--no-png", "--hash-price", "60", "--token-price", "25"]) == 0
    assert "no machine earns" not in capsys.readouterr().err
