"""Worker settings: defaults ← TOML file ← environment ← command-line flags (the later wins).

Environment variables use the prefix ``BATTERY_WORKER_`` and ``__`` between levels, e.g.
``BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS`` or ``BATTERY_WORKER_BATTERY__CAPACITY_MWH``. The conventional
``KAFKA_BOOTSTRAP_SERVERS`` is honoured too. Secrets are ``SecretStr``: they print as ``**********``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from battery_worker.battery_config import BatteryConfig
from battery_worker.chemistries import CHEMISTRIES, chemistry_fields
from battery_worker.dispatch import DECISION_RULES
from battery_worker.emissions import DEFAULT_CARRY_HOURS
from battery_worker.errors import InvalidConfig, InvalidValue
from battery_worker.fleet.model import SiteModel
from battery_worker.fleet.settings import config_error
from battery_worker.sites import PolicyChoice, SiteDirectory, SiteOverride
from battery_worker.strict_numbers import refuse_bool_for_number
from battery_worker.ticks import DEFAULT_SITE_ID, SiteId

log = logging.getLogger(__name__)

_PRESETS = ", ".join(CHEMISTRIES)
"""The chemistry presets' names, as the settings' descriptions list them (one place: ``chemistries.py``)."""

ProcessingGuarantee = Literal["at-least-once", "exactly-once"]
"""at-least-once: a crash re-emits byte-identical events; exactly-once: Kafka transactions, no re-emits."""

DEFAULT_MAX_TICK_AHEAD_S = 3600.0
"""How far a tick may be stamped past its record's Kafka timestamp before it is a dead letter."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The six topics the worker reads and writes; the defaults here are the only place they are named."""

    prices: str = "prices"
    actions: str = "battery.actions"
    status: str = "battery.status"
    state: str = "battery.state"
    history: str = "battery.history"
    dlq: str = "prices.dlq"


