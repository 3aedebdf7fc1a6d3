"""The backtest chart: the week it zooms on, the monthly capture it draws, short runs, the PNG it writes."""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from battery_worker.backtest.chart import DPI, WIDTH_INCHES, draw_figure, figure_height_inches
from battery_worker.backtest.engine import BacktestRun, backtest, optimum_for, run_policy
from battery_worker.backtest.optimum import Optimum
from battery_worker.backtest.report import (
    cumulative_net_tonnes,
    money,
    monthly_capture,
    shows_emissions,
    write_png,
    zoom_window,
)
from battery_worker.battery_config import BatteryConfig
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks
from battery_worker.ticks import PriceTick, make_tick

DATA = Path(__file__).parent / "data"
CONFIG = BatteryConfig()
START = datetime(2024, 3, 3, 6, 0, tzinfo=UTC)  # not at midnight: the first candidate is the first tick


def series(days: float, step_minutes: int, price_at: object) -> list[PriceTick]:
    """Ticks every ``step_minutes`` for ``days`` from START, priced by ``price_at(hours since START)``."""
    count = int(days * 24 * 60 / step_minutes)
    ticks = []
    for i in range(count):
        hours = i * step_minutes / 60.0
        ticks.append(make_tick(price_at(hours), 1.0, 1.0, START + timedelta(hours=hours)))  # type: ignore[operator]
    return ticks


