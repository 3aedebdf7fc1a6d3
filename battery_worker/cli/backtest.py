"""``battery-worker backtest FILE``: a policy over a price file, against the perfect-foresight optimum.

The run goes through :func:`battery_worker.dispatch.dispatch` (the worker's own path). It prints the value
(net of wear), the share of the optimum, cycles and energy lost (per month with ``--months``), writes a PNG
(``--png``) and, with ``--summary OUT.json``, a JSON summary whose top level is the first policy's
``policy``, ``value``, ``optimum_value`` and ``capture_ratio`` (with ``--compare``, every policy is listed
under ``policies``). The optimum is exact or, with negative prices, an LP bound that no policy can beat (the
output says which, with the gap to the best schedule found); capture is measured against that figure.

``--site`` reports the site instead (machines and battery, docs/site.md): the profit of every machine on
without a battery, every machine on with ``mpc``'s battery, the machines planned without a battery, and
the ``site`` policy, each as a share of the site optimum (its summary: ``file``, ``ticks``,
``optimum_profit`` and those ``runs``); it runs its own policies, so ``--policy`` and ``--compare`` are
refused with it. The site is the seed's 25 MW fleet, or with
``--config FILE`` the ``[site]`` and ``[battery]`` of that settings file (``--site-id ID``: that site's
``sites.<id>`` overrides over them), resolved exactly as the worker resolves them, the ``BATTERY_WORKER_*``
variables over the file as for the worker.
``--hash-price`` and ``--token-price`` set those prices for market files, which carry an energy price only.

``--carbon FILE`` joins grid carbon intensity to the prices (docs/emissions.md) and prints, per policy and
for the optimum, the net emissions effect in tonnes and its coverage beside value and cycles.
``--carbon-price P`` (money per tonne) is given to the policies that take one (``mpc``) and adds an optimum
solved with emissions priced in; capture stays measured against the price-only optimum.

``--warmup FILE`` (read like FILE) gives the policies the prices before FILE's first tick to learn from, as
a worker that ran before the backtest would have: they are not traded and not counted, and ticks of it at
or after that first tick are left out. A run of a few hours (the MARA event) otherwise starts with policies
that know nothing of the prices before it.

The battery: a chemistry preset (``--battery-type NAME``, one of ``chemistries.py``) under explicit flags.
SIGINT, SIGTERM or SIGHUP stop the command at any point within a second, with one line and exit code 128 +
the signal's number.

numpy, scipy and the backtest modules are imported when the command runs, not with the parser: every
command's parser loads this module, and the stop handlers are in place before those imports.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from battery_worker.battery_config import BatteryConfig
from battery_worker.chemistries import CHEMISTRIES, chemistry_fields
from battery_worker.cli.backtest_progress import Progress, Stopped, optimum_line, stoppable
from battery_worker.cli.common import (
    CAP,
    NUMBER,
    check_output_file,
    counted,
    policy_value,
    price_file_ticks,
)
from battery_worker.errors import BatteryWorkerError, InvalidConfig
from battery_worker.fleet.model import SiteModel
from battery_worker.outputs import write_atomically
from battery_worker.policies import BATTERY_POLICIES, POLICIES, make_policy
from battery_worker.policies.base import Policy
from battery_worker.ticks import PriceTick

if TYPE_CHECKING:
    from battery_worker.backtest.carbon import CarbonFigures
    from battery_worker.backtest.engine import BacktestRun, BacktestSummary, OptimumInputs, PriceGap
    from battery_worker.backtest.optimum import Optimum
    from battery_worker.settings import PolicySettings, Settings
    from battery_worker.sites import PolicyChoice


DEFAULT_PNG = Path("backtest.png")
DESCRIPTION = (
    "Run a policy over a price file through the worker's own code and compare it with the perfect-foresight "
    "optimum: value (net of wear), share of the optimum, cycles and energy lost (per month with --months), a "
    "PNG (--png) and a JSON summary (--summary OUT.json). The optimum is exact or, with negative prices, an "
    "LP bound no policy can beat (the output says which); capture is measured against that figure. More in "
    "docs/dispatch.md."
)
"""The help's description: the module's docstring is for readers of the code (it printed as raw reST)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="run a policy over a price file and compare it with the perfect-foresight optimum",
        description=DESCRIPTION,
        allow_abbrev=False,  # flags whole, as cli/main.py's _Parser, from python -m ...cli.backtest too
    )
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",  # checked in policy_names: '--compare FILE' takes the file as the names
        help="price file: MARA JSON/CSV or a CSV with timestamp and price (times without an offset are UTC)",
    )
    parser.add_argument("--timestamp-column", help="CSV column holding the timestamp")
    parser.add_argument("--price-column", help="CSV column holding the energy price")
    parser.add_argument(
        "--policy", help=f"policy: {', '.join(sorted(POLICIES))} (default: --config's, else mpc)"
    )
    parser.add_argument(
        "--policy-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="policy parameter (repeatable); with --compare, POLICY.KEY=VALUE sets one policy's",
    )
    parser.add_argument(
        "--compare",
        nargs="?",
        const=",".join(BATTERY_POLICIES),
        metavar="NAMES",
        help="run several policies side by side: comma-separated names (the battery policies when given "
        "without names)",
    )
    parser.add_argument(
        "--site",
        action="store_true",
        help="compare the site's runs (machines and battery) with the site optimum instead",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML settings: the battery, site and (without --policy, --compare) policy the worker would use",
    )
    parser.add_argument(
        "--site-id", help="with --config: the battery, site and policy of sites.<ID> (default: the defaults)"
    )
    parser.add_argument(
        "--carbon", type=Path, metavar="FILE", help="carbon intensity file joined by timestamp"
    )
    parser.add_argument(
        "--warmup",
        type=Path,
        metavar="FILE",
        help="prices before FILE's first tick that the policies learn from first (not traded, not counted)",
    )
    parser.add_argument(
        "--carbon-price", type=NUMBER, default=0.0, help="money per tonne CO2eq for mpc and an optimum (0)"
    )
    parser.add_argument("--hash-price", type=NUMBER, help="for a market file, which has none (default 0)")
    parser.add_argument("--token-price", type=NUMBER, help="for a market file, which has none (default 0)")
    battery = BatteryConfig()
    parser.add_argument(
        "--battery-type",
        choices=sorted(CHEMISTRIES),
        help="chemistry preset: efficiency, charge window, wear cost, cycle cap (the flags below win)",
    )
    parser.add_argument("--capacity-mwh", type=NUMBER, help=f"default {battery.capacity_mwh:g}")
    parser.add_argument(
        "--max-rate-mw", type=NUMBER, help=f"both ways, default {battery.max_charge_rate_mw:g}"
    )
    parser.add_argument("--efficiency", type=NUMBER, help=f"round trip, 0-1, default {battery.efficiency:g}")
    parser.add_argument(
        "--initial-charge-percent", type=NUMBER, help=f"default {battery.initial_charge_percent:g}"
    )
    parser.add_argument("--cycle-cost-per-mwh", type=NUMBER, help="wear, per MWh delivered (default 0)")
    parser.add_argument(
        "--max-cycles-per-day",
        type=CAP,
        help="cap per calendar day, in usable windows (default none; none lifts a --battery-type's cap)",
    )
    parser.add_argument(
        "--cycle-day-timezone",
        metavar="ZONE",
        help="where the cap's day starts, e.g. America/Chicago (default UTC)",
    )
    parser.add_argument("--png", type=Path, help=f"chart, a PNG (default {DEFAULT_PNG})")
    parser.add_argument("--no-png", action="store_true", help="do not draw the chart")
    parser.add_argument("--summary", type=Path, metavar="OUT.json", help="write a JSON summary here")
    parser.add_argument("--months", action="store_true", help="print per-month figures")
    parser.add_argument("--progress", action="store_true", help="show a progress bar even when not a tty")
    parser.set_defaults(func=run)


