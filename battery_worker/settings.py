"""Worker settings: defaults ← TOML file ← environment ← command-line flags (the later wins).

Environment variables use the prefix ``BATTERY_WORKER_`` and ``__`` between levels, e.g.
``BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS`` or ``BATTERY_WORKER_BATTERY__CAPACITY_MWH``. The conventional
``KAFKA_BOOTSTRAP_SERVERS`` is honoured too. Secrets are ``SecretStr``: they print as ``**********``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from battery_worker.battery import BatteryConfig
from battery_worker.errors import InvalidConfig
from battery_worker.processing import TopicNames
from battery_worker.sites import PolicyChoice, SiteDirectory, SiteOverride

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    model_config = _FROZEN

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "battery-worker"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    request_timeout_ms: int = Field(30_000, gt=0)

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
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
        return self


class TopicSettings(BaseModel):
    model_config = _FROZEN

    prices: str = "prices"
    actions: str = "battery.actions"
    status: str = "battery.status"
    state: str = "battery.state"
    history: str = "battery.history"
    dlq: str = "prices.dlq"
    partitions: int = Field(3, ge=1, description="partitions of topics created by the worker")
    replication_factor: int = Field(1, ge=1)
    create: bool = Field(True, description="create missing topics at start")

    def names(self) -> TopicNames:
        return TopicNames(self.prices, self.actions, self.status, self.state, self.history, self.dlq)


class WorkerSettings(BaseModel):
    model_config = _FROZEN

    group_id: str = "battery-worker"
    group_instance_id: str | None = Field(
        None, description="static membership: a stable id per process avoids rebalances on quick restarts"
    )
    max_batch_records: int = Field(2000, ge=1)
    poll_timeout_ms: int = Field(100, ge=1)
    max_message_bytes: int = Field(65_536, ge=64)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(1_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
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


class PolicySettings(BaseModel):
    model_config = _FROZEN

    name: str = "threshold"
    params: dict[str, Any] = Field(default_factory=dict)

    def choice(self) -> PolicyChoice:
        return PolicyChoice(self.name, dict(self.params))


class SiteSettings(BaseModel):
    model_config = _FROZEN

    battery: dict[str, float] = Field(default_factory=dict)
    policy: PolicySettings | None = None


class Settings(BaseSettings):
    """Everything the worker needs. Frozen: read once at start, logged once with secrets masked."""

    model_config = SettingsConfigDict(
        env_prefix="BATTERY_WORKER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    battery: BatteryConfig = BatteryConfig()
    policy: PolicySettings = PolicySettings()
    sites: dict[str, SiteSettings] = Field(default_factory=dict)

    def site_directory(self) -> SiteDirectory:
        overrides = {
            site_id: SiteOverride(site.battery, None if site.policy is None else site.policy.choice())
            for site_id, site in self.sites.items()
        }
        return SiteDirectory(self.battery, self.policy.choice(), overrides)

    def masked(self) -> dict[str, Any]:
        """The settings as a dict for the start-up log line; secrets stay masked."""
        return self.model_dump(mode="json")


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from a TOML file, the environment and explicit overrides, validated as one.

    Raises :class:`InvalidConfig` naming the first bad field.
    """
    toml_path = None if config_file is None else Path(config_file)
    if toml_path is not None and not toml_path.is_file():
        raise InvalidConfig("config", str(toml_path), "no such file")
    init: dict[str, Any] = dict(overrides or {})
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    explicit = "bootstrap_servers" in init.get("kafka", {})
    if bootstrap and not explicit and "BATTERY_WORKER_KAFKA__BOOTSTRAP_SERVERS" not in os.environ:
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
        settings.site_directory()
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise InvalidConfig(field, _masked_input(first["loc"], first.get("input")), first["msg"]) from None
    return settings


_SECRET_FIELDS = frozenset({"sasl_password", "ssl_password"})


def _masked_input(loc: tuple[int | str, ...], value: Any) -> Any:
    """The offending input for an error message, with secrets masked: a model-level error (an incomplete
    SASL setting) carries the whole ``kafka`` section as its input, password included."""
    if loc and loc[-1] in _SECRET_FIELDS:
        return "**********"
    if isinstance(value, dict):
        return {key: _masked_input((key,), item) for key, item in value.items()}
    return value
