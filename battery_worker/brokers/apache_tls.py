"""The local Apache Kafka broker's TLS material: a throwaway CA and a server keystore, made with keytool.

Why apart from the broker: it is the JDK's ``keytool`` run six times in a fixed order, nothing the broker's
lifecycle needs to know beyond the file names. Each start makes new ones in the broker's temporary directory:
``ca.pem`` (the CA clients trust, ``ApacheKafkaBroker.ssl_cafile``) and ``server.p12`` (the broker's key and
certificate for ``127.0.0.1`` and ``localhost``, named in ``server.properties``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from battery_worker.brokers.apache_jars import JVM_OPTIONS
from battery_worker.kafka.exceptions import ApacheKafkaError

__all__ = ["CA_FILE", "SERVER_KEYSTORE", "make_keystores"]

#: File names in the broker's directory: the CA certificate (PEM) and the server keystore (PKCS12).
CA_FILE = "ca.pem"
SERVER_KEYSTORE = "server.p12"

_KEYTOOL_OPTIONS = tuple(f"-J{option}" for option in JVM_OPTIONS[:3])
_KEYTOOL_COMMANDS = frozenset({"-genkeypair", "-exportcert", "-certreq", "-gencert", "-importcert"})


def make_keystores(keytool: str, workdir: Path, password: str) -> None:
    """A throwaway CA and a server key pair signed by it (SANs 127.0.0.1 and localhost), via keytool.

    Six keytool runs, a JVM start each, in four rounds (independent ones in pairs): about 2 s.

    :param password: of both keystores and their keys.
    :raises ApacheKafkaError: a keytool run failed (with keytool's message).
    """
    files = {"ca_ks": "ca.p12", "server_ks": SERVER_KEYSTORE, "ca": CA_FILE, "csr": "server.csr"}
    files |= {"cert": "server.pem", "chain": "chain.pem"}
    paths = {key: str(workdir / name) for key, name in files.items()}
    common = f"-storetype PKCS12 -storepass {password}"
    genkey = f"{common} -genkeypair -keyalg EC -groupname secp256r1 -validity 30 -keypass {password}"

    def step(template: str, *extra: str) -> list[str]:
        # Split the fixed words first, then put the paths in: a path may contain spaces.
        return [*_KEYTOOL_OPTIONS, *(word.format_map(paths) for word in template.split()), *extra]

    ca_name = ("-dname", "CN=battery-worker test CA")
    _keytool_steps(
        keytool,
        step(f"{genkey} -alias ca -ext bc:c -keystore {{ca_ks}}", *ca_name),
        step(f"{genkey} -alias server -keystore {{server_ks}} -dname CN=localhost"),
    )
    _keytool_steps(
        keytool,
        step(f"{common} -exportcert -rfc -alias ca -keystore {{ca_ks}} -file {{ca}}"),
        step(f"{common} -certreq -alias server -keystore {{server_ks}} -file {{csr}}"),
    )
    _keytool_steps(
        keytool,
        step(
            f"{common} -gencert -rfc -alias ca -keystore {{ca_ks}} -validity 30 -infile {{csr}} "
            "-outfile {cert} -ext SAN=ip:127.0.0.1,dns:localhost -ext KU=digitalSignature "
            "-ext EKU=serverAuth"
        ),
    )
    # The reply with its whole chain installs without the CA being trusted in the keystore.
    chain = Path(paths["cert"]).read_text() + Path(paths["ca"]).read_text()
    Path(paths["chain"]).write_text(chain)
    _keytool_steps(
        keytool,
        step(f"{common} -importcert -noprompt -alias server -keystore {{server_ks}} -file {{chain}}"),
    )


def _keytool_steps(keytool: str, *steps: Sequence[str]) -> None:
    """Run keytool invocations concurrently; raise with keytool's message if one fails."""
    # argv: the JDK's keytool with generated arguments; no shell.
    procs = [
        subprocess.Popen(  # noqa: S603
            [keytool, *step], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for step in steps
    ]
    failures = []
    for step, proc in zip(steps, procs, strict=True):
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            action = next((arg for arg in step if arg in _KEYTOOL_COMMANDS), "?")
            failures.append(f"keytool {action}: {output.decode('utf-8', 'replace').strip()[-300:]}")
    if failures:
        raise ApacheKafkaError("making the TLS keystores failed: " + "; ".join(failures))