def parse_params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``KEY=VALUE`` pairs into params per policy (``""`` for unqualified keys); values as for ``run``."""
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidConfig("--policy-param", pair, "expected KEY=VALUE")
        owner, _dot, name = key.strip().rpartition(".")
        params.setdefault(owner, {})[name] = policy_value(pair, text)
    return params


@dataclass(frozen=True, slots=True)
class ConfiguredSite:
    """What ``--config`` (and the variables) give the site the backtest runs: its battery, site model,
    ``emissions.carry_hours`` and policy (None unless ``--config`` is given and it or the variables name
    one), with where that policy is set."""

    config: BatteryConfig
    site: SiteModel
    carry_hours: float
    policy: PolicyChoice | None = None
    policy_from: str = ""


def configured_site(args: argparse.Namespace) -> ConfiguredSite:
    """The battery, site model, ``emissions.carry_hours`` and policy of the settings as the worker reads
    them: the defaults, ``--config``, then the ``BATTERY_WORKER_*`` variables (for ``--site-id``, as the
    worker resolves that site). Read from ``--config`` only, a variable set for the worker
    (``BATTERY_WORKER_BATTERY_TYPE=lfp``) was left out of the backtest without a word, which then ran
    another battery than the worker; and the settings' policy was left out for ``mpc`` (a fleet operator's
    review: threshold 25 / 40 live, mpc in the backtest, and 1.7 / 2.0 with ``--policy threshold``), from
    the variables too (a review of the diff: the battery was read from them and the policy not)."""
    if args.config is None and args.site_id is not None:
        raise InvalidConfig("--site-id", args.site_id, "needs --config (the settings that define the site)")
    from battery_worker.settings import policy_over
    from battery_worker.sites import PolicyChoice

    configured: list[PolicySettings] = []
    settings = _worker_settings(args, configured)
    directory, carry_hours = settings.site_directory(), settings.emissions.carry_hours
    named = bool(configured[0].model_fields_set)  # given by the file or a variable, not the code's default
    policy = PolicyChoice(configured[0].name, dict(configured[0].params)) if named else None
    variables = sorted(name for name in os.environ if name.upper().startswith("BATTERY_WORKER_POLICY"))
    file_named = f"[policy] of {args.config}" if args.config is not None else ""
    policy_from = " and ".join(part for part in (file_named, ", ".join(variables)) if part)
    if args.site_id is None:
        setup = directory.default
    else:
        if args.site_id not in settings.sites:
            known = ", ".join(sorted(settings.sites)) or "none"
            raise InvalidConfig(
                "--site-id", args.site_id, f"no sites.{args.site_id} in {args.config} (sites: {known})"
            )
        setup = directory.setup(args.site_id)
        own = settings.sites[args.site_id].policy
        if own is not None:
            layered = policy_over(configured[0], own.name, own.params)
            policy = PolicyChoice(layered.name, dict(layered.params))
            policy_from = f"sites.{args.site_id}.policy of {args.config}"
    return ConfiguredSite(setup.config, setup.site, carry_hours, policy, policy_from)


def _worker_settings(args: argparse.Namespace, configured: list[PolicySettings]) -> Settings:
    """The worker's settings, but for ``[policy]``, which is appended to ``configured`` and not built
    here: the backtest builds the policies it runs, so a policy the variables name is not built when the
    flags run another (``BATTERY_WORKER_POLICY__NAME=nosuch`` stopped a backtest of ``--policy
    threshold``). The rest is checked as the worker checks it."""

    from battery_worker.settings import PolicySettings, load_settings

    def keep(policy: PolicySettings) -> PolicySettings:
        configured.append(policy)
        return PolicySettings()

    return load_settings(args.config, choose_policy=keep)


def run_policies(args: argparse.Namespace, names: list[str], configured: ConfiguredSite) -> list[str]:
    """The policies to run: the flags' (:func:`policy_names`), else the one ``--config`` gives the site."""
    policy = configured.policy
    if policy is None:
        return names
    if args.policy is None and args.compare is None and not args.site:
        return [policy.name]
    return names


