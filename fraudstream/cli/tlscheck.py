"""Why a TLS connection to Kafka failed, in one line: a broker whose certificate the client does not trust.

aiokafka logs a failed TLS handshake and then reports only "Unable to bootstrap", which the CLI turned into
"cannot reach Kafka … is the stack up?": wrong, for a broker that is up and answering (seen with a client
without the stack's CA, tests/chaos/test_kafka_tls.py). When a Kafka probe fails with TLS configured, one
handshake with the very SSL context the Kafka clients use (``settings.kafka.client_options()``) tells a
certificate problem from a broker that is away.
"""

from __future__ import annotations

import socket
import ssl

from config.kafka import KafkaConnection


def certificate_problem(kafka: KafkaConnection, timeout_s: float = 5.0) -> str | None:
    """The one-line reason the first bootstrap server's certificate is refused, or None (no TLS, it verifies,
    or the server cannot be reached at all: the caller's own message covers that)."""
    context = kafka.client_options().get("ssl_context")
    if not isinstance(context, ssl.SSLContext):
        return None
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        ca = (f"the CA file {kafka.ssl_cafile} does not" if kafka.ssl_cafile
              else "no CA file is configured and the system's CAs do not")
        return (f"Kafka at {kafka.bootstrap}: TLS refused, the broker's certificate is not trusted ({reason}; {ca} "
                "sign it) — set FRAUD_KAFKA_SSL_CAFILE to the CA that signed the broker's certificate")
    except (OSError, ValueError):
        return None
