"""The monitor's settings and flags: what is refused before anything connects, and header values' secrecy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from battery_worker.cli.common import command_settings
from battery_worker.cli.main import build_parser
from battery_worker.errors import InvalidConfig
from battery_worker.settings import load_settings
from tests.workerkit import cli


def test_monitor_settings_come_from_the_environment_and_header_values_from_named_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATTERY_WORKER_MONITOR__URL", "https://prices.example/prices")
    monkeypatch.setenv("BATTERY_WORKER_MONITOR__HEADERS_FROM_ENV", '{"X-Api-Key": "MARA_KEY"}')
    monkeypatch.setenv("MARA_KEY", "k-123")
    monitor = load_settings().monitor
    assert (monitor.url, monitor.site, monitor.interval_s) == ("https://prices.example/prices", "default", 60)
    assert monitor.headers() == {"X-Api-Key": "k-123"}
    assert "k-123" not in repr(load_settings().masked())
    monkeypatch.delenv("MARA_KEY")
    with pytest.raises(InvalidConfig, match="MARA_KEY not set"):
        monitor.headers()


@pytest.mark.parametrize(
    ("value", "problem"),
    [("k\u2026", "holds a character outside Latin-1"), ("ab\ncd", "holds a line break or a NUL")],
)
def test_a_header_value_no_http_client_sends_is_refused_at_start_naming_its_variable(
    value: str, problem: str
) -> None:
    """A docs review: an API key holding an ellipsis passed the start, then stopped the monitor at its first
    poll as "unexpected UnicodeEncodeError ... (a bug)", exit 1, its summary saying "errors: none"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATTERY_WORKER_MONITOR")}
    env["MARA_KEY"] = value
    flags = ["--url", "http://127.0.0.1:1/p", "--header", "X-Api-Key=MARA_KEY", "--max-polls", "1"]
    result = cli("monitor", "--bootstrap-servers", "127.0.0.1:1", *flags, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"battery-worker: error: monitor.headers_from_env='X-Api-Key': MARA_KEY {problem}, so it cannot be "
        "sent as X-Api-Key"
    )
    assert value not in result.stderr


@pytest.mark.parametrize(
    ("monitor", "field"),
    [
        ({"url": "ftp://prices.example/"}, "monitor.url"),
        ({"url": "prices.example"}, "monitor.url"),
        ({"interval_s": 0}, "monitor.interval_s"),
        ({"headers_from_env": {"X Api Key": "K"}}, "monitor.headers_from_env"),
        ({"headers_from_env": {"X-Api-Key": "1-bad"}}, "monitor.headers_from_env"),
    ],
)
def test_bad_monitor_settings_are_refused(monitor: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as refused:
        load_settings(None, {"monitor": monitor})
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give --url"),
        (["--url", "file:///etc/passwd"], "http:// or https://"),
        (["--url", "http://127.0.0.1:1/p", "--header", "X-Api-Key"], "NAME=ENVIRONMENT_VARIABLE"),
        (["--url", "http://127.0.0.1:1/p", "--header", "X-Api-Key=NO_SUCH_VARIABLE_SET"], "not set"),
        (["--url", "http://127.0.0.1:1/p", "--interval", "0"], "must be above 0"),
        (["--url", "http://user:pw123@127.0.0.1:1/p"], "put them in a header"),
    ],
)
def test_the_command_refuses_bad_flags_in_one_line_before_connecting(args: list[str], says: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATTERY_WORKER_MONITOR")}
    result = cli("monitor", "--bootstrap-servers", "127.0.0.1:1", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pw123" not in result.stderr, "the refusal of a password in the URL does not print it"


def test_the_monitors_server_has_its_own_port_apart_from_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor served on worker.metrics_port: a worker and a monitor reading one environment (or one
    file) both bound it, and the second failed to start."""
    monkeypatch.setenv("BATTERY_WORKER_WORKER__METRICS_PORT", "9400")
    args = build_parser().parse_args(
        ["monitor", "--url", "http://127.0.0.1:1/prices", "--metrics-port", "9401"]
    )
    settings = command_settings(args)
    assert (settings.worker.metrics_port, settings.monitor.metrics_port) == (9400, 9401)
    worker = command_settings(build_parser().parse_args(["run", "--metrics-port", "9402"]))
    assert (worker.worker.metrics_port, worker.monitor.metrics_port) == (9402, None)


def test_a_monitor_given_only_the_workers_port_says_it_serves_none() -> None:
    """Deployed with BATTERY_WORKER_WORKER__METRICS_PORT, as before its own setting, it lost its probes
    without a word."""
    env = {**os.environ, "BATTERY_WORKER_WORKER__METRICS_PORT": "9400", "BATTERY_WORKER_LOG_FORMAT": "text"}
    argv = [sys.executable, "-m", "battery_worker.cli", "monitor", "--url", "http://127.0.0.1:1/prices"]
    with subprocess.Popen(
        [*argv, "--bootstrap-servers", "127.0.0.1:1"], env=env, stderr=subprocess.PIPE, text=True
    ) as monitor:
        assert monitor.stderr is not None
        first = monitor.stderr.readline()
        monitor.send_signal(signal.SIGTERM)
        monitor.communicate(timeout=30)
    assert "worker.metrics_port is set and monitor.metrics_port is not" in first
