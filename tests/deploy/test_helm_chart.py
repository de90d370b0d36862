"""deploy/helm/fraudstream: lint, rendering, security context, scaling on lag, secrets (helm v4 from
``make helm``; no Kubernetes cluster here, so the rendered manifests are what is checked)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.fixtures.chart import (
    CHART,
    PRODUCTION_VALUES,
    RELEASE,
    Rendered,
    SecretRef,
    containers,
    helm,
    render,
    template_args,
)

ROOT = CHART.parents[2]
WORKER = f"{RELEASE}-fraudstream-worker"


@pytest.mark.parametrize("values", [[], ["--values", str(PRODUCTION_VALUES)]], ids=["default", "production"])
def test_helm_lint_strict_passes(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("sets", [
    "tfserving.enabled=false",
    "monitor.mode=headless,trainer.enabled=false",
    "kafka.securityProtocol=SSL,kafka.tls.caSecret=kafka-ca,worker.autoscaling.keda.enabled=true",
    "kafka.securityProtocol=SASL_PLAINTEXT,kafka.sasl.password=pw,redis.password=rp,worker.autoscaling.enabled=false",
    "monitor.enabled=false,trainer.enabled=false,metrics.serviceMonitor.enabled=true",
    "modelRepository.existingClaim=models,trainer.history.existingClaim=history,trainer.input=/history/tx.parquet",
])
def test_other_value_combinations_lint(sets: str) -> None:
    result = helm("lint", "--strict", str(CHART), "--set", sets)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_values_render_every_component(default_chart: Rendered) -> None:
    names = {d["metadata"]["name"] for d in default_chart.deployments()}
    assert names == {f"{RELEASE}-fraudstream-{c}" for c in ("worker", "trainer", "monitor", "tfserving")}
    # Without KEDA the workers scale on CPU; nothing of KEDA, Strimzi or the Prometheus Operator is rendered.
    assert [h["spec"]["scaleTargetRef"]["name"] for h in default_chart.of_kind("HorizontalPodAutoscaler")] == [WORKER]
    for kind in ("ScaledObject", "TriggerAuthentication", "KafkaTopic", "KafkaUser", "ServiceMonitor"):
        assert default_chart.of_kind(kind) == [], kind


def test_production_values_render_keda_strimzi_and_service_monitors(production_chart: Rendered) -> None:
    assert production_chart.of_kind("HorizontalPodAutoscaler") == []
    assert len(production_chart.of_kind("ScaledObject")) == 1
    topics = {t["spec"]["topicName"]: t["spec"] for t in production_chart.of_kind("KafkaTopic")}
    assert topics["transactions"]["partitions"] == 24
    assert {"scored-transactions", "transactions-dlq", "fraud-labels", "fraudstream-worker-__assignor-__leader"} \
        <= set(topics)
    assert all(t["replicas"] == 3 and t["config"]["min.insync.replicas"] == 2 for t in topics.values())
    (user,) = production_chart.of_kind("KafkaUser")
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == "payments"
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    assert {m["metadata"]["name"].rsplit("-", 1)[1] for m in production_chart.of_kind("ServiceMonitor")} \
        == {"worker", "monitor", "tfserving"}


def test_every_container_runs_non_root_on_a_read_only_root_filesystem(chart: Rendered) -> None:
    checked = 0
    for deployment in chart.deployments():
        pod = deployment["spec"]["template"]["spec"]
        pod_context: dict[str, Any] = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False
        for container, _ in containers(deployment):
            context = {**pod_context, **container.get("securityContext", {})}
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 0) != 0, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            checked += 1
    assert checked >= 5  # worker, trainer, monitor, tfserving and its wait-for-model init container


def test_the_paths_fraudstream_writes_are_writable_volumes(chart: Rendered) -> None:
    for deployment in chart.deployments():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container, is_init in containers(deployment):
            if is_init:
                continue
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly"), container["name"]
            home = chart.env(container).get("FRAUD_HOME")
            if home is None:  # TF Serving: reads /models and /config only
                assert all(mounts[p].get("readOnly") for p in ("/models", "/config"))
                continue
            assert isinstance(home, str) and home in mounts and not mounts[home].get("readOnly")
            assert "emptyDir" in volumes[mounts[home]["name"]]
            models = mounts[f"{home}/models"]
            assert "persistentVolumeClaim" in volumes[models["name"]]
            # Only the trainer writes the model repository.
            assert bool(models.get("readOnly")) == (container["name"] != "trainer"), container["name"]


def test_keda_scales_the_worker_deployment_on_its_transactions_lag(production_chart: Rendered) -> None:
    (scaled,) = production_chart.of_kind("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER}
    production_chart.named("Deployment", WORKER)
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (3, 24)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["lagThreshold"] == "10000"
    assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
    # The trigger authenticates as the workers do: the same user, password Secret and CA.
    worker = production_chart.named("Deployment", WORKER)["spec"]["template"]["spec"]
    env = production_chart.env(worker["containers"][0])
    assert meta["bootstrapServers"] == env["FRAUD_KAFKA_BOOTSTRAP"]
    auth = production_chart.named("TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {r["parameter"]: SecretRef(r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"] == env["FRAUD_KAFKA_SASL_PASSWORD"] == SecretRef("fraudstream", "password")
    ca_volume = next(v for v in worker["volumes"] if v["name"] == "kafka-ca")
    assert refs["ca"] == SecretRef(ca_volume["secret"]["secretName"], ca_volume["secret"]["items"][0]["key"])
    # The username comes from the chart's Secret, which must hold the workers' username.
    secret = production_chart.named("Secret", refs["username"].name)
    assert base64.b64decode(secret["data"][refs["username"].key]).decode() == env["FRAUD_KAFKA_SASL_USERNAME"]


def test_autoscaled_worker_deployments_leave_the_replica_count_to_the_autoscaler(chart: Rendered) -> None:
    assert "replicas" not in chart.named("Deployment", WORKER)["spec"]


def test_without_autoscaling_the_worker_replicas_are_fixed() -> None:
    fixed = render(sets=["worker.autoscaling.enabled=false", "worker.replicas=3"])
    assert fixed.named("Deployment", WORKER)["spec"]["replicas"] == 3
    assert fixed.of_kind("HorizontalPodAutoscaler") == fixed.of_kind("ScaledObject") == []


@pytest.mark.parametrize("sets", [
    ["kafka.transactionsPartitions=4", "worker.autoscaling.maxReplicas=6"],
    ["worker.autoscaling.enabled=false", "worker.replicas=13"],
])
def test_more_workers_than_partitions_is_refused(sets: list[str]) -> None:
    result = helm(*template_args(sets=sets))
    assert result.returncode != 0
    assert "exceed kafka.transactionsPartitions" in result.stderr


def test_worker_disruptions_are_one_at_a_time(chart: Rendered) -> None:
    (budget,) = [p for p in chart.of_kind("PodDisruptionBudget") if p["metadata"]["name"] == WORKER]
    assert budget["spec"]["maxUnavailable"] == 1
    worker = chart.named("Deployment", WORKER)
    assert budget["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]


def test_secrets_come_from_existing_secrets_or_the_charts_own(default_chart: Rendered,
                                                               production_chart: Rendered) -> None:
    worker = production_chart.named("Deployment", WORKER)["spec"]["template"]["spec"]["containers"][0]
    env = production_chart.env(worker)
    assert env["FRAUD_CARD_HASH_SECRET"] == SecretRef("fraudstream-card-hmac", "key")
    assert env["FRAUD_REDIS_PASSWORD"] == SecretRef("fraud-redis-acl", "password")
    (own,) = production_chart.of_kind("Secret")
    assert set(own["data"]) == {"kafka-sasl-username"}  # nothing secret left for the chart to hold

    (generated,) = default_chart.of_kind("Secret")
    assert generated["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"card-hash-secret", "api-token"} <= set(generated["data"])
    default_worker = default_chart.named("Deployment", WORKER)["spec"]["template"]["spec"]["containers"][0]
    name = generated["metadata"]["name"]
    assert default_chart.env(default_worker)["FRAUD_CARD_HASH_SECRET"] == SecretRef(name, "card-hash-secret")
    # Least privilege: only the worker holds the card HMAC key; the API token only where the API is.
    for deployment in default_chart.deployments():
        for container, _ in containers(deployment):
            held = default_chart.env(container)
            assert ("FRAUD_CARD_HASH_SECRET" in held) == (container["name"] == "worker")
            assert ("FRAUD_API_TOKEN" in held) == (container["name"] in {"trainer", "monitor"})


def test_a_sasl_protocol_without_a_password_source_is_refused() -> None:
    result = helm(*template_args(sets=["kafka.securityProtocol=SASL_SSL"]))
    assert result.returncode != 0
    assert "kafka.sasl.existingSecret" in result.stderr


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(chart: Rendered) -> str:
        annotations = chart.named("Deployment", WORKER)["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    base = render([PRODUCTION_VALUES])
    assert checksum(base) == checksum(render([PRODUCTION_VALUES]))
    assert checksum(base) != checksum(render([PRODUCTION_VALUES], ["redis.url=redis://other:6379/0"]))


def test_tf_serving_configuration_is_the_one_in_deploy_tfserving(chart: Rendered) -> None:
    config = chart.named("ConfigMap", f"{RELEASE}-fraudstream-tfserving")["data"]
    for name in ("models.config", "batching_parameters.txt", "monitoring.config"):
        assert config[name] == (ROOT / "deploy" / "tfserving" / name).read_text(), name
    server = chart.named("Deployment", f"{RELEASE}-fraudstream-tfserving")["spec"]["template"]["spec"]
    args = server["containers"][0]["args"]
    for flag in ("--batching_parameters_file=/config/batching_parameters.txt", "--enable_batching=true",
                 "--monitoring_config_file=/config/monitoring.config", "--enable_model_warmup=true"):
        assert flag in args
    # By default the trainer's promotions drive TF Serving (models.config in the model repository).
    assert "--model_config_file=/models/models.config" in args
    static = render(sets=["tfserving.modelConfigSource=configMap"])
    server = static.named("Deployment", f"{RELEASE}-fraudstream-tfserving")["spec"]["template"]["spec"]
    assert "--model_config_file=/config/models.config" in server["containers"][0]["args"]
    assert "initContainers" not in server


@pytest.mark.parametrize(("assignment", "complaint"), [
    ("worker.autoscalng.enabled=false", "additional properties 'autoscalng' not allowed"),
    ("kafka.securityProtocol=SASL-SSL", "value must be one of"),
    ("extraConfig.BATCH_MAX_SIZE=256", "BATCH_MAX_SIZE"),
])
def test_values_schema_refuses_misspelled_values(assignment: str, complaint: str) -> None:
    result = helm(*template_args(sets=[assignment]))
    assert result.returncode != 0
    assert complaint in result.stderr