def policy_lines(
    names: list[str], configured: ConfiguredSite, params: dict[str, dict[str, Any]]
) -> list[str]:
    """What the output says of the configuration's policy: run with its parameters, or not run."""
    policy = configured.policy
    if policy is None:
        return []
    if policy.name not in names:
        return [
            f"note: {configured.policy_from} is {_named(policy.name, policy.params)}; not run, the flags "
            f"name {', '.join(names)}"
        ]
    given = {**params.get("", {}), **params.get(policy.name, {})}
    run_with = {**policy.params, **given}
    return [
        f"policy {_named(policy.name, run_with)}: {configured.policy_from}"
        + (" and --policy-param" if given else "")
    ]


def _named(name: str, params: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{key}={value}" for key, value in sorted(params.items()))
    return f"{name} ({shown})" if shown else name


def battery_config(args: argparse.Namespace, base: BatteryConfig | None = None) -> BatteryConfig:
    """``base`` (the defaults when None), then the ``--battery-type`` preset, then the battery flags given."""
    flags = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in _BATTERY_FLAGS.items()}
    given = {name: value for name, value in flags.items() if value is not None}
    fields = {**chemistry_fields(args.battery_type), **given}
    try:
        return BatteryConfig(**fields) if base is None else replace(base, **fields)
    except InvalidConfig as error:  # named by the flag given, not the field it sets
        flag = _BATTERY_FLAGS.get(error.field) if error.field in given else None
        if flag is None:
            raise
        raise InvalidConfig(flag, error.value, error.problem) from None


