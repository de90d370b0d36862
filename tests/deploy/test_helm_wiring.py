"""The chart against the code it deploys: every FRAUD_* variable it sets is one the settings object reads,
every probe points at a port and path the process really serves, and KEDA watches the workers' own
consumer group and topic (computed by the worker's code from the rendered settings)."""

from __future__ import annotations

import argparse
import re
import socket
import ssl
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from config.model import parse_backend_uri
from config.settings import Settings, load_settings
from fraudstream.cli import build_parser
from tests.fixtures.chart import (
    PRODUCTION_VALUES,
    RELEASE,
    Rendered,
    containers,
    fraud_environment,
    fraud_variables,
    port_number,
    render,
    unread_variables,
)

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def component(chart: Rendered, name: str) -> dict[str, Any]:
    deployment = chart.named("Deployment", f"{RELEASE}-fraudstream-{name}")
    main: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return main


def command_line(container: Mapping[str, Any]) -> argparse.Namespace:
    """The container's arguments as the real ``fraudstream`` parser reads them (the image's entrypoint)."""
    try:
        return build_parser().parse_args([str(a) for a in container["args"]])
    except SystemExit:
        pytest.fail(f"container {container['name']}: fraudstream rejects its arguments {container['args']}")


def probed(container: Mapping[str, Any]) -> Iterator[tuple[str, int, str | None]]:
    """(probe, port number, HTTP path or None for a TCP probe) of each probe; all three must exist."""
    for kind in PROBES:
        probe = container.get(kind)
        assert probe is not None, f"{container['name']} has no {kind}"
        if "httpGet" in probe:
            yield kind, port_number(container, probe["httpGet"]["port"]), probe["httpGet"]["path"]
        else:
            yield kind, port_number(container, probe["tcpSocket"]["port"]), None


def ca_bundle() -> str:
    import certifi

    return ssl.get_default_verify_paths().cafile or certifi.where()


def settings_object(env: Mapping[str, str], home: Path) -> Settings:
    """The settings a container with these variables builds, its home moved to ``home`` (faust writes there)
    and its Kafka CA (mounted from a Secret in the pod) replaced by this machine's CA bundle."""
    local = {**env, "FRAUD_HOME": str(home)}
    if "FRAUD_KAFKA_SSL_CAFILE" in local:
        local["FRAUD_KAFKA_SSL_CAFILE"] = ca_bundle()
    with fraud_environment(local, home):
        return load_settings()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status), bytes(response.read())


# --- FRAUD_* variables ------------------------------------------------------------------------------------


def test_every_fraud_variable_the_chart_sets_is_a_setting(chart: Rendered, tmp_path: Path) -> None:
    seen: set[str] = set()
    for deployment in chart.deployments():
        for container, _ in containers(deployment):
            env = fraud_variables(chart.env(container))
            if container["name"] == "worker" or "FRAUD_HOME" in env:
                assert unread_variables(env, tmp_path) == [], f"{container['name']}: not fraudstream settings"
                seen |= set(env)
            else:  # TF Serving is not fraudstream
                assert env == {}, container["name"]
    # Not vacuous: the variables a deployment cannot do without were among those checked.
    assert {"FRAUD_HOME", "FRAUD_KAFKA_BOOTSTRAP", "FRAUD_REDIS_URL", "FRAUD_MODEL_BACKEND", "FRAUD_METRICS_PORT",
            "FRAUD_CARD_HASH_SECRET", "FRAUD_API_TOKEN", "FRAUD_APP_ID", "FRAUD_TRANSACTIONS_PARTITIONS"} <= seen


def test_renamed_topics_and_extra_settings_are_settings_too(tmp_path: Path) -> None:
    chart = render([PRODUCTION_VALUES], ["kafka.topics.transactions=card-auths", "kafka.topics.deadLetter=dlq",
                                         "extraConfig.FRAUD_PIPELINE_MODE=naive"])
    env = fraud_variables(chart.env(component(chart, "worker")))
    assert env["FRAUD_TOPICS__TRANSACTIONS"] == "card-auths"
    assert "FRAUD_TOPICS__SCORED" not in env  # defaults are not rendered
    assert unread_variables(env, tmp_path) == []


def test_the_check_catches_a_misspelled_variable(tmp_path: Path) -> None:
    env = {"FRAUD_METRICS_PORT": "9108", "FRAUD_METRICS_PROT": "9109", "FRAUD_BATCH_MAX_SIZE": "256"}
    assert unread_variables(env, tmp_path) == ["FRAUD_METRICS_PROT"]


# --- probes -----------------------------------------------------------------------------------------------


def test_worker_probes_hit_the_metrics_server_the_worker_starts(chart: Rendered, tmp_path: Path) -> None:
    from features import FEATURE_LIST
    from monitoring.worker import WorkerMonitoring

    worker = component(chart, "worker")
    assert command_line(worker).command == "worker"
    env = fraud_variables(chart.env(worker))
    probes = list(probed(worker))
    assert {port for _, port, _ in probes} == {int(env["FRAUD_METRICS_PORT"])}
    # The worker's own metrics server, started from settings with FRAUD_METRICS_PORT (a free port here, the
    # rendered one may be taken on this machine), answers every probed path.
    port = free_port()
    settings = settings_object({**env, "FRAUD_METRICS_PORT": str(port)}, tmp_path)
    monitoring = WorkerMonitoring.start(settings, redis=None, feature_names=FEATURE_LIST.names)
    assert monitoring.port == port
    for kind, _, path in probes:
        assert path is not None, kind
        status, body = get(f"http://127.0.0.1:{port}{path}")
        assert status == 200 and b"fraudstream_transactions_consumed" in body, kind