def calm_with_one_wild_week(hours: float) -> float:
    """A small daily swing, and a large one on days 17 to 23 (counted from the midnight before START)."""
    day = int((hours + 6.0) // 24)
    swing = 60.0 if 17 <= day <= 23 else 4.0
    return 40.0 + swing * math.sin(2 * math.pi * hours / 24.0)


def runs_over(ticks: list[PriceTick], policies: list[tuple[str, dict[str, float]]]) -> list[BacktestRun]:
    return [run_policy(ticks, CONFIG, make_policy(name, params)) for name, params in policies]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert header[12:16] == b"IHDR"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_zoomed_week_is_the_seven_days_the_optimum_earns_most() -> None:
    ticks = series(35, 60, calm_with_one_wild_week)
    optimum = optimum_for(ticks, CONFIG)
    stamps = [t.timestamp for t in ticks]
    window = zoom_window(stamps, optimum.cash_flows)
    assert not window.whole_run
    assert stamps[window.start] == datetime(2024, 3, 20, tzinfo=UTC)  # day 17 from 2024-03-03 00:00
    assert window.stop - window.start == 7 * 24
    # Against every other whole week from a midnight, summed here tick by tick.
    earned: dict[datetime, float] = defaultdict(float)
    midnights = sorted({at.replace(hour=0) for at in stamps if at.replace(hour=0) >= stamps[0]})
    for begin in midnights:
        if begin + timedelta(days=7) > stamps[-1] + timedelta(hours=1):
            continue
        for at, cash in zip(stamps, optimum.cash_flows, strict=True):
            if begin <= at < begin + timedelta(days=7):
                earned[begin] += float(cash)
    assert max(earned, key=lambda begin: earned[begin]) == stamps[window.start]
    assert window.optimum_cash == pytest.approx(max(earned.values()))


def test_a_five_minute_week_has_2016_steps() -> None:
    ticks = series(9, 5, calm_with_one_wild_week)
    optimum = optimum_for(ticks, CONFIG)
    window = zoom_window([t.timestamp for t in ticks], optimum.cash_flows)
    assert window.stop - window.start == 2016
    assert not window.whole_run


def test_a_run_shorter_than_a_week_is_shown_whole() -> None:
    ticks = load_ticks(DATA / "mara_api_5min_2025-05-22_48h.json")
    optimum = optimum_for(ticks, CONFIG)
    window = zoom_window([t.timestamp for t in ticks], optimum.cash_flows)
    assert (window.start, window.stop, window.whole_run) == (0, len(ticks), True)
    assert window.optimum_cash == pytest.approx(optimum.cash_value)


def test_monthly_capture_is_policy_cash_over_optimum_cash_in_each_month() -> None:
    ticks = load_ticks(DATA / "ercot_2023_first_2400h.csv")[-1500:]  # February to April
    run, summary = backtest(ticks, CONFIG, make_policy("adaptive"))
    optimum = optimum_for(ticks, CONFIG)
    policy_cash: dict[str, float] = defaultdict(float)
    optimum_cash: dict[str, float] = defaultdict(float)
    for at, mine, best in zip(run.timestamps, run.cash_flows, optimum.cash_flows, strict=True):
        policy_cash[at.strftime("%Y-%m")] += float(mine)
        optimum_cash[at.strftime("%Y-%m")] += float(best)
    expected = [(month, policy_cash[month] / optimum_cash[month]) for month in sorted(policy_cash)]
    got = monthly_capture(summary)
    assert [month for month, _ in got] == ["2023-02", "2023-03", "2023-04"]
    assert [month for month, _ in got] == [month for month, _ in expected]
    assert [ratio for _, ratio in got] == pytest.approx([ratio for _, ratio in expected])


def test_a_month_where_the_optimum_earns_nothing_has_no_capture() -> None:
    flat = series(40, 60, lambda hours: 30.0 if hours < 24 * 29 else calm_with_one_wild_week(hours))
    _run, summary = backtest(flat, CONFIG, make_policy("adaptive"))
    captures = dict(monthly_capture(summary))
    assert captures["2024-03"] is None
    assert captures["2024-04"] is not None


@pytest.mark.parametrize("policies", [1, 4])
def test_the_png_is_written_at_its_stated_size(tmp_path: Path, policies: int) -> None:
    ticks = series(40, 60, calm_with_one_wild_week)
    choices = [("adaptive", {}), ("threshold", {"charge_below": 38.0, "discharge_above": 42.0})]
    choices += [
        ("adaptive", {"window_hours": 48}),
        ("threshold", {"charge_below": 30.0, "discharge_above": 50.0}),
    ]
    runs = runs_over(ticks, choices[:policies])
    target = write_png(tmp_path / "chart.png", runs, optimum_for(ticks, CONFIG), CONFIG, title="constructed")
    assert png_size(target) == (round(WIDTH_INCHES * DPI), round(figure_height_inches(policies) * DPI))
    pixels = plt.imread(target)
    # Each policy's colour is drawn: tab:blue (C0) always, tab:red (C3) with four policies.
    for color in ["#1f77b4", "#d62728"][: 1 if policies == 1 else 2]:
        rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        assert np.any(np.all(np.abs(pixels[..., :3] - rgb) < 0.02, axis=-1))


def test_a_short_run_with_negative_prices_skips_the_month_panel_and_says_so() -> None:
    ticks = series(4, 60, lambda hours: -20.0 + 50.0 * math.sin(2 * math.pi * hours / 24.0))
    runs = runs_over(ticks, [("adaptive", {}), ("threshold", {"charge_below": 0.0, "discharge_above": 10.0})])
    optimum = optimum_for(ticks, CONFIG)
    figure = draw_figure(runs, optimum, CONFIG)
    try:
        heading = figure.legends[0].get_title().get_text()
        titles = [axis.get_title() for axis in figure.axes]
        assert "within one calendar month" in heading
        assert len(figure.axes) == 1 + 2 + len(runs)  # value; price, state of charge; one power row each
        assert not any(title.startswith("(b)") for title in titles)
        assert any("the whole run (shorter than a week)" in title for title in titles)
    finally:
        plt.close(figure)


@pytest.mark.parametrize("count", [1, 2])
def test_a_run_of_one_or_two_ticks_still_draws(tmp_path: Path, count: int) -> None:
    ticks = series(1, 60, calm_with_one_wild_week)[:count]
    runs = runs_over(ticks, [("adaptive", {})])
    target = write_png(tmp_path / "tiny.png", runs, optimum_for(ticks, CONFIG), CONFIG)
    assert png_size(target) == (round(WIDTH_INCHES * DPI), round(figure_height_inches(1) * DPI))


def test_a_long_run_has_all_panels_and_names_its_week() -> None:
    ticks = series(40, 60, calm_with_one_wild_week)
    runs = runs_over(ticks, [("adaptive", {})])
    _run, summary = backtest(ticks, CONFIG, make_policy("adaptive"))
    assert summary.capture_ratio is not None
    figure = draw_figure(runs, optimum_for(ticks, CONFIG), CONFIG)
    try:
        legend = [text.get_text() for text in figure.legends[0].get_texts()]
        assert legend[1].endswith(f" = {100 * summary.capture_ratio:.1f}% of the optimum")
        titles = [axis.get_title() for axis in figure.axes]
        assert len(figure.axes) == 2 + 2 + 1
        assert any(title.startswith("(b) capture per month") for title in titles)
        week = next(title for title in titles if title.startswith("(c)"))
        assert "Wed 20 Mar 2024 to Tue 26 Mar 2024" in week
        assert "the 7 days in which the optimum earns most" in week
    finally:
        plt.close(figure)


def test_runs_over_other_ticks_than_the_optimum_are_refused() -> None:
    ticks = series(10, 60, calm_with_one_wild_week)
    runs = runs_over(ticks, [("adaptive", {})])
    shorter: Optimum = optimum_for(ticks[:-1], CONFIG)
    with pytest.raises(ValueError, match="must cover"):
        draw_figure(runs, shorter, CONFIG)


def test_ticks_with_carbon_intensity_add_the_emissions_panel(tmp_path: Path) -> None:
    ticks = load_ticks(DATA / "ercot_2023-08-01_07.csv", carbon_file=DATA / "ercot_carbon_2023-08-01_07.csv")
    runs = runs_over(ticks, [("mpc", {})])
    optimum = optimum_for(ticks, CONFIG)
    assert shows_emissions(runs)
    assert not shows_emissions(runs_over(load_ticks(DATA / "ercot_2023-08-01_07.csv"), [("mpc", {})]))
    line = cumulative_net_tonnes(runs[0].net_kg)
    assert line[-1] == pytest.approx(runs[0].emissions.net_kg / 1000)
    assert cumulative_net_tonnes(np.array([1000.0, np.nan, -500.0])).tolist() == [1.0, 1.0, 0.5]
    figure = draw_figure(runs, optimum, CONFIG)
    try:
        titles = [axis.get_title() for axis in figure.axes]
        assert len(figure.axes) == 1 + 1 + 2 + 1  # value, emissions, price, state of charge, power
        panel = next(title for title in titles if title.startswith("net emissions over the whole run"))
        assert "coverage 100.0%" in panel
    finally:
        plt.close(figure)
    target = write_png(tmp_path / "carbon.png", runs, optimum, CONFIG)
    assert png_size(target) == (round(WIDTH_INCHES * DPI), round(figure_height_inches(1, True) * DPI))


def test_legend_figures_keep_their_third_digit() -> None:
    """The legend read 'mpc: 4.9 M' beside '3.18 M' (a review run): a trailing zero is a digit there."""
    assert money(4.9e6, keep_zeros=True) == "4.90 M"
    assert money(917.0, keep_zeros=True) == "917"
    assert money(4.9e6) == "4.9 M", "axes keep their short labels (50 k, not 50.0 k)"


def test_a_few_spikes_do_not_set_the_weeks_price_axis() -> None:
    """A review viewing a 5-minute year's chart: four spikes to about 1,300 flattened the week's prices,
    negative middays and evening peaks alike, onto the zero line."""
    from battery_worker.backtest.report import price_scale

    week = 40.0 * np.sin(np.linspace(0, 14 * math.pi, 2016))
    spiky = week.copy()
    spiky[[100, 700, 1300, 1900]] = [900.0, 1280.0, 400.0, 1100.0]
    scale = price_scale(spiky)
    assert scale.clipped == 4
    assert scale.beyond == 1280.0
    assert scale.low < -40.0 < 40.0 < scale.high < 60.0
    deep = week.copy()
    deep[500] = -1000.0  # a negative spike flattened the week as well (a review of the diff)
    below = price_scale(deep)
    assert below.clipped == 1
    assert below.beyond == -1000.0
    assert -60.0 < below.low < -40.0
    calm = price_scale(week)  # nothing to clip: the whole range, padded
    assert calm.clipped == 0
    assert calm.low < week.min()
    assert calm.high > week.max()
    assert price_scale(np.full(5, 30.0)).clipped == 0  # constant prices still have an axis
    assert price_scale(np.full(5, 30.0)).low < 30.0 < price_scale(np.full(5, 30.0)).high


def test_sub_hourly_power_is_drawn_as_each_hours_mean() -> None:
    """A review viewing a 5-minute week: 2,016 steps of power drawn tick by tick were a barcode."""
    from battery_worker.backtest.report import hourly_power

    stamps = [START + timedelta(minutes=5 * i) for i in range(24)]  # 06:00 to 07:55
    power = np.array([20.0] * 6 + [0.0] * 6 + [-10.0] * 12)
    starts, means = hourly_power(stamps, power, np.full(24, 5 / 60))
    assert [datetime.fromtimestamp(s, UTC) for s in starts] == [START, START + timedelta(hours=1)]
    assert means.tolist() == pytest.approx([10.0, -10.0])


def test_a_five_minute_chart_draws_hourly_power_and_clips_spikes(tmp_path: Path) -> None:
    ticks = series(
        8, 5, lambda hours: 1300.0 if int(hours * 12) % 500 == 7 else calm_with_one_wild_week(hours)
    )
    runs = runs_over(ticks, [("adaptive", {})])
    optimum = optimum_for(ticks, CONFIG)
    figure = draw_figure(runs, optimum, CONFIG, title="spiky.csv")
    texts = [text.get_text() for axis in figure.axes for text in axis.texts]
    titles = [axis.get_title() for axis in figure.axes]
    plt.close(figure)
    assert any(text.endswith("ticks outside the axis, the furthest at 1.3 k") for text in texts), texts
    assert any(title.startswith("power, each hour's mean") for title in titles), titles