_BATTERY_FLAGS = {  # each battery field the flags set: the flag that sets it
    "capacity_mwh": "--capacity-mwh",
    "max_charge_rate_mw": "--max-rate-mw",
    "max_discharge_rate_mw": "--max-rate-mw",
    "efficiency": "--efficiency",
    "initial_charge_percent": "--initial-charge-percent",
    "cycle_cost_per_mwh": "--cycle-cost-per-mwh",
    "max_cycles_per_day": "--max-cycles-per-day",
    "cycle_day_timezone": "--cycle-day-timezone",
}


def run(args: argparse.Namespace) -> int:
    """The command; a stop signal ends it with one line on stderr and exit code 128 + the signal."""
    try:
        with stoppable():
            return _run(args)
    except Stopped as stop:
        print(f"battery-worker backtest: stopped by {stop}", file=sys.stderr, flush=True)
        return 128 + stop.signum


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import orjson

    from battery_worker.backtest.carbon import carbon_param, carbon_rows, carbon_table
    from battery_worker.backtest.engine import backtest, optimum_inputs, price_gaps
    from battery_worker.backtest.optimum_process import solve_in_child
    from battery_worker.backtest.report import amount, energy, month_table, summary_table, write_png

    png = chart_file(args)
    check_output_file("--png", png)
    check_output_file("--summary", args.summary)
    check_carbon_flags(args)
    configured = configured_site(args)
    names = run_policies(args, policy_names(args), configured)
    params = parse_params(args.policy_param)
    for owner in params:
        if owner and owner not in names:
            raise InvalidConfig("--policy-param", owner, f"not among the policies run ({', '.join(names)})")
    base, site, carry_hours = configured.config, configured.site, configured.carry_hours
    own = configured.policy
    policies = [
        make_policy(
            name,
            {
                **(dict(own.params) if own is not None and own.name == name else {}),
                **carbon_param(name, args.carbon_price),
                **params.get("", {}),
                **params.get(name, {}),
            },
            site=site,
        )
        for name in names
    ]
    for line in policy_lines(names, configured, params):
        print(line, file=sys.stderr if line.startswith("note:") else sys.stdout)
    for policy in policies:  # as --carbon-price: without intensities it would change nothing, unsaid
        price = getattr(policy, "carbon_price", 0.0)
        if price and args.carbon is None:
            shown = f"{policy.name}.carbon_price={price:g}"
            flagged = "carbon_price" in {**params.get("", {}), **params.get(policy.name, {})}
            if flagged or own is None or own.name != policy.name:
                raise InvalidConfig("--policy-param", shown, "needs --carbon FILE, the intensities it prices")
            raise InvalidConfig(  # the settings' own, not a flag never given (a review of the diff)
                configured.policy_from,
                shown,
                "needs --carbon FILE, the intensities it prices (or --policy-param carbon_price=0)",
            )
    config = battery_config(args, base)
    ticks = price_file_ticks(args, args.file, args.carbon)
    if not ticks:
        raise InvalidConfig("file", str(args.file), "holds no price ticks")
    check_chartable(png, ticks)
    given = args.hash_price is not None or args.token_price is not None
    unpaid = not given and not any(tick.hash_price or tick.token_price for tick in ticks)
    if unpaid and not args.site and "site" in names:  # as the worker says it (a review of the diff)
        print(
            f"note: {args.file} gives no hash or token price, so every tick carries 0 for both: under the "
            "site policy no machine earns and every one is curtailed (give --hash-price and --token-price)",
            file=sys.stderr,
        )
    if args.site and unpaid:
        # A market file has no hash or token price: every machine's revenue was 0 and the shares nonsense.
        raise InvalidConfig(
            "--site",
            str(args.file),
            "needs the hash and token prices, which the file has none of: "
            "give --hash-price and --token-price",
        )
    warmup = warmup_ticks(args, ticks)
    progress = Progress(args.progress)
    if args.site:
        return site_report(args, ticks, config, site, policies, progress, carry_hours, warmup)
    inputs = optimum_inputs(ticks, config)
    started = time.monotonic()
    with progress.optimum(inputs.prices.size, int(np.count_nonzero(inputs.prices < 0))) as on_wait:
        optimum = solve_in_child(config, inputs, on_wait=on_wait)
    progress.solved(optimum, time.monotonic() - started)
    runs: list[BacktestRun] = []
    summaries: list[BacktestSummary] = []
    for policy in policies:
        with progress.policy(policy.name, len(ticks)) as advance:
            run_, summary = backtest(
                ticks,
                config,
                policy,
                optimum=optimum,
                on_tick=advance,
                carry_hours=carry_hours,
                warmup=warmup,
            )
        runs.append(run_)
        summaries.append(summary)
    skipped = summaries[0].skipped_ticks
    left_out = f" ({skipped:,} more left out: not after an earlier tick's time)" if skipped else ""
    print(
        f"{args.file.name}: {counted(summaries[0].ticks, 'tick')}, {summaries[0].start} .. {summaries[0].end}"
        f"{left_out}"
    )
    gaps = price_gaps(ticks, config)
    if gaps:
        print(gaps_line(gaps, config))
    first_step = first_step_line(ticks, config)
    if first_step:
        print(first_step)
    print(optimum_line(optimum))
    print(summary_table(summaries))
    if not optimum.exact and optimum.relative_gap > BEST_SCHEDULE_GAP and optimum.value > 0:
        print(best_schedule_line(optimum, summaries))
    if config.cycle_cost_per_mwh > 0:
        for summary in summaries:
            scale = max(abs(summary.gross_value), abs(summary.wear_cost), abs(summary.value))
            print(
                f"{summary.policy}: gross {amount(summary.gross_value, scale)}, "
                f"wear {amount(summary.wear_cost, scale)} "
                f"({energy(summary.energy_delivered_mwh, summary.energy_delivered_mwh)} MWh delivered), "
                f"net {amount(summary.value, scale)}"
            )
        first = summaries[0]
        wear, net = first.optimum_wear_cost, first.optimum_schedule_value
        scale = max(abs(net + wear), abs(wear), abs(net))
        print(
            f"optimum (best schedule): gross {amount(net + wear, scale)}, wear {amount(wear, scale)}, net "
            f"{amount(net, scale)}, {first.optimum_cycles:,.1f} cycles"
        )
    carbon: list[CarbonFigures] = []
    if args.carbon is not None:

        def solve_carbon(config: BatteryConfig, inputs: OptimumInputs) -> Optimum:
            negative = int(np.count_nonzero(inputs.prices < 0))
            with progress.optimum(inputs.prices.size, negative, "carbon-priced optimum") as on_wait:
                return solve_in_child(config, inputs, on_wait=on_wait)

        carbon = carbon_rows(
            ticks, config, runs, summaries, optimum, args.carbon_price, carry_hours, solve=solve_carbon
        )
        print(carbon_table(carbon))
    if args.months:
        for summary in summaries:
            print()
            print(month_table(summary))
    if png is not None:
        write_png(png, runs, optimum, config, title=f"{args.file.name}: policies against the optimum")
        print(f"chart: {png}")
    if args.summary is not None:
        data = summaries[0].to_json()
        data["file"] = str(args.file)
        data["gaps"] = [{"after": gap.after.isoformat(), "hours": gap.hours} for gap in gaps]
        if len(summaries) > 1:
            data["policies"] = [s.to_json() for s in summaries]
        if carbon:  # the table's rows, the optima's among them (the policies' are in their summaries too)
            data["carbon"] = [row.to_json() for row in carbon]
        write_atomically(args.summary, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"summary: {args.summary}")
    return 0