async def test_trainer_probes_hit_the_trainer_api(chart: Rendered, tmp_path: Path) -> None:
    import asyncio

    from training.service import TrainerService
    from training.triggers import make_app, serve_http

    trainer = component(chart, "trainer")
    args = command_line(trainer)
    assert (args.command, args.trainer_command, args.host) == ("trainer", "serve", "0.0.0.0")
    probes = list(probed(trainer))
    assert {port for _, port, _ in probes} == {args.port}

    async def no_job(*_: Any) -> dict[str, Any]:
        return {}

    runner, port = await serve_http(make_app(TrainerService(no_job), SecretStr("token")), "127.0.0.1", 0)
    try:
        for kind, _, path in probes:
            status, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{port}{path}")
            assert status == 200, kind
    finally:
        await runner.cleanup()


def test_dashboard_probes_are_routes_of_the_dashboard(chart: Rendered, tmp_path: Path) -> None:
    from fraudstream.cli.monitoring import _build_monitor
    from monitoring.dashboard import create_app

    dashboard = component(chart, "monitor")
    args = command_line(dashboard)
    assert (args.command, args.host) == ("dashboard", "0.0.0.0")
    probes = list(probed(dashboard))
    assert {port for _, port, _ in probes} == {args.port}
    settings = settings_object(fraud_variables(chart.env(dashboard)), tmp_path)
    app = create_app(_build_monitor(settings, args), api_token=None)
    served = {route.resource.canonical for route in app.router.routes()
              if route.method == "GET" and route.resource is not None}
    assert {path for _, _, path in probes} <= served
    assert "/healthz" in {path for kind, _, path in probes if kind == "readinessProbe"}


def test_headless_monitor_probes_hit_its_metrics_server(tmp_path: Path) -> None:
    from prometheus_client import start_http_server

    from fraudstream.cli.monitoring import _build_monitor

    chart = render(sets=["monitor.mode=headless"])
    monitor = component(chart, "monitor")
    args = command_line(monitor)
    assert (args.command, args.host) == ("monitor", "0.0.0.0")
    probes = list(probed(monitor))
    assert {port for _, port, _ in probes} == {args.metrics_port}
    drift = _build_monitor(settings_object(fraud_variables(chart.env(monitor)), tmp_path), args)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=drift.registry)  # as `fraudstream monitor`
    try:
        for kind, _, path in probes:
            status, body = get(f"http://127.0.0.1:{server.server_port}{path}")
            assert status == 200 and b"fraudstream_" in body, kind
    finally:
        server.shutdown()
        thread.join(5)


def test_tf_serving_probes_and_the_workers_backend_name_the_same_server_and_model(chart: Rendered) -> None:
    server = component(chart, "tfserving")
    assert server["command"] == ["/usr/bin/tensorflow_model_server"]
    flags = dict(str(a).split("=", 1) for a in server["args"])
    grpc, rest = int(flags["--port"]), int(flags["--rest_api_port"])
    probes = {kind: (port, path) for kind, port, path in probed(server)}
    model = fraud_variables(chart.env(component(chart, "worker")))["FRAUD_MODEL_NAME"]
    assert probes["startupProbe"] == probes["readinessProbe"] == (rest, f"/v1/models/{model}")
    assert probes["livenessProbe"] == (grpc, None)
    # The workers' backend URI, read by the scoring code, points at this Deployment's Service and gRPC port.
    spec = parse_backend_uri(fraud_variables(chart.env(component(chart, "worker")))["FRAUD_MODEL_BACKEND"])
    assert (spec.kind, spec.model_name) == ("tfserving", model)
    host, port = (spec.target or "").rsplit(":", 1)
    service = chart.named("Service", host)
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    assert port_number(server, grpc_port["targetPort"]) == grpc
    served = re.findall(r'name: "([^"]+)"', chart.named("ConfigMap", f"{RELEASE}-fraudstream-tfserving")
                        ["data"]["models.config"])
    assert served == [model]


def test_without_tf_serving_the_workers_load_the_model_from_the_mounted_repository() -> None:
    chart = render(sets=["tfserving.enabled=false"])
    worker = component(chart, "worker")
    spec = parse_backend_uri(fraud_variables(chart.env(worker))["FRAUD_MODEL_BACKEND"])
    assert spec.kind == "local" and spec.path is not None
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert str(spec.path.parent) in mounts


# --- KEDA -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sets", [[], ["kafka.topics.transactions=card-auths", "worker.appId=risk-scoring"]],
                         ids=["production", "renamed"])
def test_keda_watches_the_consumer_group_and_topic_of_the_worker(sets: list[str], tmp_path: Path) -> None:
    from streams.app import create_app
    from streams.runtime import WorkerRuntime

    chart = render([PRODUCTION_VALUES], sets)
    (scaled,) = chart.of_kind("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    worker_deployment = chart.named("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    worker = worker_deployment["spec"]["template"]["spec"]["containers"][0]
    assert command_line(worker).command == "worker"
    env = fraud_variables(chart.env(worker))
    settings = settings_object(env, tmp_path)
    app = create_app(settings, WorkerRuntime(settings))
    # faust consumes with the app id as its Kafka group; the scoring agent reads the transactions topic.
    assert trigger["metadata"]["consumerGroup"] == app.conf.id
    assert (trigger["metadata"]["topic"],) == tuple(app.agents["score-transactions"].channel.topics)
    assert scaled["spec"]["maxReplicaCount"] <= int(env["FRAUD_TRANSACTIONS_PARTITIONS"])
