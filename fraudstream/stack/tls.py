"""Kafka over TLS for the local stack: a CA of its own, the broker's keystore, SSL and SASL_SSL listeners.

Made with the JDK's ``keytool`` (it ships with the Java 17 the broker needs), once per directory:

- a throw-away certificate authority (``ca.p12``; its certificate as PEM in ``ca.crt``, the file a client
  names in ``FRAUD_KAFKA_SSL_CAFILE``),
- the broker's key and a certificate signed by that CA for ``127.0.0.1`` and ``localhost``
  (``broker.p12``, PKCS12, with the chain): ``-genkeypair``, ``-certreq``, ``-gencert``, ``-importcert``,
- a random store password and a random SCRAM-SHA-512 password for the clients' user, in files only the
  owner can read (passwords reach keytool as ``:file`` arguments, never on a command line).

The broker keeps the stack's own PLAINTEXT listener (inter-broker, health check) and gets an ``SSL`` and a
``SASL_SSL`` listener (``tls_listeners``). A client that does not trust this CA cannot connect: certificate
verification fails. That is the point.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fraudstream.stack.errors import StackError
from fraudstream.stack.kafka import Listener

CLIENT_USER = "fraudstream"
MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True, slots=True)
class BrokerTls:
    directory: Path
    ca_file: Path
    keystore: Path
    store_password: str
    client_password: str

    @property
    def scram_users(self) -> dict[str, str]:
        """Created in the broker's metadata when its storage is formatted (``format_storage``)."""
        return {CLIENT_USER: self.client_password}

    def listeners(self, ssl_port: int, sasl_ssl_port: int) -> tuple[Listener, ...]:
        return (Listener("SSL", ssl_port, "SSL"), Listener("SASL_SSL", sasl_ssl_port, "SASL_SSL"))

    def broker_properties(self) -> tuple[str, ...]:
        """``server.properties`` lines: both listeners' keystore, SCRAM on the SASL_SSL one."""
        lines = []
        for listener in ("ssl", "sasl_ssl"):
            prefix = f"listener.name.{listener}"
            lines += [
                f"{prefix}.ssl.keystore.type=PKCS12",
                f"{prefix}.ssl.keystore.location={self.keystore}",
                f"{prefix}.ssl.keystore.password={self.store_password}",
                f"{prefix}.ssl.key.password={self.store_password}",
            ]
        return (
            *lines,
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        )

    def client_env(self, protocol: str = "SSL") -> dict[str, str]:
        """The ``FRAUD_*`` settings of a client (config/settings.py) of the ``SSL`` or ``SASL_SSL`` listener."""
        env = {"FRAUD_KAFKA_SECURITY_PROTOCOL": protocol, "FRAUD_KAFKA_SSL_CAFILE": str(self.ca_file)}
        if protocol == "SASL_SSL":
            env.update(FRAUD_KAFKA_SASL_MECHANISM=MECHANISM, FRAUD_KAFKA_SASL_USERNAME=CLIENT_USER,
                       FRAUD_KAFKA_SASL_PASSWORD=self.client_password)
        return env


def keytool_binary() -> str:
    found = shutil.which("keytool")
    if found is None:
        msg = "keytool (part of the JDK) is needed for Kafka over TLS: apt-get install openjdk-17-jre-headless"
        raise StackError(msg)
    return found


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _keytool(directory: Path, *args: str) -> None:
    result = subprocess.run([keytool_binary(), *args], cwd=directory, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"keytool {args[0]} failed: {(result.stdout + result.stderr).strip()[-1500:]}"
        raise StackError(msg)


def ensure_broker_tls(directory: Path, *, validity_days: int = 825) -> BrokerTls:
    """Create the CA, the broker's keystore and the passwords unless they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    secrets_file = directory / "secrets.json"
    if not (all((directory / name).is_file() for name in ("ca.crt", "broker.p12")) and secrets_file.is_file()):
        _create(directory, secrets_file, validity_days)
    stored = json.loads(secrets_file.read_text())
    return BrokerTls(directory=directory.resolve(), ca_file=(directory / "ca.crt").resolve(),
                     keystore=(directory / "broker.p12").resolve(), store_password=stored["store"],
                     client_password=stored["client"])


def _create(directory: Path, secrets_file: Path, days: int) -> None:
    for name in ("ca.p12", "ca.crt", "broker.p12", "broker.csr", "broker.crt"):
        (directory / name).unlink(missing_ok=True)
    passwords = {"store": secrets.token_urlsafe(18), "client": secrets.token_urlsafe(18)}
    pass_file = directory / "store.password"
    _private(pass_file, passwords["store"])
    store = ["-storetype", "PKCS12", "-storepass:file", pass_file.name]
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", str(days)]
    # the CA: a self-signed key pair allowed to sign (basic constraints CA:true)
    _keytool(directory, "-genkeypair", "-keystore", "ca.p12", *store, "-alias", "ca", *key,
             "-dname", "CN=fraudstream local stack CA", "-ext", "bc:c")
    _keytool(directory, "-exportcert", "-rfc", "-keystore", "ca.p12", *store, "-alias", "ca", "-file", "ca.crt")
    # the broker: a key pair, a signing request, the CA's signature (names a client checks), the chain back in
    _keytool(directory, "-genkeypair", "-keystore", "broker.p12", *store, "-alias", "broker", *key,
             "-dname", "CN=localhost")
    _keytool(directory, "-certreq", "-keystore", "broker.p12", *store, "-alias", "broker", "-file", "broker.csr")
    _keytool(directory, "-gencert", "-keystore", "ca.p12", *store, "-alias", "ca", "-infile", "broker.csr",
             "-outfile", "broker.crt", "-rfc", "-validity", str(days), "-ext", "SAN=ip:127.0.0.1,dns:localhost",
             "-ext", "KU=digitalSignature,keyEncipherment", "-ext", "EKU=serverAuth")
    _keytool(directory, "-importcert", "-noprompt", "-keystore", "broker.p12", *store, "-alias", "ca",
             "-file", "ca.crt")
    _keytool(directory, "-importcert", "-keystore", "broker.p12", *store, "-alias", "broker", "-file", "broker.crt")
    for name in ("broker.csr", "broker.crt"):
        (directory / name).unlink()
    for name in ("ca.p12", "broker.p12"):
        (directory / name).chmod(0o600)
    _private(secrets_file, json.dumps(passwords) + "\n")
