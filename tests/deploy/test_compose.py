"""docker-compose.yml cannot run here (no Docker engine): validate it against the Compose Specification's
JSON Schema and check the wiring.

The schema is vendored (``compose-spec/``: ``schema/compose-spec.json`` of github.com/compose-spec/compose-spec
at commit 170098ba07d9, 2026-06-23, Apache-2.0, with its LICENSE and NOTICE), so this test runs offline and
needs nothing beyond ``make setup``. To update it, replace the file with a newer one from that repository.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "compose-spec" / "compose-spec.json"


def compose_schema() -> dict[str, object]:
    return dict(json.loads(SCHEMA.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _errors(document: dict[str, object]) -> list[str]:
    schema = compose_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, object]) -> None:
    assert _errors(compose) == []


def test_the_schema_check_rejects_a_wrong_compose_file(compose: dict[str, object]) -> None:
    """The check can fail: a misspelt service key and a port of the wrong type are both reported."""
    broken = copy.deepcopy(compose)
    services = broken["services"]
    assert isinstance(services, dict)
    services["worker"]["restart_polcy"] = "always"
    services["redis"]["ports"] = {"6379": 6379}
    errors = _errors(broken)
    assert any("restart_polcy" in e for e in errors), errors
    assert any(e.startswith("['services', 'redis', 'ports']") for e in errors), errors


def test_the_stack_has_the_production_services(compose: dict[str, object]) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    assert {"kafka", "redis", "tfserving", "worker", "trainer", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "--appendonly" in services["redis"]["command"]
    serving = " ".join(services["tfserving"]["command"])
    for flag in ("--model_config_file=", "--batching_parameters_file=", "--monitoring_config_file=",
                 "--enable_batching=true"):
        assert flag in serving
    assert services["worker"]["environment"]["FRAUD_MODEL_BACKEND"].startswith("tfserving://tfserving:8500/")


def test_files_the_compose_file_mounts_exist(compose: dict[str, object]) -> None:
    for path in ("deploy/tfserving/batching_parameters.txt", "deploy/tfserving/monitoring.config",
                 "deploy/tfserving/models.config", "deploy/prometheus/prometheus.yml", "Dockerfile"):
        assert (ROOT / path).is_file(), path
