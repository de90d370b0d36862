"""The Helm chart as its tests see it: rendered by a helm v4 (``make helm`` builds it from the Go module
proxy), parsed with PyYAML, and read the way Kubernetes would (env from ConfigMaps, named ports)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from config.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "fraudstream"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
RELEASE = "fraud"
NAMESPACE = "risk"
# What a container reads from a Secret; the settings check needs some value for it.
SECRET_PLACEHOLDER = "value-from-a-secret"

Manifest = dict[str, Any]


def _helm_candidates() -> list[Path]:
    candidates = []
    go = shutil.which("go")
    if go is not None:
        gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=False).stdout.strip()
        if gopath:
            candidates.append(Path(gopath) / "bin" / "helm")
    candidates.append(Path.home() / "go" / "bin" / "helm")
    on_path = shutil.which("helm")
    if on_path is not None:
        candidates.append(Path(on_path))
    return candidates


def helm_binary() -> Path:
    """The helm v4 that ``make helm`` builds (Go's bin directory), else one on PATH; fails the test
    with the command to run when there is none."""
    candidates = _helm_candidates()
    for candidate in candidates:
        if candidate.is_file():
            version = subprocess.run([candidate, "version", "--short"], capture_output=True, text=True, check=False)
            if version.returncode == 0 and version.stdout.startswith("v4."):
                return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    pytest.fail(f"helm v4 not found ({looked}): run `make helm` (builds it once from the Go module proxy)",
                pytrace=False)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=False, cwd=ROOT)


def template_args(values: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


EnvValue = str | SecretRef


class Rendered:
    """The manifests of one ``helm template`` run."""

    def __init__(self, documents: list[Manifest]) -> None:
        self.documents = documents

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self.documents if d["kind"] == kind]

    def named(self, kind: str, name: str) -> Manifest:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]

    def deployments(self) -> list[Manifest]:
        return self.of_kind("Deployment")

    def env(self, container: Mapping[str, Any]) -> dict[str, EnvValue]:
        """A container's environment as Kubernetes builds it: envFrom ConfigMaps first, then env."""
        env: dict[str, EnvValue] = {}
        for source in container.get("envFrom", []):
            assert "configMapRef" in source, f"unexpected envFrom source {source}"
            env.update(self.named("ConfigMap", source["configMapRef"]["name"])["data"])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = SecretRef(ref["name"], ref["key"])
        return env


def render(values: Sequence[Path] = (), sets: Sequence[str] = ()) -> Rendered:
    result = helm(*template_args(values, sets))
    assert result.returncode == 0, f"helm template failed: {result.stderr.strip()}"
    return Rendered([d for d in yaml.safe_load_all(result.stdout) if d])


def containers(deployment: Manifest) -> Iterator[tuple[dict[str, Any], bool]]:
    """(container, is_init) of a Deployment's pod."""
    spec = deployment["spec"]["template"]["spec"]
    for container in spec.get("initContainers", []):
        yield container, True
    for container in spec["containers"]:
        yield container, False


def port_number(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    assert numbers, f"container {container['name']} has no port named {port}"
    return int(numbers[0])


def fraud_variables(env: Mapping[str, EnvValue]) -> dict[str, str]:
    """The FRAUD_* variables of an environment, a Secret's value replaced by a placeholder."""
    return {k: (SECRET_PLACEHOLDER if isinstance(v, SecretRef) else v) for k, v in env.items()
            if k.startswith("FRAUD_")}


@contextmanager
def fraud_environment(env: Mapping[str, str], workdir: Path) -> Iterator[None]:
    """Exactly these FRAUD_* variables in the environment, and ``workdir`` as the working directory (so no
    stack.env of a developer's checkout is read)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        for name in [n for n in os.environ if n.startswith("FRAUD_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def settings_under(env: Mapping[str, str], workdir: Path) -> dict[str, Any] | ValidationError:
    """The settings object (as a dict) that ``load_settings`` builds with exactly these FRAUD_* variables,
    or its validation error."""
    with fraud_environment(env, workdir):
        try:
            return load_settings().model_dump()
        except ValidationError as exc:
            return exc


def unread_variables(env: Mapping[str, str], workdir: Path) -> list[str]:
    """The variables of ``env`` that the settings object ignores: changing one's value neither changes the
    settings nor fails their validation. (Written against behaviour, not field names, so it holds when the
    settings are reorganised.) ``env`` itself must load."""
    base = settings_under(env, workdir)
    if isinstance(base, ValidationError):
        raise AssertionError(f"these settings do not load: {base}")
    unread = []
    for name, value in env.items():
        changed = settings_under({**env, name: f"{value}-probe"}, workdir)
        if not isinstance(changed, ValidationError) and changed == base:
            unread.append(name)
    return unread
