"""Apache Kafka 4 brokers in KRaft mode, from the jars on Maven Central: one combined broker+controller node
by default, or several (``stack up --brokers 3``), each a combined node and one voter of a static controller
quorum, so any one of three can die and the other two still elect a controller and partition leaders.

The jars are resolved once with ``mvn dependency:copy-dependencies`` (deploy/kafka-broker/pom.xml) into a
cache outside the checkout, so fresh clones on the same machine reuse them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from config import kafka as topics_admin
from config.kafka import KafkaConnection
from fraudstream.stack.errors import StackError

KAFKA_VERSION = "4.1.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
POM = PROJECT_ROOT / "deploy" / "kafka-broker" / "pom.xml"
LOG4J_CONFIG = PROJECT_ROOT / "deploy" / "kafka-broker" / "log4j2.yaml"


def default_jar_cache() -> Path:
    return Path.home() / ".cache" / "fraudstream" / f"kafka-{KAFKA_VERSION}"


def jar_fingerprint() -> str:
    """What the cache was resolved from: the Kafka version and the pom (its dependencies). A cache made
    from another pom (e.g. one without kafka-tools) resolves again."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    return f"{KAFKA_VERSION} pom-sha256:{digest}"


def ensure_jars(cache: Path) -> Path:
    """Return the directory of the broker's (and Kafka's tools') jars, resolving them with Maven the first
    time and whenever ``deploy/kafka-broker/pom.xml`` changed since."""
    libs = cache / "libs"
    marker = cache / ".complete"
    fingerprint = jar_fingerprint()
    if marker.exists() and marker.read_text().strip() == fingerprint and libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = "Maven ('mvn') is needed once to fetch the Kafka jars: apt-get install maven"
        raise StackError(msg)
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars (broker and tools) from Maven Central into {libs} (once)…",
          file=sys.stderr)
    # Resolved beside the cache, then swapped in: brokers started from the old jars keep running (their
    # open files stay readable) and two commands resolving at once never see a half-filled directory.
    staging = cache / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        msg = f"mvn could not resolve the Kafka jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        raise StackError(msg)
    retired = cache / f"libs.old-{os.getpid()}"
    if libs.exists():
        libs.rename(retired)
    try:
        staging.rename(libs)
    except OSError:  # another command swapped its copy in first: theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    marker.write_text(fingerprint + "\n")
    return libs


@dataclass(frozen=True, slots=True)
class Listener:
    """A broker listener besides the stack's own PLAINTEXT one (which stays the inter-broker listener and the
    one the stack's health check uses). ``advertised_port`` differs from ``port`` when clients reach the
    broker through something else, such as a fault proxy: the broker's metadata sends them there for every
    connection after bootstrap (with the real port they would bypass the proxy)."""

    name: str
    port: int
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    advertised_port: int | None = None


@dataclass(frozen=True, slots=True)
class KafkaLayout:
    data_dir: Path
    config_file: Path
    log_file: Path
    port: int
    controller_port: int
    listeners: tuple[Listener, ...] = ()
    properties: tuple[str, ...] = ()
    """More ``key=value`` lines for ``server.properties`` (the TLS listeners' keystores, SASL: stack/tls.py)."""
    node_id: int = 1
    voters: str = ""
    """``controller.quorum.voters`` (``id@host:port,…``); empty: this node alone."""
    replication_factor: int = 1
    """Of the internal topics (consumer offsets, transaction state) and of topics created without one."""
    min_insync_replicas: int = 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def quorum_voters(controller_ports: list[int]) -> str:
    """``controller.quorum.voters`` of nodes 1..N on these controller ports (node ids follow the list)."""
    return ",".join(f"{i}@127.0.0.1:{port}" for i, port in enumerate(controller_ports, start=1))


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        msg = "Java 17+ is needed for the Kafka broker: apt-get install openjdk-17-jre-headless"
        raise StackError(msg)
    return java