BEST_SCHEDULE_GAP = 0.01
"""Above this gap between the optimum's bound and its best schedule, capture is also given against the
schedule: on a fortnight of negative prices the gap was 9.45 %, and mpc read 78.1 % of the bound and 86 %
of the best schedule found (an analyst's review)."""


def best_schedule_line(optimum: Optimum, summaries: list[BacktestSummary]) -> str:
    shares = ", ".join(f"{s.policy} {100 * s.value / optimum.value:.1f}%" for s in summaries)
    return (
        f"against the best schedule found instead of the bound: {shares} (each policy's share of the true "
        "optimum lies between this and the table's)"
    )


def gaps_line(gaps: list[PriceGap], config: BatteryConfig) -> str:
    longest = max(gaps, key=lambda gap: gap.hours)
    which = ":" if len(gaps) == 1 else ", the longest"
    return (
        f"gaps: {counted(len(gaps), 'gap')} longer than max_step_hours ({config.max_step_hours:g} h){which} "
        f"{_hours(longest.hours)} after {longest.after.isoformat()}: the step after each is booked as "
        f"default_step_hours ({config.default_step_hours:g} h), and the chart draws a line across it"
    )


def first_step_line(ticks: Sequence[PriceTick], config: BatteryConfig) -> str | None:
    """Said when the file's ticks come more often than ``default_step_hours``: the first tick is booked as
    that step, as a worker books a site's first tick, which on 15-minute prices traded an hour at the first
    price (a backtest review's hand count of 80.00 came out 84.33)."""
    if len(ticks) < 2:
        return None
    usual = statistics.median(
        (later.timestamp - earlier.timestamp).total_seconds() / 3600.0
        for earlier, later in itertools.pairwise(ticks)
    )
    if not 0 < usual < config.default_step_hours / 1.5:
        return None
    return (
        f"first step: the first tick is booked as default_step_hours ({config.default_step_hours:g} h), as a "
        f"worker books a site's first tick, where this file's ticks are {_hours(usual)} apart "
        f"(BATTERY_WORKER_BATTERY__DEFAULT_STEP_HOURS={usual:.4g} books one interval)"
    )


