"""The command line: help for every command, one-line errors, and the commands against a real broker."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from battery_worker.cli.common import stdout_console
from battery_worker.cli.main import build_parser, main
from battery_worker.cli.replay import progress_line
from tests.workerkit import DATA, cli, make_settings, settings_env

COMMANDS = [["run"], ["demo"], ["feed"], ["status"], ["history", "export"], ["monitor"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: battery-worker" in capsys.readouterr().out


def test_bad_settings_are_one_clear_line() -> None:
    env = {**os.environ, "BATTERY_WORKER_BATTERY__EFFICIENCY": "1.5"}
    result = cli("run", "--bootstrap-servers", "127.0.0.1:1", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "efficiency" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_price_file_is_one_clear_line() -> None:
    result = cli("feed", "no-such-file.csv", "--bootstrap-servers", "127.0.0.1:1")
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_with_ticks_the_worker_would_dead_letter_for_their_time_is_refused(tmp_path: Path) -> None:
    """A row a day ahead was published, exit 0; the worker dead-lettered it, and the monitor, reading it back
    as the last tick published, published nothing after it."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [f"{(hour + timedelta(hours=h)).isoformat()},1,1,1" for h in (-1, 0, 30)]
    prices = tmp_path / "future.csv"
    prices.write_text("\n".join(["timestamp,energy_price,hash_price,token_price", *rows]) + "\n")
    result = cli("feed", str(prices), "--bootstrap-servers", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.startswith(f"battery-worker: error: file='1 tick from {rows[2].split(',')[0]}'")
    assert "the worker dead-letters them" in result.stderr
    hourly = [f"{(hour + timedelta(hours=2 * h)).isoformat()},1,1,1" for h in range(3)]
    prices.write_text("\n".join(["timestamp,energy_price,hash_price,token_price", *hourly]) + "\n")
    played = cli("feed", str(prices), "--rate", str(1 / 7200), "--bootstrap-servers", "127.0.0.1:1")
    assert "dead-letters" not in played.stderr, "played in real time, each tick is sent near its time"
    assert played.returncode == 1, played.stderr  # on to the broker, which is not there


def test_feed_says_when_a_site_worker_would_get_no_hash_or_token_price() -> None:
    """A review run as the site operator: a market file fed to a ``site`` worker carried 0 for both
    prices without a word, so every machine was curtailed; ``backtest --site`` asks for them."""
    market = str(DATA / "ercot_2023-08-01_07.csv")
    site = {**os.environ, "BATTERY_WORKER_POLICY__NAME": "site"}
    warned = cli("feed", market, "--limit", "1", "--bootstrap-servers", "127.0.0.1:1", env=site)
    assert "gives no hash or token price, so every tick carries 0 for both" in warned.stderr
    assert "under the site policy of site default" in warned.stderr
    priced = [market, "--limit", "1", "--hash-price", "60", "--token-price", "25"]
    quiet = cli("feed", *priced, "--bootstrap-servers", "127.0.0.1:1", env=site)
    assert "hash or token price" not in quiet.stderr
    threshold = cli("feed", market, "--limit", "1", "--bootstrap-servers", "127.0.0.1:1")
    assert "hash or token price" not in threshold.stderr, "a battery policy does not read them"
    assert threshold.returncode == warned.returncode == 1  # on to the broker, which is not there


def test_output_into_a_closed_pipe_stops_quietly() -> None:
    """``battery-worker backtest FILE | head -1``: the reader has left; no error line, exit 128 + SIGPIPE."""
    command = [sys.executable, "-m", "battery_worker.cli", "backtest", str(DATA / "ercot_2023-08-01_07.csv")]
    process = subprocess.Popen(
        [*command, "--policy", "threshold", "--no-png"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # before the command prints anything: its first line meets a closed pipe
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    assert stderr == "", stderr


@pytest.mark.broker
def test_demo_completes_on_the_embedded_broker(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    result = cli("--log-level", "WARNING", "demo", "--rate", "500", env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary: 336 actions" in result.stdout
    assert any(
        line.startswith("summary: 336 actions") and line.endswith("0 to DLQ, 0 stale")
        for line in result.stdout.splitlines()
    ), "the summary on one line in a pipe, not wrapped at 80 columns"
    assert "discharge" in result.stdout


@pytest.mark.broker
@pytest.mark.parametrize("live", [False, True], ids=["fed", "live"])
def test_the_demo_ends_when_a_tick_is_stale_or_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path, live: bool
) -> None:
    """Before: the demo waited for as many actions as ticks, so a repeated hour (stale) or a tick stamped
    in 2099 (dead-lettered; held back by the monitor) left it waiting for ever, with no summary."""
    rows = [f"2023-08-01 {hour:02d}:00:00+00:00,{20 + 5 * hour}" for hour in range(20)]
    rows.insert(5, rows[4])  # a repeated hour (at another price, the file is refused)
    rows.append("2099-01-01 00:00:00+00:00,50")
    prices = tmp_path / "prices.csv"
    prices.write_text("\n".join(["Datetime (UTC),Price (USD/MWh)", *rows]) + "\n")
    args = ["--log-level", "ERROR", "demo", "--file", str(prices), "--rate", "200"]
    result = cli(*args, *(["--live"] if live else []), "--bootstrap-servers", kafka_bootstrap, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("summary: ")]
    assert len(summary) == 1, result.stdout[-2000:]
    assert summary[0].startswith("summary: 20 actions")
    # Fed, the worker sees both; live, the monitor publishes neither (each timestamp once, none ahead).
    assert summary[0].endswith("0 to DLQ, 0 stale" if live else "1 to DLQ, 1 stale"), summary[0]


@pytest.mark.broker
def test_the_demo_takes_the_broker_from_the_environment_and_its_follow_hint_feeds_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Before: BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS was ignored (the demo started its own broker, though
    its help said otherwise), and --follow's hint, `battery-worker feed FILE`, fed another broker's or
    another topic than the demo's."""
    first = [f"2023-08-01 {hour:02d}:00:00+00:00,{20 + 5 * hour}" for hour in range(6)]
    later = [f"2023-08-01 {hour:02d}:00:00+00:00,{150 + hour}" for hour in range(6, 9)]
    for name, rows in (("first.csv", first), ("later.csv", later)):
        (tmp_path / name).write_text("\n".join(["Datetime (UTC),Price (USD/MWh)", *rows]) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    command = [sys.executable, "-m", "battery_worker.cli", "--log-level", "ERROR", "demo", "--follow"]
    command += ["--file", str(tmp_path / "first.csv"), "--rate", "200"]
    shown: list[str] = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:  # its pipes closed on the way out
        try:
            assert process.stdout is not None
            while not shown or not shown[-1].startswith("following: "):
                line = process.stdout.readline()
                assert line, f"the demo ended: {shown} {process.stderr.read() if process.stderr else ''}"
                shown.append(line.rstrip("\n"))
            assert not any("embedded" in line for line in shown), shown
            hint = re.fullmatch(r"following: feed more prices with `(.*)`; Ctrl\+C stops", shown[-1])
            assert hint is not None, shown[-1]
            feed = shlex.split(hint.group(1).replace("FILE", str(tmp_path / "later.csv")))
            assert f"--bootstrap-servers {kafka_bootstrap}" in hint.group(1)
            fed = cli(*feed[1:], env=env)
            assert fed.returncode == 0, fed.stderr
            for hour in range(6, 9):
                line = process.stdout.readline()
                assert line.startswith(f"2023-08-01 {hour:02d}:00"), (line, shown)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.broker
def test_demo_site_shows_the_machines_through_the_price_spike(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    result = cli("--log-level", "WARNING", "demo", "--site", "--rate", "500", env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary: 422 ticks" in result.stdout
    spike = [line for line in result.stdout.splitlines() if line.startswith("06-21 12:")]
    assert spike, "the event day is shown"
    assert any("mining  0.0 MW" in line for line in spike), "mining curtailed in the spike"
    assert any("mining 11.5 MW" in line and "battery -" in line for line in spike), "battery runs machines"
    evening = [line for line in result.stdout.splitlines() if line.startswith("06-21 18:")]
    assert any("mining 11.5 MW" in line for line in evening), "mining back when prices ease"


@pytest.mark.broker
def test_feed_run_status_and_history_export(
    kafka_bootstrap: str, new_topic_name: Callable[[], str], new_group_id: Callable[[], str], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, new_topic_name(), new_group_id())
    env = settings_env(settings)
    fed = cli("feed", str(DATA / "ercot_2023-08-01_07.csv"), "--site", "alpha", "--limit", "48", env=env)
    assert fed.returncode == 0, fed.stderr
    assert "published 48 ticks" in fed.stdout
    ran = cli("run", "--max-messages", "48", "--idle-timeout", "20", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    status = cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["alpha"]["ticks_applied"] == 48
    # As the worker writes it (a data engineer's review: "Z" here, "+00:00" in the topic: no join by string)
    assert json.loads(status.stdout)["alpha"]["last_tick_at"] == "2023-08-02T23:00:00+00:00"
    table = cli("status", env=env)
    rows = [line for line in table.stdout.splitlines() if "alpha" in line]
    assert len(rows) == 1, table.stdout  # piped: the whole row on one line, however wide
    cells = [cell.strip() for cell in rows[0].strip("│ ").split("│")]
    assert cells[0] == "alpha"
    assert cells[10:12] == ["48", "0"], cells  # ticks, stale
    assert cells[-3:-1] == ["-", "-"], "no carbon intensity: emissions unknown, not 0"
    assert cells[-1] == "threshold"
    assert "lag of group " in table.stdout
    assert "has committed nothing" not in table.stdout
    mistyped = cli("status", "--group-id", "no-such-group", env=env)
    assert mistyped.returncode == 0
    assert re.search(
        r"lag of group no-such-group on \S+: 48 \(.*\) \(group no-such-group has committed nothing on \S+: "
        r"is it the workers'\?\)",
        mistyped.stdout,
    ), "an observability review: a typo read as a lag of the whole topic, without a word"
    narrow = on_a_terminal(80, [sys.executable, "-m", "battery_worker.cli", "status"], env)
    assert "┃" not in narrow, "a table wider than the terminal is a paragraph a site"
    assert "alpha: charge % " in narrow
    assert "; ticks 48; stale 0; " in " ".join(narrow.split()), narrow
    out = tmp_path / "alpha.json"
    exported = cli("history", "export", "--site", "alpha", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    history = json.loads(out.read_text())
    assert len(history) == 48
    assert history[0]["timestamp"] < history[-1]["timestamp"]
    assert history[0]["timestamp"] == "2023-08-01T00:00:00+00:00", "as in the topic and its keys"
    assert {"action", "reason", "energy_price", "charge_after_mwh"} <= set(history[0])
    assert exported.stderr == ""
    as_csv = cli("history", "export", "--site", "alpha", "--out", str(tmp_path / "alpha.csv"), env=env)
    assert as_csv.returncode == 2, "hist.csv was written as JSON, 'wrote' and exit 0"
    assert "writes a JSON array; name the file .json" in as_csv.stderr
    assert not (tmp_path / "alpha.csv").exists()
    nothing = cli("history", "export", "--site", "alhpa", "--out", str(tmp_path / "none.json"), env=env)
    assert nothing.returncode == 1, "a mistyped site: the job could not be done (it exited 0 with [])"
    assert not (tmp_path / "none.json").exists()
    assert nothing.stderr.strip() == (
        f"battery-worker history: no history of site 'alhpa' in {settings.topics.history}; "
        f"{tmp_path / 'none.json'} not written"
    )


def on_a_terminal(columns: int, command: list[str], env: dict[str, str]) -> str:
    """What ``command`` shows on a terminal ``columns`` wide (a pseudo-terminal), its escapes removed."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    with subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env) as process:
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other side closed: the command is done
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=60) == 0, shown[-2000:]
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode()).replace("\r", "")


def test_a_reader_leaving_the_console_is_a_broken_pipe_not_a_failed_job() -> None:
    """rich exits 1 when stdout's reader leaves, which says the job failed (``status | head -1`` exited
    1); as a BrokenPipeError the command ends quietly with 128 + SIGPIPE, as ``print``'s output does."""

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    console = stdout_console(file=Gone())
    with pytest.raises(BrokenPipeError):
        console.print("battery status")


def test_a_replay_progress_line_gives_the_share_done_and_the_time_left() -> None:
    assert progress_line(450, 1000, 2.0) == "replay: 45% (450 of about 1,000 records, 225/s, about 2 s left)"
    assert progress_line(1000, 1000, 4.0) == "replay: 100% (1,000 of about 1,000 records, 250/s)"
    assert progress_line(1010, 1000, 4.0).startswith("replay: 100% (1,010 of about 1,000"), "an estimate"
    assert progress_line(300, None, 2.0) == "replay: 300 records (150/s)"


@pytest.mark.parametrize(
    ("argv", "level", "form"),
    [
        (["run"], "INFO", "auto"),
        (["--log-format", "text", "run", "--log-level", "DEBUG"], "DEBUG", "text"),
        (["--log-format", "text", "backtest", "f.csv", "--log-format", "json"], "INFO", "json"),
        (["history", "export", "--site", "a", "--out", "x", "--log-level", "ERROR"], "ERROR", "auto"),
    ],
)
def test_the_log_options_are_taken_after_the_command_too(
    argv: list[str], level: str, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'battery-worker run --log-format json' said 'unrecognized arguments: --log-format json'."""
    monkeypatch.delenv("BATTERY_WORKER_LOG_LEVEL", raising=False)
    monkeypatch.delenv("BATTERY_WORKER_LOG_FORMAT", raising=False)
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, form)


@pytest.mark.parametrize("site", [False, True])
def test_the_demo_runs_its_own_policy_whatever_policy_a_config_file_names(tmp_path: Path, site: bool) -> None:
    """A file's [policy] params were deep-merged into the demo's: 'unknown parameters for policy
    threshold' with mpc's carbon_price, and 'for policy site' with the docs' threshold example."""
    from battery_worker.cli.demo import DEMO_POLICY, SITE_POLICY, _demo_settings

    config = tmp_path / "c.toml"
    config.write_text(
        '[policy]\nname = "mpc"\nparams = {carbon_price = 10.0}\n[battery]\ncapacity_mwh = 50.0\n'
    )
    args = argparse.Namespace(config=config, site=site)
    settings = _demo_settings(args, "127.0.0.1:9092", fresh_topics=True)
    expected = SITE_POLICY if site else DEMO_POLICY
    assert (settings.policy.name, settings.policy.params) == (expected["name"], expected["params"])
    assert settings.battery.capacity_mwh == 50.0, "the rest of the file is taken"


def test_the_demo_on_the_embedded_broker_has_a_short_session_unless_one_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tansu holds a first join for half the session: with the default 10 s the demo waited 5 s for its
    partitions. A session the file or the environment sets is kept, and so is the default elsewhere."""
    from battery_worker.cli.demo import EMBEDDED_SESSION_MS, _demo_settings
    from battery_worker.settings import load_settings

    for name in [n for n in os.environ if n.startswith("BATTERY_WORKER_")]:
        monkeypatch.delenv(name)
    plain = argparse.Namespace(config=None, site=False)
    default = load_settings(None).worker.session_timeout_ms
    assert default > EMBEDDED_SESSION_MS
    embedded = _demo_settings(plain, "127.0.0.1:9092", fresh_topics=False).worker
    assert (embedded.session_timeout_ms, embedded.heartbeat_interval_ms) == (EMBEDDED_SESSION_MS, 1000)
    assert _demo_settings(plain, "127.0.0.1:9092", fresh_topics=True).worker.session_timeout_ms == default
    config = tmp_path / "c.toml"
    config.write_text("[worker]\nsession_timeout_ms = 8000\n")
    from_file = argparse.Namespace(config=config, site=False)
    assert _demo_settings(from_file, "127.0.0.1:9092", fresh_topics=False).worker.session_timeout_ms == 8000
    config.write_text("[worker]\nheartbeat_interval_ms = 4000\n")
    kept = _demo_settings(from_file, "127.0.0.1:9092", fresh_topics=False).worker
    assert (kept.session_timeout_ms, kept.heartbeat_interval_ms) == (default, 4000), "a valid pair stays"
    monkeypatch.setenv("BATTERY_WORKER_WORKER__SESSION_TIMEOUT_MS", "7000")
    assert _demo_settings(plain, "127.0.0.1:9092", fresh_topics=False).worker.session_timeout_ms == 7000
