"""The site plan of every applied tick: in ``battery.actions`` (version 2), the same from the pipeline, the
backtest and the Python API; every machine on under the battery policies; bad prices dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from battery_worker import BatterySystem
from battery_worker.backtest.engine import run_policy
from battery_worker.battery_config import BatteryConfig
from battery_worker.cli.main import main
from battery_worker.events import BatteryAction
from battery_worker.fleet import SiteModel
from battery_worker.fleet.accounting import run_plans
from battery_worker.pipeline.partitioning import home_partition
from battery_worker.pipeline.processing import InputRecord, TickProcessor
from battery_worker.policies import make_policy
from battery_worker.pricefiles import load_ticks
from battery_worker.settings import TopicNames
from battery_worker.sites import PolicyChoice, SiteDirectory
from battery_worker.ticks import PriceTick

DATA = Path(__file__).parent / "data"
CONFIG = BatteryConfig()
SITE_POLICY = PolicyChoice("site", {"horizon_hours": 12})
TOPICS = TopicNames()


@pytest.fixture(scope="module")
def mara_48h() -> list[PriceTick]:
    return load_ticks(DATA / "mara_api_5min_2025-05-22_48h.json")


def record(offset: int, value: dict[str, Any], site: str = "mara") -> InputRecord:
    return InputRecord("prices", home_partition(site, 1), offset, site.encode(), orjson.dumps(value))


def tick_value(tick: PriceTick) -> dict[str, Any]:
    return tick.model_dump(mode="json", exclude={"site_id"})


def pipeline_plans(choice: PolicyChoice, ticks: list[PriceTick]) -> list[dict[str, Any]]:
    processor = TickProcessor(SiteDirectory(CONFIG, choice), TOPICS, prices_partitions=1)
    actions = []
    for offset, tick in enumerate(ticks):
        for output in processor.handle(record(offset, tick_value(tick))).outputs:
            if output.topic == TOPICS.actions:
                actions.append(BatteryAction.model_validate_json(output.value))
    assert all(action.schema_version == 3 for action in actions)
    return [action.site_plan.model_dump() for action in actions if action.site_plan]


def test_pipeline_backtest_and_python_api_give_the_same_plans(mara_48h: list[PriceTick]) -> None:
    published = pipeline_plans(SITE_POLICY, mara_48h)

    policy = make_policy(SITE_POLICY.name, SITE_POLICY.params)
    backtest = [plan.to_json() for plan in run_plans(SiteModel(), run_policy(mara_48h, CONFIG, policy))]

    api = BatterySystem(policy=make_policy(SITE_POLICY.name, SITE_POLICY.params))
    answers = [
        api.make_decision(t.energy_price, t.hash_price, t.token_price, timestamp=t.timestamp)["site_plan"]
        for t in mara_48h
    ]
    assert published == backtest == answers
    assert len(published) == len(mara_48h)
    fleet = SiteModel().fleet_mw
    assert any(plan["mining_mw"] + plan["inference_mw"] < fleet - 1 for plan in published), "curtails"
    assert any(plan["battery_mw"] < 0 for plan in published), "the battery runs machines"
    assert any(plan["battery_mw"] > 0 for plan in published)


def test_the_battery_policies_run_every_machine(mara_48h: list[PriceTick]) -> None:
    site = SiteModel()
    plans = pipeline_plans(PolicyChoice("threshold"), mara_48h[:50])
    assert len(plans) == 50, "every action carries its site plan"
    for plan in plans:
        assert [m["running"] for m in plan["machines"]] == [m.count for m in site.machines]
        assert plan["mining_mw"] + plan["inference_mw"] == pytest.approx(site.fleet_mw)
        assert plan["net"] == pytest.approx(
            plan["mining_revenue"] + plan["inference_revenue"] - plan["energy_cost"] + plan["battery_value"]
        )


@pytest.mark.parametrize("missing", ["hash_price", "token_price"])
def test_a_tick_without_hash_or_token_price_is_dead_lettered_under_the_site_policy(
    missing: str, mara_48h: list[PriceTick]
) -> None:
    processor = TickProcessor(SiteDirectory(CONFIG, SITE_POLICY), TOPICS, prices_partitions=1)
    bad = {key: value for key, value in tick_value(mara_48h[0]).items() if key != missing}
    handled = processor.handle(record(0, bad))
    assert handled.kind == "rejected"
    (dlq,) = handled.outputs
    assert dlq.topic == TOPICS.dlq
    assert dlq.value == orjson.dumps(bad)
    assert (("error.field", missing.encode())) in dlq.headers
    assert processor.handle(record(1, tick_value(mara_48h[1]))).kind == "applied"


def test_backtest_site_report_ranks_the_runs_against_the_optimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "site.json"
    args = ["backtest", str(DATA / "mara_api_5min_2025-05-22_48h.json"), "--site", "--summary", str(summary)]
    assert main([*args, "--policy-param", "site.horizon_hours=12"]) == 0
    out = capsys.readouterr().out
    assert "(c) site policy: machines and battery" in out
    data = orjson.loads(summary.read_bytes())
    share = {key: run["share_of_optimum"] for key, run in data["runs"].items()}
    assert data["ticks"] == 576
    assert share["all_on"] < share["all_on_mpc"] < share["planned"] < share["site"] <= 1.0


def test_backtest_site_report_takes_hash_and_token_prices_for_a_market_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "site.json"
    market = str(DATA / "ercot_2023-08-01_07.csv")
    prices = ["--hash-price", "60", "--token-price", "25"]
    assert main(["backtest", market, "--site", *prices, "--summary", str(summary)]) == 0
    runs = orjson.loads(summary.read_bytes())["runs"]
    assert runs["planned"]["profit"] > runs["all_on"]["profit"]
    assert runs["site"]["share_of_optimum"] <= 1.0
    # Without them every machine's revenue was 0, the shares of the optimum nonsense: refused, unless said.
    assert main(["backtest", market, "--site", "--summary", str(summary)]) == 2
    assert "give --hash-price and --token-price" in capsys.readouterr().err
    zeros = ["--hash-price", "0", "--token-price", "0"]
    assert main(["backtest", market, "--site", *zeros, "--summary", str(summary)]) == 0
    capsys.readouterr()
    zero = orjson.loads(summary.read_bytes())["runs"]
    assert zero["planned"]["profit"] == pytest.approx(0.0), "hash and token at 0: every machine curtailed"


def test_version_1_and_2_actions_still_load(mara_48h: list[PriceTick]) -> None:
    processor = TickProcessor(SiteDirectory(CONFIG, PolicyChoice("threshold")), TOPICS, prices_partitions=1)
    (action, *_rest) = processor.handle(record(0, tick_value(mara_48h[0]))).outputs
    written = orjson.loads(action.value)
    assert written["schema_version"] == 3
    newer = {"site_plan", "emissions"}
    old = {key: value for key, value in written.items() if key not in newer} | {"schema_version": 1}
    loaded = BatteryAction.model_validate(old)
    assert loaded.site_plan is None
    assert loaded.emissions is None
    assert loaded.model_dump(exclude={"schema_version", *newer}) == BatteryAction.model_validate(
        written
    ).model_dump(exclude={"schema_version", *newer})
    plan = {key: value for key, value in written["site_plan"].items() if key != "grid_import_kg"}
    version_2 = {key: value for key, value in written.items() if key != "emissions"} | {
        "schema_version": 2,
        "site_plan": plan,
    }
    assert BatteryAction.model_validate(version_2).site_plan is not None


def test_backtest_site_report_uses_the_site_of_a_settings_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config`` with ``--site-id``: the fleet the worker would run for that site, not the default one."""
    config = tmp_path / "worker.toml"
    config.write_text(
        "[sites.hydro.site]\n"
        "import_limit_mw = 30.0\n"
        'machines = [{ name = "hydro", power_kw = 5.0, output = 5000, count = 2000, paid_by = "hash" }]\n'
        "[sites.hydro.battery]\ncapacity_mwh = 40.0\n"
    )
    file = str(DATA / "mara_api_5min_2025-05-22_48h.json")
    summary = tmp_path / "site.json"
    run = ["backtest", file, "--site", "--summary", str(summary), "--policy-param", "site.horizon_hours=12"]
    assert main([*run, "--config", str(config), "--site-id", "hydro"]) == 0
    assert "10 MW" in capsys.readouterr().out.split("\n")[1], "the site line names the configured fleet"
    hydro = orjson.loads(summary.read_bytes())
    assert main(run) == 0
    capsys.readouterr()
    default = orjson.loads(summary.read_bytes())
    assert hydro["optimum_profit"] != pytest.approx(default["optimum_profit"])
    assert main([*run, "--config", str(config), "--site-id", "nowhere"]) == 2
    assert "no sites.nowhere" in capsys.readouterr().err


def test_a_plan_is_the_same_whether_its_fleet_was_cached_and_its_json_is_the_callers() -> None:
    """Every-machine plans reuse a cached fleet per site model and prices; nothing a caller does to one
    plan's JSON reaches the next plan."""
    from battery_worker.fleet.plan import _fleet, _money, plan_applied

    site = SiteModel()
    first = plan_applied(site, 42.0, 1.5, 1.0, -20.0, 1.0, curtail=False)
    everything = {machine.name: machine.count for machine in site.machines}
    assert first == _money(site, _fleet(site, 1.5, 1.0, everything), 42.0, -20.0, 1.0)
    data = first.to_json()
    data["machines"][0]["running"] = -1  # type: ignore[index]
    again = plan_applied(site, 42.0, 1.5, 1.0, -20.0, 1.0, curtail=False).to_json()
    assert again["machines"][0]["running"] == site.machines[0].count  # type: ignore[index]
