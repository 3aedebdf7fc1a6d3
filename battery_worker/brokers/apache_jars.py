"""What the local Apache Kafka broker runs on: a Java 17+ found on ``PATH`` and the jars, fetched once.

Why apart from the broker: finding Java and filling the jar cache is the only part that needs Maven and the
network, and it happens once per machine, while a broker (``apache_broker.py``) starts many times per test
session. The jars named in ``apache_kafka.pom.xml`` (beside this module) are copied into a cache outside git
(``~/.cache/battery-worker/apache-kafka-<version>/lib``, or ``$BATTERY_WORKER_KAFKA_HOME/lib``) and reused
afterwards without Maven or network; a marker file holds the POM's digest, so a changed POM fetches again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from battery_worker.kafka.exceptions import ApacheKafkaUnavailable

__all__ = [
    "HOME_ENV",
    "JVM_OPTIONS",
    "KAFKA_SCRIPTS_HEAP",
    "KAFKA_SCRIPTS_JVM_OPTIONS",
    "QUICK_START_HEAP",
    "ensure_jars",
    "find_java",
    "kafka_home",
    "kafka_version",
]

log = logging.getLogger(__name__)

_POM = Path(__file__).with_name("apache_kafka.pom.xml")
#: Written into the lib directory after a complete copy; holds the POM's digest (a changed POM fetches again).
_MARKER = ".battery-worker-complete"

#: Environment variable naming the cache directory (jars go to its ``lib`` subdirectory).
HOME_ENV = "BATTERY_WORKER_KAFKA_HOME"

#: Quick to start on a small machine: C1 only and the serial collector. Measured on 2 cores, start() to
#: ready: 4.2-4.6 s with these, 5.6-6.1 s without TieredStopAtLevel=1, 6.6-8.1 s with JVM defaults.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Djava.awt.headless=true")
#: The quick-starting broker's ``-Xmx``: plenty for a test's topics.
QUICK_START_HEAP = "512m"

#: What Kafka's own ``kafka-run-class.sh`` starts a broker with (``KAFKA_JVM_PERFORMANCE_OPTS``): the JVM
#: our users run. Slower to start (about 7 s against 4.5 here), but the G1 collector and the optimising
#: compiler keep pauses short and requests cheap once warm, which a benchmark must measure; with the
#: quick-start options a long benchmark's latency p99 grows as the broker's serial collections do.
KAFKA_SCRIPTS_JVM_OPTIONS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
#: ``kafka-server-start.sh``'s ``KAFKA_HEAP_OPTS``: ``-Xmx1G -Xms1G``.
KAFKA_SCRIPTS_HEAP = "1G"


@functools.cache
def kafka_version() -> str:
    """The Kafka version the POM pins (its ``kafka.version`` property)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _POM.read_text(encoding="utf-8"))
    if match is None:  # pragma: no cover - the POM ships with the package
        raise ApacheKafkaUnavailable(f"{_POM} names no kafka.version")
    return match.group(1).strip()


def kafka_home() -> Path:
    """Cache directory of the jars: ``$BATTERY_WORKER_KAFKA_HOME`` or ``~/.cache/battery-worker/...``."""
    configured = os.environ.get(HOME_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "battery-worker" / f"apache-kafka-{kafka_version()}"


def find_java() -> tuple[str, str]:
    """Return ``(java, keytool)`` from ``PATH``, checking that Java is 17 or newer (Kafka 4 needs it).

    :raises ApacheKafkaUnavailable: no ``java``/``keytool``, or a Java older than 17.
    """
    java = shutil.which("java")
    if java is None:
        raise ApacheKafkaUnavailable(
            "no `java` on PATH; install a JDK 17 or newer (e.g. apt-get install openjdk-17-jdk-headless)"
        )
    beside = Path(java).resolve().with_name("keytool")
    keytool = str(beside) if beside.is_file() else shutil.which("keytool")
    if keytool is None:
        raise ApacheKafkaUnavailable(f"no `keytool` beside {java} or on PATH; install a full JDK 17+")
    try:
        # argv is the java found on PATH and a fixed flag.
        probe = subprocess.run(  # noqa: S603
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApacheKafkaUnavailable(f"cannot run {java} -version: {exc}") from exc
    found = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if found is None:
        raise ApacheKafkaUnavailable(f"cannot tell the version of {java}: {probe.stderr.strip()[:200]!r}")
    major = int(found.group(1))
    if major == 1 and found.group(2):  # "1.8.0_x" is Java 8
        major = int(found.group(2))
    if major < 17:
        raise ApacheKafkaUnavailable(f"{java} is Java {major}; Kafka {kafka_version()} needs Java 17+")
    return java, keytool


def _jars_complete(lib: Path, digest: str) -> bool:
    with contextlib.suppress(OSError):
        return (lib / _MARKER).read_text(encoding="utf-8").strip() == digest
    return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock``, so two processes never fetch into the same cache at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(home: Path | None = None, *, timeout: float = 900.0) -> Path:
    """Return the directory of the broker's jars, fetching them with Maven the first time.

    Later calls only read a marker file: no Maven, no network. A changed POM fetches again.

    :param home: cache directory; ``None`` means :func:`kafka_home`.
    :raises ApacheKafkaUnavailable: no ``mvn`` for a needed fetch, or the fetch failed.
    """
    home = home if home is not None else kafka_home()
    lib = home / "lib"
    pom_bytes = _POM.read_bytes()
    digest = hashlib.sha256(pom_bytes).hexdigest()
    if _jars_complete(lib, digest):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ApacheKafkaUnavailable(
            f"no `mvn` on PATH to fetch the Kafka {kafka_version()} jars once into {lib} "
            "(install Maven, e.g. apt-get install maven, or set "
            f"{HOME_ENV} to a directory whose lib/ was filled before)"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApacheKafkaUnavailable(f"cannot create the jar cache {home}: {exc}") from exc
    with _locked(home / ".fetch.lock"):
        if _jars_complete(lib, digest):  # another process fetched while we waited
            return lib
        # Maven runs on a copy of the POM, so an installed (maybe read-only) package is never written to.
        pom = home / "pom.xml"
        pom.write_bytes(pom_bytes)
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching the Apache Kafka %s jars into %s (once)", kafka_version(), lib)
        command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
        command.append(f"-DoutputDirectory={partial}")
        try:
            # argv: the mvn found on PATH and fixed arguments.
            fetched = subprocess.run(  # noqa: S603
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ApacheKafkaUnavailable(
                f"Maven did not fetch the Kafka jars within {timeout:.0f} s"
            ) from exc
        except OSError as exc:
            raise ApacheKafkaUnavailable(f"cannot run {mvn}: {exc}") from exc
        main_jar = partial / f"kafka_2.13-{kafka_version()}.jar"
        if fetched.returncode != 0 or not main_jar.is_file():
            output = " | ".join((fetched.stdout + fetched.stderr).strip().splitlines()[-6:])
            raise ApacheKafkaUnavailable(
                f"fetching the Kafka {kafka_version()} jars with Maven failed "
                f"(exit {fetched.returncode}; is Maven Central reachable?): {output[-600:]}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        (lib / _MARKER).write_text(digest + "\n", encoding="utf-8")
    return lib