def _hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.3g} min"
    return f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.1f} days"


CHART_YEARS = (2, 9998)
"""The years the chart draws: matplotlib's dates run from the year 1 to 9999, and its axes' margins
reach past the ticks (ticks of the year 1 ended the run with a matplotlib error, the tables printed)."""


def check_chartable(png: Path | None, ticks: Sequence[PriceTick]) -> None:
    """Refuse, before the backtest runs, ticks the chart cannot draw."""
    if png is None:
        return
    first = min(tick.timestamp for tick in ticks)
    last = max(tick.timestamp for tick in ticks)
    low, high = CHART_YEARS
    if first.year < low or last.year > high:
        raise InvalidConfig(
            "--png",
            str(png),
            f"the chart draws the years {low} to {high} (matplotlib's dates, with margins) and the ticks "
            f"run from {first.isoformat()} to {last.isoformat()}: give --no-png",
        )


def chart_file(args: argparse.Namespace) -> Path | None:
    """Where the chart goes, or None; flags the chart would ignore are refused (``--site`` draws none)."""
    if args.site:
        for flag, given in (("--png", args.png), ("--months", args.months or None)):
            if given is not None:
                raise InvalidConfig(flag, str(given), "--site draws no chart and has no months; drop one")
        return None
    if args.no_png:
        if args.png is not None:
            raise InvalidConfig("--png", str(args.png), "given with --no-png; drop one")
        return None
    png: Path = args.png or DEFAULT_PNG
    if png.suffix and png.suffix.lower() != ".png":
        raise InvalidConfig("--png", str(png), "the chart is a PNG: name it .png")
    return png


def check_carbon_flags(args: argparse.Namespace) -> None:
    """``--carbon-price`` needs ``--carbon`` (it was ignored without it) and is never below 0 (the optimum
    was rewarded for emitting; ``mpc`` refused it in words of its own)."""
    if args.carbon_price < 0:
        raise InvalidConfig("--carbon-price", args.carbon_price, "must be >= 0 (money per tonne avoided)")
    if args.carbon_price and args.carbon is None:
        raise InvalidConfig(
            "--carbon-price", args.carbon_price, "needs --carbon FILE, the intensities it prices"
        )


