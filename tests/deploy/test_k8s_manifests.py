"""deploy/k8s: the base and the production overlay are rendered with kustomize (`kubectl kustomize`, the
kustomize built into kubectl, offline) and every object is validated strictly against the Kubernetes
JSON schemas shipped by the `kubernetes-validate` package (offline). Then what the schemas cannot
know: consumers bounded by partitions, probes, limits, hardening, ordering gates, secrets, settings."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.rules.config import load_rules
from app.settings import DEFAULT_RULES_FILE, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
KUBERNETES_VERSION = "1.32"
SECRET_NAMES = {"carecoord-secrets", "carecoord-kafka-tls"}

Doc = dict[str, Any]


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("neither kustomize nor kubectl is on PATH: `apt-get install kubectl` (Debian) provides it")


@cache
def render(variant: str) -> tuple[Doc, ...]:
    done = subprocess.run(
        [*kustomize_command(), str(VARIANTS[variant])], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")}


def env_config(docs: tuple[Doc, ...]) -> dict[str, str]:
    [config] = [c for name, c in of_kind(docs, "ConfigMap").items() if name.startswith("carecoord-env")]
    return config["data"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_and_validates_against_the_kubernetes_schemas(variant: str) -> None:
    docs = render(variant)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "HorizontalPodAutoscaler", "Job", "Service", "ConfigMap"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_object() -> None:
    broken = dict(of_kind(render("base"), "Deployment")["carecoord-api"])
    broken["spec"] = {**broken["spec"], "replicas": "two", "surprise": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_consumer_replicas_are_bounded_by_the_partition_count(variant: str) -> None:
    docs = render(variant)
    partitions = int(env_config(docs)["CARECOORD_KAFKA_PARTITIONS"])
    hpa = of_kind(docs, "HorizontalPodAutoscaler")["carecoord-consumer"]["spec"]
    deployment = of_kind(docs, "Deployment")["carecoord-consumer"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "carecoord-consumer"
    assert hpa["maxReplicas"] == partitions, "an idle consumer per replica beyond the partitions"
    assert hpa["minReplicas"] <= deployment["replicas"] <= partitions


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_workload_is_probed_limited_hardened_and_gated(variant: str) -> None:
    docs = render(variant)
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {"carecoord-api", "carecoord-consumer", "carecoord-mllp"}
    images = set()
    for name, spec in pod_specs(docs).items():
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            images.add(container["image"])
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
            hardening = container["securityContext"]
            assert hardening["readOnlyRootFilesystem"] and not hardening["allowPrivilegeEscalation"], name
            assert hardening["capabilities"]["drop"] == ["ALL"], name
    assert len(images) == 1, "every process runs the same release"

    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        ports = {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {container["livenessProbe"]["httpGet"]["port"], container["readinessProbe"]["httpGet"]["port"]} <= ports
        [gate] = spec["initContainers"]
        assert gate["command"][:3] == ["carecoord", "migrate", "--wait"], "pods wait for the migration Job"
        pdbs = [p for p in of_kind(docs, "PodDisruptionBudget").values() if p["spec"]["selector"]["matchLabels"]]
        assert any(
            p["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
            for p in pdbs
        ), f"{name} has no PodDisruptionBudget"

    jobs = of_kind(docs, "Job")
    assert jobs["carecoord-migrate"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["carecoord", "migrate"]
    assert jobs["carecoord-kafka-init"]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "carecoord",
        "kafka",
        "init",
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_denies_by_default_and_admits_each_port(variant: str) -> None:
    docs = render(variant)
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies["carecoord-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny
    for d in of_kind(docs, "Deployment").values():
        assert deny["podSelector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    admitted = {
        port["port"] for p in policies.values() for rule in p["spec"].get("ingress", []) for port in rule["ports"]
    }
    assert admitted == {8000, 9000, 2575}
    services = of_kind(docs, "Service")
    assert services["carecoord-mllp"]["spec"]["ports"][0]["port"] == 2575


def test_base_secrets_are_placeholders_and_production_ships_none() -> None:
    secrets = of_kind(render("base"), "Secret")
    assert set(secrets) == SECRET_NAMES
    for secret in secrets.values():
        assert all("PLACEHOLDER" in value for value in secret["stringData"].values())
    assert of_kind(render("production"), "Secret") == {}, "production must never apply placeholder Secrets"

    operations = (ROOT / "docs" / "operations.md").read_text()
    for variant in VARIANTS:
        for spec in pod_specs(render(variant)).values():
            for container in [*spec["containers"], *spec.get("initContainers", [])]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] in SECRET_NAMES
                        assert f"--from-literal={ref['key']}=" in operations, f"docs/operations.md: {ref}"


SECRET_VALUES = {
    "database-url": "postgresql+asyncpg://carecoord:pw@db:5432/carecoord",
    "jwt-secret": "x" * 48,
    "kafka-sasl-username": "carecoord",
    "kafka-sasl-password": "pw",
}


def container_settings(docs: tuple[Doc, ...], container: Doc) -> Settings:
    """The Settings a container starts with: the ConfigMap, its own env, Secret keys filled in."""
    env = dict(env_config(docs))
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = SECRET_VALUES[ref["key"]] if ref else entry["value"]
    known = {f"CARECOORD_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, f"unknown settings: {set(env) - known}"
    fields = {name.removeprefix("CARECOORD_").lower(): value for name, value in env.items()}
    return Settings(**fields | {"rules_file": str(DEFAULT_RULES_FILE)})


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_starts_with_valid_production_settings(variant: str) -> None:
    """Every container, init containers included, must pass the production start-up validation with
    the settings the manifests give it (a gate that cannot start would hold the rollout forever)."""
    docs = render(variant)
    for name, spec in pod_specs(docs).items():
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            settings = container_settings(docs, container)
            assert settings.environment == "production" and not settings.should_create_topics, name
    consumer = of_kind(docs, "Deployment")["carecoord-consumer"]["spec"]["template"]["spec"]["containers"][0]
    settings = container_settings(docs, consumer)
    if variant == "production":
        assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_mechanism.startswith("SCRAM")
        assert settings.kafka_replication_factor == 3
        mounts = {m["mountPath"] for m in consumer["volumeMounts"]}
        assert str(Path(str(settings.kafka_ssl_cafile)).parent) in mounts


def test_the_rules_config_map_is_the_shipped_rules_file() -> None:
    copy = K8S / "base" / "rules.toml"
    assert copy.read_text() == DEFAULT_RULES_FILE.read_text(), "deploy/k8s/base/rules.toml drifted from the default"
    load_rules(copy)
    [rules] = [c for name, c in of_kind(render("base"), "ConfigMap").items() if name.startswith("carecoord-rules")]
    assert rules["data"]["rules.toml"] == copy.read_text()
    assert env_config(render("base"))["CARECOORD_RULES_FILE"] == "/etc/carecoord/rules/rules.toml"