def write_config(layout: KafkaLayout, *, default_partitions: int) -> None:
    layout.config_file.parent.mkdir(parents=True, exist_ok=True)
    listeners = (Listener("PLAINTEXT", layout.port), *layout.listeners)
    bound = ",".join(f"{x.name}://127.0.0.1:{x.port}" for x in listeners)
    advertised = ",".join(f"{x.name}://127.0.0.1:{x.advertised_port or x.port}" for x in listeners)
    protocols = ",".join(f"{x.name}:{x.protocol}" for x in listeners)
    rf, min_isr = layout.replication_factor, layout.min_insync_replicas
    layout.config_file.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={layout.node_id}",
                f"controller.quorum.voters={layout.voters or quorum_voters([layout.controller_port])}",
                f"listeners={bound},CONTROLLER://127.0.0.1:{layout.controller_port}",
                f"advertised.listeners={advertised}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map={protocols},CONTROLLER:PLAINTEXT",
                f"log.dirs={layout.data_dir}",
                f"num.partitions={default_partitions}",
                # One node: replication 1. Three: the group offsets are replicated like the data (a broker
                # holding the only copy of __consumer_offsets would stop every commit when it dies).
                # Few internal partitions so groups form fast.
                f"offsets.topic.replication.factor={rf}",
                "offsets.topic.num.partitions=4",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={min_isr}",
                "transaction.state.log.num.partitions=4",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={min_isr}",
                # never elect a replica that missed acknowledged writes (Kafka's default, stated: the
                # broker-loss test relies on it)
                "unclean.leader.election.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "message.max.bytes=2097152",
                "log.retention.hours=168",
                # The log cleaner allocates its offset map on the heap at start-up (128 MiB by default): with
                # three 256 MiB brokers that failed a start with OutOfMemoryError. The compacted topics here
                # (group offsets, changelogs) are small; 32 MiB maps ~1.4 M keys a cleaning pass.
                "log.cleaner.dedupe.buffer.size=33554432",
                *layout.properties,
                "",
            ]
        )
    )


def java_command(libs: Path, main_class: str, *args: str, heap: str = "512m") -> list[str]:
    return [
        java_binary(), f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", f"{libs}/*", main_class, *args,
    ]


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (what `kafka-storage random-uuid`
    prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


def format_storage(libs: Path, layout: KafkaLayout, *, scram_users: dict[str, str] | None = None,
                   cluster_id: str | None = None) -> None:
    """Format the KRaft metadata directory with Kafka's own storage tool (once per data dir). SCRAM-SHA-512
    users (name → password) are created in the metadata at format time, as docker-compose does. The nodes
    of one cluster are formatted with the same ``cluster_id``."""
    if (layout.data_dir / "meta.properties").exists():
        return
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    cluster_id = cluster_id or new_cluster_id()
    scram = [arg for name, password in (scram_users or {}).items()
             for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
    # the id may start with '-', hence the '--cluster-id=' form
    cmd = java_command(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                       "-c", str(layout.config_file), *scram, heap="256m")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"kafka storage format failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        raise StackError(msg)


async def _probe(bootstrap: str) -> bool:
    # aiokafka logs every refused connection at ERROR; while waiting for start-up that is just noise.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = KafkaConnection(bootstrap).admin(request_timeout_ms=3000)  # the stack's own broker: plaintext
    try:
        await admin.start()
        await admin.list_topics()
    except Exception:
        return False
    finally:
        await admin.close()
    return True


def _last_error(log_path: Path) -> str:
    """The log's last ERROR or exception line, which usually names the cause (a port in use, a bad config)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line.strip() for line in lines if " ERROR " in line or "Exception:" in line]
    return found[-1][:300] if found else ""


def wait_healthy(
    bootstrap: str, *, timeout_s: float, alive: Callable[[], bool] | None = None, log_path: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(_probe(bootstrap)):
            return
        if alive is not None and not alive():
            where = f"see {log_path}" if log_path is not None else "see its log"
            cause = _last_error(log_path) if log_path is not None else ""
            msg = f"the Kafka broker on {bootstrap} exited during start-up ({where})" + (f": {cause}" if cause else "")
            raise StackError(msg)
        time.sleep(0.5)
    msg = f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s"
    raise StackError(msg)


def healthy(bootstrap: str) -> bool:
    return asyncio.run(_probe(bootstrap))


async def _registered_brokers(bootstrap: str) -> set[int]:
    admin = KafkaConnection(bootstrap).admin(request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except Exception:
        return set()
    finally:
        await admin.close()
    return {int(b["node_id"]) for b in cluster["brokers"]}


def wait_brokers_registered(bootstrap: str, count: int, *, timeout_s: float) -> None:
    """Until the cluster's metadata lists ``count`` brokers: a topic of ``count`` replicas can be created
    only then (each node registers with the controller quorum after it answers on its own port)."""
    deadline = time.monotonic() + timeout_s
    seen: set[int] = set()
    while time.monotonic() < deadline:
        seen = asyncio.run(_registered_brokers(bootstrap))
        if len(seen) >= count:
            return
        time.sleep(0.5)
    msg = f"Kafka at {bootstrap} lists brokers {sorted(seen)} after {timeout_s:.0f}s, expected {count}"
    raise StackError(msg)


def ensure_topics(kafka: KafkaConnection, topics: dict[str, int]) -> list[str]:
    """Create the topics that do not exist yet (replicated as ``kafka`` says); returns the names created."""
    return asyncio.run(topics_admin.ensure_topics(kafka, topics))