def policy_names(args: argparse.Namespace) -> list[str]:
    """The policies to run, in order; flags that would be ignored are refused before any work is done."""
    if args.file is None:
        if args.compare is not None and Path(args.compare).exists():
            raise InvalidConfig(
                "--compare", args.compare, "is the price file: give it before --compare, or --compare=NAMES"
            )
        raise InvalidConfig("file", None, "give the price file to run over")
    if args.site:
        for flag, given in (("--policy", args.policy), ("--compare", args.compare)):
            if given is not None:
                raise InvalidConfig(flag, given, "--site runs its own policies (mpc and site); drop one")
        return ["mpc", "site"]
    if args.compare is None:
        return [args.policy or "mpc"]
    if args.policy is not None:
        raise InvalidConfig("--policy", args.policy, "--compare names the policies; give one of the two")
    names = [name.strip() for name in args.compare.split(",") if name.strip()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidConfig("--compare", args.compare, f"names {twice[0]} twice")
    if not names:
        raise InvalidConfig(
            "--compare", args.compare, "names no policy: give names separated by commas, or --compare alone"
        )
    return names


def warmup_ticks(args: argparse.Namespace, ticks: list[PriceTick]) -> list[PriceTick]:
    """``--warmup FILE``'s ticks before the run's first tick, read like FILE; a file with none is refused."""
    from battery_worker.backtest.engine import before_first

    if args.warmup is None:
        return []
    warmup = before_first(price_file_ticks(args, args.warmup, args.carbon), ticks)
    if not warmup:
        first = ticks[0].timestamp.isoformat()
        raise InvalidConfig("--warmup", str(args.warmup), f"holds no price tick before {first}")
    span = f"{warmup[0].timestamp.isoformat()} .. {warmup[-1].timestamp.isoformat()}"
    print(f"warm-up: {counted(len(warmup), 'tick')} of {args.warmup.name}, {span}")
    return warmup


def site_report(
    args: argparse.Namespace,
    ticks: list[PriceTick],
    config: BatteryConfig,
    site: SiteModel,
    policies: list[Policy],
    progress: Progress,
    carry_hours: float,
    warmup: list[PriceTick],
) -> int:
    """``--site``: the site's runs against the site optimum, printed as a table (and ``--summary``)."""
    import orjson

    from battery_worker.backtest.optimum_process import call_in_child
    from battery_worker.backtest.site import compare_site, site_line, site_table
    from battery_worker.fleet.optimum import SiteOptimum, site_optimum

    def solve(
        site: SiteModel, config: BatteryConfig, ticks: list[PriceTick], *, carry_hours: float
    ) -> SiteOptimum:
        negative = sum(1 for tick in ticks if tick.energy_price < 0)
        with progress.optimum(len(ticks), negative, "site optimum") as on_wait:
            return call_in_child(
                site_optimum, (site, config, ticks), kwargs={"carry_hours": carry_hours}, on_wait=on_wait
            )

    mpc, site_policy = policies
    with ExitStack() as bar:

        def announce(key: str) -> Callable[[], None] | None:
            bar.close()  # the previous run's progress bar
            return bar.enter_context(progress.policy(key, len(ticks)))

        comparison = compare_site(
            ticks,
            config,
            site,
            mpc=mpc,
            site_policy=site_policy,
            announce=announce,
            carry_hours=carry_hours,
            warmup=warmup,
            solve=solve,
        )
    span = f"{ticks[0].timestamp.isoformat()} .. {ticks[-1].timestamp.isoformat()}"
    print(f"{args.file.name}: {counted(comparison.ticks, 'tick')}, {span}")
    print(site_line(site))
    if args.carbon_price:  # it changes the policies' runs, not the optimum: said, not left to be guessed
        print(
            f"carbon price {args.carbon_price:g} per t CO2eq: given to mpc and the site policy; "
            "the site optimum is by profit alone"
        )
    print(site_table(comparison))
    if args.summary is not None:
        data = {"file": str(args.file), **comparison.to_json()}
        write_atomically(args.summary, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"summary: {args.summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m battery_worker.cli.backtest``); errors are one line."""
    parser = argparse.ArgumentParser(prog="battery-worker", allow_abbrev=False)
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backtest", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = args.func(args)
    except BatteryWorkerError as error:
        print(f"battery-worker backtest: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
