"""The TF Serving config files parse as the protos TF Serving reads, and their labels are consistent."""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "tfserving"


def test_models_config_labels_point_at_loaded_versions() -> None:
    config = text_format.Parse((DEPLOY / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "fraud_dnn" and model.model_platform == "tensorflow"
    versions = set(model.model_version_policy.specific.versions)
    assert set(model.version_labels) == {"stable", "canary"}
    assert set(model.version_labels.values()) <= versions


def test_batching_and_monitoring_files_use_known_fields() -> None:
    batching = (DEPLOY / "batching_parameters.txt").read_text()
    fields = set(re.findall(r"^(\w+)", batching, flags=re.M))
    known = {
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
    }
    assert fields <= known, fields - known
    assert "batch_timeout_micros { value: 0 }" in batching
    monitoring = (DEPLOY / "monitoring.config").read_text()
    assert "prometheus_config" in monitoring and "enable: true" in monitoring