_DEFAULT_TOPICS = TopicNames()
_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
_HOST = re.compile(r"[A-Za-z0-9_.-]+")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` is not a legal Kafka topic name (the broker's own rule), or None."""
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        return f"{name[:60]!r} is not a topic name: 1-249 characters of A-Z a-z 0-9 . _ -"
    return None


def bootstrap_address_problem(address: str) -> str | None:
    """Why ``address`` (one ``host[:port]`` of a bootstrap list) is not usable, or None when it is.

    Checked here because aiokafka reports a malformed address as a bare ``ValueError`` from deep inside
    the client, long after start-up, and accepts ports such as 0 or 99999 it can never connect to.
    """
    text = address.strip()
    if "://" in text:
        return "a Kafka address is HOST:PORT (localhost:9092), not a URL"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in brackets is not an IPv6 address"
        if rest and not rest.startswith(":"):
            return "expected [IPv6]:PORT"
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            return "write an IPv6 address in brackets, e.g. [::1]:9092"
        if not _HOST.fullmatch(host):
            return "expected HOST:PORT (a host name or address, then a port)"
        port = port_text if sep else None
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 1 to 65535"
    return None


class KafkaSettings(BaseModel):
    model_config = _FROZEN

    bootstrap_servers: str = "localhost:9092"
    client_id: str = Field("battery-worker", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    request_timeout_ms: int = Field(30_000, gt=0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _addresses_are_usable(cls, value: str) -> str:
        addresses = value.split(",")
        for address in addresses:
            problem = bootstrap_address_problem(address)
            if problem is not None:
                raise ValueError(f"{address.strip()!r}: {problem}")
        return ",".join(address.strip() for address in addresses)

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if _blank(getattr(self, name))
            ]
            if missing:
                raise ValueError(
                    f"security_protocol={self.security_protocol} needs {', '.join(missing)} "
                    "(BATTERY_WORKER_KAFKA__SASL_MECHANISM / __SASL_USERNAME / __SASL_PASSWORD)"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}={str(path)!r} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both or neither")
        if not self.security_protocol.startswith("SASL"):
            # Credentials beside a protocol without SASL are never sent: the client connected without
            # authenticating, exit 0 (a security review forgot the protocol variable).
            given = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if not _blank(getattr(self, name))
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} given, but security_protocol={self.security_protocol} sends no "
                    "credentials: set kafka.security_protocol (BATTERY_WORKER_KAFKA__SECURITY_PROTOCOL) to "
                    "SASL_SSL or SASL_PLAINTEXT, or leave them out"
                )
        return self


def _blank(value: object) -> bool:
    """Unset, or set to nothing: an empty SASL user passed the check and failed at connection."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is None or (isinstance(value, str) and not value.strip())


def _not_blank(value: str | None) -> str | None:
    if value is not None and _blank(value):
        raise InvalidConfig("", value, "must not be blank (leave it unset instead)")
    return value


def _check_backoff(initial: float, longest: float) -> None:
    if initial > longest:  # the first wait was the initial one, longer than the longest
        raise InvalidConfig("backoff_initial_s", initial, f"must not exceed backoff_max_s ({longest:g})")


class TopicSettings(BaseModel):
    model_config = _FROZEN

    prices: str = _DEFAULT_TOPICS.prices
    actions: str = _DEFAULT_TOPICS.actions
    status: str = _DEFAULT_TOPICS.status
    state: str = _DEFAULT_TOPICS.state
    history: str = _DEFAULT_TOPICS.history
    dlq: str = _DEFAULT_TOPICS.dlq
    # 2e9 partitions made Tansu ask for 192 GB; a replication factor is Kafka's int16
    partitions: int = Field(3, ge=1, le=10_000, description="partitions of topics created by the worker")
    replication_factor: int = Field(1, ge=1, le=32_767)
    create: bool = Field(True, description="create missing topics at start")

    @field_validator("prices", "actions", "status", "state", "history", "dlq")
    @classmethod
    def _legal_topic_name(cls, value: str) -> str:
        problem = topic_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _six_topics(self) -> Self:
        # One topic in two roles made the worker read its own actions back as prices and dead-letter them.
        seen: dict[str, str] = {}
        for role, name in asdict(self.names()).items():
            if name in seen:
                raise ValueError(f"topics.{role} is {name!r}, the same topic as topics.{seen[name]}")
            seen[name] = role
        return self

    def names(self) -> TopicNames:
        return TopicNames(self.prices, self.actions, self.status, self.state, self.history, self.dlq)


class WorkerSettings(BaseModel):
    model_config = _FROZEN

    group_id: str = Field("battery-worker", min_length=1, max_length=249)
    group_instance_id: str | None = Field(
        None, description="static membership: a stable id per process avoids rebalances on quick restarts"
    )
    max_batch_records: int = Field(2000, ge=1, le=1_000_000)
    poll_timeout_ms: int = Field(100, ge=1, le=60_000)  # a longer poll held --idle-timeout and a stop
    commit_interval_ms: int = Field(
        1000,
        ge=0,
        description=(
            "at-least-once: write state records and commit offsets at most this often (0: every batch); "
            "a crash re-emits up to this much output, byte-identical. Exactly-once commits every batch"
        ),
    )
    max_message_bytes: int = Field(65_536, ge=64, le=104_857_600)
    accept_unknown_sites: bool = Field(
        True,
        description=(
            "false: a tick of a site not configured under [sites] goes to the DLQ (reason site_id), so a "
            "typo in a key makes no site; true: every site id gets the default battery"
        ),
    )
    max_tick_ahead_s: float = Field(
        DEFAULT_MAX_TICK_AHEAD_S,
        gt=0,
        description="a tick stamped later than its record's Kafka timestamp plus this goes to the DLQ",
    )
    session_timeout_ms: int = Field(10_000, ge=1000, le=1_800_000)  # Kafka's group.max.session.timeout.ms
    heartbeat_interval_ms: int = Field(1_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000, le=86_400_000)
    restore_timeout_s: float = Field(120.0, gt=0)
    shutdown_timeout_s: float = Field(
        20.0, gt=0, description="bounds the whole stop (in-flight batch and closing); below the grace period"
    )
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve /metrics, /health and /ready on this port (none: off)"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address of that server; the container image sets 0.0.0.0"
    )
    processing_guarantee: ProcessingGuarantee = Field(
        "at-least-once",
        description="exactly-once commits each batch's outputs and offsets in Kafka transactions",
    )
    transaction_timeout_ms: int = Field(
        60_000,
        ge=1000,
        le=900_000,
        description="exactly-once: the broker aborts a transaction left open this long (a dead worker's)",
    )

    @field_validator("group_instance_id", "metrics_host")
    @classmethod
    def _given_or_unset(cls, value: str | None) -> str | None:
        # metrics_host '' listened on every interface; group_instance_id '' is no id
        return _not_blank(value)

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Self:
        _check_backoff(self.backoff_initial_s, self.backoff_max_s)
        return self

    @model_validator(mode="after")
    def _heartbeats_fit_in_the_session(self) -> Self:
        # Java's client refuses the same: a member that beats no more often than its session lasts is
        # dropped between beats, and the group rebalances for ever without committing an offset.
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"worker.heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"worker.session_timeout_ms ({self.session_timeout_ms}); a third of it is usual"
            )
        return self

    @model_validator(mode="after")
    def _transactions_outlive_the_session(self) -> Self:
        # A worker paused longer than its transaction timeout but shorter than its session would find its
        # transaction aborted and its producer fenced while still owning the partition; with the timeout
        # above the session, such a pause always ends in a rebalance that hands the partition out anew.
        if self.exactly_once and self.transaction_timeout_ms <= self.session_timeout_ms:
            raise ValueError(
                f"worker.transaction_timeout_ms ({self.transaction_timeout_ms}) must exceed "
                f"worker.session_timeout_ms ({self.session_timeout_ms}) with exactly-once"
            )
        return self

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly-once"


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MonitorSettings(BaseModel):
    """``battery-worker monitor``: which price API to poll, how often, and what to send it.

    Header values (an API key) are never settings: ``headers_from_env`` names, per header, the environment
    variable that holds its value, so the value stays out of files, flags and logs.
    """

    model_config = _FROZEN

    url: str | None = Field(None, description="the price API (http or https), MARA format")
    site: SiteId = Field(DEFAULT_SITE_ID, description="the key of the ticks published")
    interval_s: float = Field(60.0, gt=0, description="between polls (the MARA API changes every 5 min)")
    timeout_s: float = Field(
        10.0,
        gt=0,
        description="a poll's whole HTTP request, connect to last byte; and the broker's acknowledgement "
        "of what the poll publishes",
    )
    backoff_initial_s: float = Field(1.0, gt=0, description="the first wait after a failed poll, doubled")
    backoff_max_s: float = Field(300.0, gt=0, description="the longest wait after failed polls")
    max_answer_bytes: int = Field(16_777_216, ge=1024, description="a larger answer is malformed")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="the monitor's /metrics, /health, /ready and /live (none: off)"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address of that server; apart from the worker's, which may run beside it"
    )
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="HTTP header name → the environment variable holding its value"
    )

    @field_validator("metrics_host")
    @classmethod
    def _given_host(cls, value: str) -> str | None:
        return _not_blank(value)

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Self:
        _check_backoff(self.backoff_initial_s, self.backoff_max_s)
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        if value is not None and "@" in urllib.parse.urlsplit(value).netloc:
            raise ValueError(
                "a user and password in the URL are not sent (and would be logged): put them in a header, "
                "monitor.headers_from_env (Authorization)"
            )
        return value

    @field_validator("headers_from_env")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for header, variable in value.items():
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not _ENV_NAME.fullmatch(variable):
                raise ValueError(f"{variable!r} (for header {header}) is not an environment variable name")
        return value

    def headers(self) -> dict[str, str]:
        """The headers with their values read from the environment now; a variable unset is an error."""
        missing = [variable for variable in self.headers_from_env.values() if variable not in os.environ]
        if missing:
            raise InvalidConfig(
                "monitor.headers_from_env", sorted(self.headers_from_env), f"{', '.join(missing)} not set"
            )
        headers = {header: os.environ[variable] for header, variable in self.headers_from_env.items()}
        for header, value in headers.items():
            problem = _header_value_problem(value)
            if problem is not None:  # named by its variable: the value may be a secret
                variable = self.headers_from_env[header]
                problem = f"{variable} {problem}, so it cannot be sent as {header}"
                raise InvalidConfig("monitor.headers_from_env", header, problem)
        return headers


def _header_value_problem(value: str) -> str | None:
    """Why an HTTP client refuses to send ``value`` as a header's value (``http.client``: Latin-1, no line
    break), or None. Found at the first poll, it stopped the monitor as "unexpected ... (a bug)" (a review
    set a key holding an ellipsis)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "holds a character outside Latin-1"
    if any(character in value for character in "\r\n\0"):
        return "holds a line break or a NUL"
    return None


class EmissionsSettings(BaseModel):
    model_config = _FROZEN

    carry_hours: float = Field(
        DEFAULT_CARRY_HOURS,
        ge=0,
        description="a missing carbon intensity is the last known one for this long, then unknown",
    )


class PolicySettings(BaseModel):
    model_config = _FROZEN

    name: str = "threshold"
    params: dict[str, Any] = Field(default_factory=dict)

    def choice(self) -> PolicyChoice:
        return PolicyChoice(self.name, dict(self.params))


class SiteSettings(BaseModel):
    model_config = _FROZEN

    battery: dict[str, Annotated[float | str, Field(union_mode="left_to_right")]] = Field(
        default_factory=dict,
        description="battery fields replacing the default's (numbers; cycle_day_timezone)",
    )
    battery_type: str | None = Field(None, description=f"a chemistry preset ({_PRESETS}); battery fields win")
    policy: PolicySettings | None = None
    site: dict[str, Any] = Field(
        default_factory=dict, description="fields of the site model replacing the default site's"
    )

    @field_validator("battery_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        return _known_battery_type(value)

    @field_validator("site", mode="before")
    @classmethod
    def _machines_from_json(cls, value: Any) -> Any:
        return machines_from_json(value)


class Settings(BaseSettings):
    """Everything the worker needs. Frozen: read once at start, logged once with secrets masked."""

    model_config = SettingsConfigDict(
        env_prefix="BATTERY_WORKER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    monitor: MonitorSettings = MonitorSettings()
    battery: BatteryConfig = BatteryConfig()
    battery_type: str | None = Field(
        None, description=f"a chemistry preset ({_PRESETS}) under the battery table: fields set there win"
    )
    policy: PolicySettings = PolicySettings()
    emissions: EmissionsSettings = EmissionsSettings()
    site: SiteModel = Field(SiteModel(), description="grid limits and fleet (fleet/model.py)")
    sites: dict[SiteId, SiteSettings] = Field(default_factory=dict)

    @field_validator("battery_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        return _known_battery_type(value)

    @field_validator("site", mode="before")
    @classmethod
    def _machines_from_json(cls, value: Any) -> Any:
        return machines_from_json(value)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        refuse_bool_for_number(cls, data)
        return data

    @model_validator(mode="before")
    @classmethod
    def _preset_under_the_battery_table(cls, data: Any) -> Any:
        """The battery type's preset fills the battery fields the table (file, environment) leaves unset."""
        if not isinstance(data, dict) or not data.get("battery_type"):
            return data
        battery = data.get("battery", {})
        if not isinstance(battery, dict):
            return data  # a BatteryConfig given whole: every field of it is explicit
        try:
            preset = chemistry_fields(str(data["battery_type"]))
        except InvalidConfig:
            return data  # the field validator names the bad type
        return {**data, "battery": {**preset, **battery}}

    def site_directory(self) -> SiteDirectory:
        """The sites' setups. A site's own policy table is layered over ``[policy]`` as a later layer is
        (:func:`policy_over`): naming the same policy, its parameters change the default's key by key (a
        fleet review's ``discharge_above = 150`` for one site had dropped the file's ``charge_below = 25``
        for the code's 1.7); naming another, it has its own only."""
        overrides = {
            site_id: SiteOverride(
                site.battery,
                None
                if site.policy is None
                else policy_over(self.policy, site.policy.name, site.policy.params).choice(),
                site.battery_type,
                site.site,
            )
            for site_id, site in self.sites.items()
        }
        return SiteDirectory(
            self.battery,
            self.policy.choice(),
            overrides,
            site=self.site,
            carry_hours=self.emissions.carry_hours,
            accept_unknown=self.worker.accept_unknown_sites,
        )

    def decisions_fingerprint(self) -> str:
        """A digest of every setting a site's decisions depend on (battery, preset, policy, site model, the
        sites' overrides, emissions, ``worker.max_tick_ahead_s``, ``accept_unknown_sites`` and
        ``max_message_bytes``) and the code's :data:`~battery_worker.dispatch.DECISION_RULES`, the same in
        every process given them.

        Settings live in each process: during a rolling change, a site's decisions followed whichever worker
        owned its partition, flipping between two configurations, and nothing showed the workers differed
        (a fleet operator's review). Logged at start and in ``battery_worker_settings_info``.
        """
        deciding = self.model_dump(
            mode="json", include={"battery", "battery_type", "policy", "emissions", "site", "sites"}
        )
        deciding["max_tick_ahead_s"] = self.worker.max_tick_ahead_s
        deciding["accept_unknown_sites"] = self.worker.accept_unknown_sites
        deciding["max_message_bytes"] = self.worker.max_message_bytes
        deciding["decision_rules"] = DECISION_RULES
        canonical = json.dumps(deciding, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def masked(self) -> dict[str, Any]:
        """The settings as a dict for the start-up log line; secrets stay masked, the monitor URL's query
        values too (:func:`shown_url`)."""
        shown = self.model_dump(mode="json")
        if self.monitor.url is not None:
            shown["monitor"]["url"] = shown_url(self.monitor.url)
        sites = shown["sites"]
        if len(sites) > _SITES_SHOWN:  # 2,000 sites made it one line of 324 KB, which log shippers cut
            first = dict(list(sites.items())[:_SITES_SHOWN])
            shown["sites"] = {**first, "...": f"and {len(sites) - _SITES_SHOWN:,} more sites (not shown)"}
        return shown


_SITES_SHOWN = 10
"""Sites' overrides shown in the start-up line; the rest are counted."""


def shown_url(url: str) -> str:
    """A URL as logs and errors show it, a user and password and each query value masked: price APIs take
    their key as ``?api_key=...``, and a log is read by more people than the settings are."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not a URL at all: nothing in it is known to be safe
        return "***"
    names = (pair.partition("=") for pair in parts.query.split("&") if pair)
    query = "&".join(f"{name}=***" if equals else name for name, equals, _ in names)
    _, at, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}" if at else host, query=query))


def machines_from_json(site: Any) -> Any:
    """``machines`` given as JSON text, as an environment variable does (``BATTERY_WORKER_SITE__MACHINES``).

    pydantic-settings decodes JSON only for fields it sees as lists or models; the site model is a
    dataclass, so the list of machines arrived as text and was refused as "not a valid tuple".
    """
    if not isinstance(site, dict) or not isinstance(site.get("machines"), str):
        return site
    try:
        machines = json.loads(site["machines"])
    except ValueError as error:
        problem = f"not JSON ({error}): a list of {{name, power_kw, output, count, paid_by}}"
        raise InvalidConfig("machines", site["machines"], problem) from None
    refuse_bool_for_number(SiteModel, {"machines": machines})
    return {**site, "machines": machines}


def _known_battery_type(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        chemistry_fields(value)
    except InvalidConfig as error:
        raise ValueError(error.problem) from None
    return value.strip().lower()


BOOTSTRAP_VARIABLES = ("BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
"""Where the bootstrap servers are read from before the settings file, in this order."""


def _check_environment_sections() -> None:
    """A variable of a section that does not exist is refused, as one of a field that does not exist is.

    pydantic-settings reads only the sections it knows, so ``BATTERY_WORKER_WORKR__GROUP_ID`` was ignored
    without a word while ``BATTERY_WORKER_WORKER__GROUPID`` was refused. The value is not shown: it may be
    a secret whose name was mistyped.
    """
    prefix = str(Settings.model_config.get("env_prefix", ""))
    for name in sorted(os.environ):
        if not name.upper().startswith(prefix.upper()):
            continue
        rest = name[len(prefix) :]
        if "__" not in rest:
            _check_single_underscore(name, rest.lower(), prefix)
            continue
        section = rest.split("__", 1)[0].lower()
        if section not in Settings.model_fields:
            known = ", ".join(sorted(Settings.model_fields))
            raise InvalidConfig(name, "…", f"no such section of the settings (known: {known})")


def _check_single_underscore(name: str, rest: str, prefix: str) -> None:
    """``BATTERY_WORKER_KAFKA_BOOTSTRAP_SERVERS`` (one underscore where the sections take two) named a field
    of a section, and was ignored: the worker went to localhost:9092 without a word. A variable that reads
    as a section and one of its fields is refused with the name meant; any other name under the prefix is
    left alone (the CLI's own, one a monitor header is read from: ``BATTERY_WORKER_URL`` is no mistake)."""
    if rest in Settings.model_fields:
        return
    for section, info in Settings.model_fields.items():
        field_name = rest.removeprefix(f"{section}_")
        if field_name != rest and field_name in _field_names(info.annotation):
            meant = f"{prefix}{section}__{field_name}".upper()
            raise InvalidConfig(
                name, "…", f"no such setting; a section's field takes two underscores: {meant}"
            )


def _field_names(annotation: Any) -> set[str]:
    if is_dataclass(annotation):
        return {field.name for field in fields(annotation)}
    return set(getattr(annotation, "model_fields", {}))


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    choose_policy: Callable[[PolicySettings], PolicySettings] | None = None,
) -> Settings:
    """Settings from a TOML file, the environment and explicit overrides, validated as one.

    ``choose_policy`` turns the policy the file and the environment configure into the one to run (the
    command line's ``--policy``), before the policy is built and checked: parameters configured for a
    policy the flags replace are not checked against it.

    Raises :class:`InvalidConfig` naming the first bad field.
    """
    toml_path = None if config_file is None else Path(config_file)
    toml_data = {} if toml_path is None else _check_toml(toml_path)
    _check_environment_sections()
    init: dict[str, Any] = dict(overrides or {})
    own, plain = BOOTSTRAP_VARIABLES
    bootstrap = os.environ.get(plain)
    explicit = "bootstrap_servers" in init.get("kafka", {})
    if bootstrap and not explicit and own not in os.environ:
        init["kafka"] = {**init.get("kafka", {}), "bootstrap_servers": bootstrap}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    try:
        settings: Settings = _Loaded(**init)
        settings = _policy_params_of_the_layer_naming_it(settings, toml_data)
        if choose_policy is not None:
            settings = settings.model_copy(update={"policy": choose_policy(settings.policy)})
        try:
            settings.site_directory()
        except InvalidConfig as error:  # a site's own setting, checked as its battery and policy are built
            raise _site_refusal_sourced(error, init, toml_data, toml_path) from None
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        if isinstance(first.get("ctx", {}).get("error"), InvalidValue):
            raise config_error("", error) from None  # a model's own check names its field
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        # A section's own check (kafka's SASL settings without a SASL protocol) is of several settings,
        # each given anywhere: naming where the section was given said "given by a flag" of a refusal of
        # variables, where the flag gave the bootstrap address alone (a docs review).
        whole_section = len(first["loc"]) == 1 and first["type"] == "value_error"
        given = "" if whole_section else _where_given(first["loc"], init, toml_data, toml_path)
        if first["type"] in _NO_SUCH_FIELD and first["loc"][0] in _SECTIONS_WITHOUT_SECRETS:
            raise InvalidConfig(
                field, first.get("input"), f"no such field ({given})" if given else "no such field"
            ) from None
        if first["type"] in _NO_SUCH_FIELD:  # a mistyped name: its value may be a secret (sasl_pasword)
            said = f"{given}; its value is not shown" if given else "its value is not shown"
            raise InvalidConfig(field, "**********", f"no such field ({said})") from None
        problem = first["msg"].removeprefix("Value error, ")  # pydantic's prefix to a check's own ValueError
        masked = _masked_input(first["loc"], first.get("input"))
        raise InvalidConfig(field, masked, f"{problem} ({given})" if given else problem) from None
    except SettingsError as error:  # a variable pydantic-settings could not decode (JSON, a bare section)
        problem = "not JSON, which a variable giving a section, a list or a table must be"
        raise InvalidConfig("environment", _undecodable_variable(error), problem) from None
    _warn_of_a_password_sent_in_the_clear(settings.kafka)
    _warn_of_a_key_others_can_read(settings.kafka)
    return settings


_NO_SUCH_FIELD = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
_SECTIONS_WITHOUT_SECRETS = frozenset({"battery", "policy", "emissions", "site", "sites"})
"""The domain's sections, where a mistyped name's value is shown, as a site's own is: numbers and names,
never a secret. Elsewhere it is hidden: ``kafka`` and ``monitor`` hold secrets, and a password may be
given under a wrong section (or a mistyped one)."""
"""pydantic's words for a name a model (``extra_forbidden``) or a dataclass such as ``BatteryConfig``
(``unexpected_keyword_argument``) does not have: both are said "no such field", as a site's own are."""


def _warn_of_a_password_sent_in_the_clear(kafka: KafkaSettings) -> None:
    """SASL PLAIN without TLS sends the password as it is, readable on the network: allowed (a test
    cluster, a network of its own), but said once (a security review: nothing was said)."""
    if kafka.security_protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN":
        log.warning(
            "kafka.sasl_mechanism PLAIN over security_protocol SASL_PLAINTEXT sends the password "
            "unencrypted: use SASL_SSL, or a SCRAM mechanism"
        )


def _where_given(
    loc: tuple[int | str, ...],
    overrides: Mapping[str, Any],
    toml_data: Mapping[str, Any],
    toml_path: Path | None,
) -> str:
    """Where a refused setting came from, when it can be told, in the layers' order: a flag (``given by a
    flag``), the variable (``given by BATTERY_WORKER_KAFKA__SASL_PASWORD``), the file (``in worker.toml``);
    else "". A refusal naming only ``kafka.sasl_pasword`` left the operator to search the environment, the
    file and the flags for it. A list's item is named by the list."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        parts.append(str(part))
    if not parts:
        return ""
    if _holds(overrides, parts):
        return "given by a flag"
    prefix = str(Settings.model_config.get("env_prefix", ""))
    variables = {name.upper(): name for name in os.environ}
    for depth in range(len(parts), 0, -1):  # the setting's own variable, else a section's JSON holding it
        named = variables.get((prefix + "__".join(parts[:depth])).upper())
        if named is not None and (
            depth == len(parts) or _holds(_json_table(os.environ[named]), parts[depth:])
        ):
            return f"given by {named}"
    below = (prefix + "__".join(parts) + "__").upper()  # a variable setting a field under a mistyped name
    deeper = sorted(name for upper, name in variables.items() if upper.startswith(below))
    if deeper:
        return f"given by {deeper[0]}"
    return f"in {toml_path}" if toml_path is not None and _holds(toml_data, parts) else ""


def _site_refusal_sourced(
    error: InvalidConfig, overrides: Mapping[str, Any], toml_data: Mapping[str, Any], toml_path: Path | None
) -> InvalidConfig:
    """A site's refused setting with where it came from. A site's policy parameter may come from
    ``[policy]``, under the site's own (``site_directory``): then that is named (a review of the diff saw
    ``sites.west.policy.params.charge_below=25.0`` refused, a key the file never gave the site)."""
    parts = error.field.split(".")
    given = _where_given(tuple(parts), overrides, toml_data, toml_path)
    if not given and parts[0] == "sites" and parts[2:4] == ["policy", "params"] and len(parts) == 5:
        default = _where_given(("policy", "params", parts[4]), overrides, toml_data, toml_path)
        if default:
            given = f"{parts[4]} from [policy], {default}, under the site's own parameters"
    if not given:
        return error
    return InvalidConfig(error.field, error.value, f"{error.problem} ({given})")


def _holds(table: Mapping[str, Any], path: list[str]) -> bool:
    found: Any = table
    for part in path:
        if not isinstance(found, Mapping) or part not in found:
            return False
        found = found[part]
    return True


def _undecodable_variable(error: SettingsError) -> str:
    """The variable behind pydantic-settings' 'error parsing value for field "monitor"', named (not its
    value: it may hold a secret)."""
    found = re.search(r'field "(\w+)"', str(error))
    section = found.group(1).upper() if found else ""
    variable = f"BATTERY_WORKER_{section}"
    names = sorted(
        name for name in os.environ if name.upper() == variable or name.upper().startswith(f"{variable}__")
    )
    return ", ".join(names) or "BATTERY_WORKER_*"


def policy_over(earlier: PolicySettings, name: str | None, params: Mapping[str, Any]) -> PolicySettings:
    """A later layer's policy (the environment's over the file's, the flags' over both): naming the same
    policy, or none, it changes the earlier parameters key by key; naming another, it has its own only."""
    kept = dict(earlier.params) if name in (None, earlier.name) else {}
    return PolicySettings(name=name or earlier.name, params={**kept, **params})


def _policy_params_of_the_layer_naming_it(settings: Settings, toml_data: dict[str, Any]) -> Settings:
    """A policy's parameters are for the policy named beside them: where the environment names another
    policy than the file, the file's parameters are left out, as ``--policy`` leaves them out. So for the
    default policy (``[policy]``) and for each site's (``[sites.<id>.policy]``).

    Layers are deep-merged, so ``BATTERY_WORKER_POLICY__NAME=mpc`` over a file's ``threshold`` table kept
    its ``charge_below``, and ``mpc`` refused it: a valid file and variable that could not run together.
    """
    variables = {name.upper(): value for name, value in os.environ.items()}
    policy = _layered(settings.policy, toml_data.get("policy"), "BATTERY_WORKER_POLICY", variables)
    file_sites = toml_data.get("sites")
    sites = dict(settings.sites)
    for site_id, site in settings.sites.items():
        in_file = file_sites.get(site_id, {}) if isinstance(file_sites, dict) else {}
        prefix = f"BATTERY_WORKER_SITES__{site_id.upper()}__POLICY"
        if site.policy is not None and isinstance(in_file, dict):
            layered = _layered(site.policy, in_file.get("policy"), prefix, variables)
            sites[site_id] = site.model_copy(update={"policy": layered})
    return settings.model_copy(update={"policy": policy, "sites": sites})


def _layered(
    merged: PolicySettings, in_file: object, prefix: str, variables: Mapping[str, str]
) -> PolicySettings:
    """``merged`` (the file's table and the variables under ``prefix``, deep-merged) as the variables'
    policy over the file's (:func:`policy_over`)."""
    table = _json_table(variables.get(prefix))
    named = variables.get(f"{prefix}__NAME", table.get("name"))
    if named is None or not isinstance(in_file, dict):
        return merged
    file_params = in_file.get("params", {})
    file_policy = PolicySettings(
        name=str(in_file.get("name", PolicySettings().name)).strip(),
        params=dict(file_params) if isinstance(file_params, dict) else {},
    )
    given = {
        name.removeprefix(f"{prefix}__PARAMS__").lower()
        for name in variables
        if name.startswith(f"{prefix}__PARAMS__")
    }
    given |= {str(key).lower() for key in _json_table(variables.get(f"{prefix}__PARAMS"))}
    given |= {str(key).lower() for key in _json_table(table.get("params"))}
    own = {key: value for key, value in merged.params.items() if key.lower() in given}
    return policy_over(file_policy, str(named).strip(), own)


def _json_table(text: object) -> dict[str, Any]:
    """A variable's JSON table, or {} (pydantic-settings names a variable that is not JSON)."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return {}
    try:
        table = json.loads(text)
    except ValueError:
        return {}
    return table if isinstance(table, dict) else {}


def _check_toml(path: Path) -> dict[str, Any]:
    """A missing, unreadable or malformed settings file is one :class:`InvalidConfig`, not a traceback."""
    if path.is_dir():
        raise InvalidConfig("config", str(path), "is a directory, not a TOML file")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InvalidConfig("config", str(path), "no such file") from None
    except OSError as error:
        raise InvalidConfig("config", str(path), f"cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise InvalidConfig("config", str(path), "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidConfig("config", str(path), f"is not valid TOML: {error}") from None
    _warn_of_secrets_others_can_read(path, data)
    return data


def _warn_of_secrets_others_can_read(path: Path, data: Mapping[str, Any]) -> None:
    """A password in a file its group or everyone may read: said once, as ssh says of a key (a security
    review found a 644 file with ``sasl_password`` taken without a word). A warning, not a refusal: a
    container's mounted Secret may be 644 in a pod no one else enters."""
    kafka = data.get("kafka")
    held = sorted(_SECRET_FIELDS & set(kafka)) if isinstance(kafka, dict) else []
    if not held or os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        variables = ", ".join(f"BATTERY_WORKER_KAFKA__{name.upper()}" for name in held)
        log.warning(
            "%s holds kafka.%s and users other than its owner may read it (mode %03o): chmod 600 it, or give "
            "the secret by %s",
            path,
            " and kafka.".join(held),
            mode,
            variables,
        )


_SECRET_FIELDS = frozenset({"sasl_password", "ssl_password"})


def _warn_of_a_key_others_can_read(kafka: KafkaSettings) -> None:
    """A client key without a password in a file its group or everyone may read: said once, as for a
    password in the settings file (a security review: a 644 unencrypted key got no word)."""
    key = kafka.ssl_keyfile
    if key is None or os.name != "posix":
        return
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077 and b"ENCRYPTED" not in key.read_bytes()[:4096]:  # PEM's mark of an encrypted key
        log.warning(
            "kafka.ssl_keyfile %s is not encrypted and users other than its owner may read it (mode %03o): "
            "chmod 600 it",
            key,
            mode,
        )


def _masked_input(loc: tuple[int | str, ...], value: Any) -> Any:
    """The offending input for an error message, with secrets masked: a model-level error (an incomplete
    SASL setting) carries the whole ``kafka`` section as its input, password included."""
    if loc and loc[-1] in _SECRET_FIELDS:
        return "**********"
    if tuple(loc[-2:]) == ("monitor", "url") and isinstance(value, str):
        return shown_url(value)
    if isinstance(value, dict):
        return {key: _masked_input((key,), item) for key, item in value.items()}
    return value
