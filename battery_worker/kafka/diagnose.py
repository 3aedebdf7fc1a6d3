"""Why a Kafka client could not do its job, as one typed error the worker and the CLI can act on.

aiokafka reports a failed start as ``KafkaConnectionError("Unable to bootstrap from ...")`` whatever the
cause: the real one (a refused SASL mechanism, a wrong password, a certificate that does not verify) is
only in aiokafka's own log line. But the cases call for opposite actions: a broker that is down comes
back, so the worker backs off and retries; credentials or a CA file never fix themselves, so retrying
forever only hides the cause. :func:`explain` opens one connection per bootstrap address with the same
settings to find the cause, and maps it onto :mod:`battery_worker.kafka.exceptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka.conn import create_conn, get_ip_port_afi
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    InvalidSessionTimeoutError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedCodecError,
    UnsupportedSaslMechanismError,
)

from battery_worker.errors import BatteryWorkerError, InvalidConfig
from battery_worker.kafka.exceptions import (
    AuthenticationFailed,
    BrokerUnavailable,
    CodecMissing,
    NotAuthorized,
    TlsHandshakeFailed,
)
from battery_worker.settings import KafkaSettings

AUTHENTICATION_ERRORS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
AUTHORIZATION_ERRORS = (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
_PROBE_TIMEOUT_S = 10.0
#: What the worker needs, as run on Apache Kafka 4.1 by tests/test_apache_kafka_security.py.
WORKER_ACLS = (
    "the worker needs READ, WRITE, DESCRIBE and DESCRIBE_CONFIGS on its topics, CREATE on them unless they "
    "exist, and READ on its consumer group; with exactly-once also WRITE and DESCRIBE on the transactional "
    "ids prefixed battery-worker.<group id>.; status, history and replay need READ and DESCRIBE on "
    "the topics they read and DESCRIBE on the group, feed WRITE and DESCRIBE on prices with "
    "topics.create=false (docs/brokers.md)"
)


def typed(error: BaseException, kafka: KafkaSettings) -> BatteryWorkerError | None:
    """The project's error for an aiokafka error whose cause is already known, else None."""
    servers = kafka.bootstrap_servers
    if isinstance(error, AUTHENTICATION_ERRORS):
        hint = ""
        if isinstance(error, IllegalSaslStateError):
            hint = " (the listener does not take SASL: check kafka.security_protocol and the port)"
        elif isinstance(error, UnsupportedSaslMechanismError):
            hint = (
                f" (the listener does not enable {kafka.sasl_mechanism}: set kafka.sasl_mechanism to one of "
                "its sasl.enabled.mechanisms)"
            )
        return AuthenticationFailed(
            f"authentication to Kafka at {servers} failed ({kafka.security_protocol}, "
            f"{kafka.sasl_mechanism or 'no SASL mechanism'}, user {kafka.sasl_username!r}): "
            f"{_describe(error)}{hint}"
        )
    if isinstance(error, AUTHORIZATION_ERRORS):
        principal = kafka.sasl_username or "the client's principal"
        return NotAuthorized(f"Kafka at {servers} refused {principal}: {_describe(error)} ({WORKER_ACLS})")
    if isinstance(error, InvalidSessionTimeoutError):
        return InvalidConfig(
            "worker.session_timeout_ms",
            "(as set)",
            f"Kafka at {servers} refuses it: it must lie within the broker's group.min.session.timeout.ms "
            "and group.max.session.timeout.ms (6 s and 30 min by default)",
        )
    if isinstance(error, UnsupportedCodecError):
        return CodecMissing(
            f"records fetched from Kafka at {servers} are compressed with a codec this install cannot read "
            f"({_describe(error)}): install the project's dependencies again (pip install -e ., or the "
            "image rebuilt: cramjam reads lz4, snappy and zstd)"
        )
    if isinstance(error, ssl.SSLError):
        return TlsHandshakeFailed(
            f"TLS handshake with Kafka at {servers} failed: {_describe(error)} "
            "(check kafka.ssl_cafile and that the address matches the broker's certificate)"
        )
    return None


async def explain(error: BaseException, kafka: KafkaSettings, options: dict[str, Any]) -> BatteryWorkerError:
    """The cause of a failed connection: probe each bootstrap address once with the same ``options``."""
    known = typed(error, kafka)
    if known is not None:
        return known
    causes: list[str] = []
    for address in kafka.bootstrap_servers.split(","):
        host, port, _family = get_ip_port_afi(address)
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id=options["client_id"],
                    request_timeout_ms=options["request_timeout_ms"],
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                ),
                _PROBE_TIMEOUT_S,
            )
        except (OSError, KafkaError, TimeoutError) as cause:
            found = typed(cause, kafka)
            if found is not None:
                return found
            causes.append(f"{address}: {_describe(cause)}{_protocol_hint(cause, kafka)}")
            continue
        with contextlib.suppress(Exception):
            conn.close()
        causes.append(f"{address}: connects, but {_describe(error)}")
    return BrokerUnavailable(f"Kafka at {kafka.bootstrap_servers} unavailable ({'; '.join(causes)})")


def _protocol_hint(cause: BaseException, kafka: KafkaSettings) -> str:
    """What a connection closed as soon as it is made most often means: a listener of another protocol. A
    plain client at a TLS listener, or a TLS client at a plain one, was retried as an outage, forever, with
    nothing pointing at ``kafka.security_protocol``."""
    protocol = kafka.security_protocol
    tls = protocol in ("SSL", "SASL_SSL")
    closed = "closed" in str(cause) or isinstance(cause, ConnectionResetError | EOFError)
    if not closed and not (tls and isinstance(cause, ssl.SSLError | ConnectionError)):
        return ""
    other = "plain (no TLS)" if tls else "TLS"
    return (
        f" (the broker closes the connection as soon as it is made: is the listener {other}? "
        f"kafka.security_protocol is {protocol})"
    )


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    name = type(error).__name__
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    text = text.split(": <AIOKafkaConnection", 1)[0]  # aiokafka appends the connection's repr
    return text if name in text else (f"{name}: {text}" if text else name)
