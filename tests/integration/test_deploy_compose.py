"""docker-compose.yml: valid against the Compose specification, and wired consistently.

No Docker engine runs here, so the file is validated against the compose-spec
JSON schema (vendored from check-jsonschema's copy, deploy/schemas) and its
wiring is checked: listeners, mounts, the worker's replicas and grace periods,
and that every `stream` command in it parses with the real CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"
PIPELINE = ROOT / "deploy" / "k8s" / "base" / "pipeline.yaml"
STREAM_SERVICES = ("topic-init", "worker", "loadgen")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, duration
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_compose_file_matches_the_compose_spec() -> None:
    assert schema_errors(compose()) == []


def test_schema_catches_mistakes() -> None:
    document = compose()
    document["services"]["worker"]["deploy"]["replica"] = 2
    document["services"]["kafka"]["helthcheck"] = {}
    errors = " ".join(schema_errors(document))
    assert "replica" in errors and "helthcheck" in errors


def test_the_stack_has_every_service() -> None:
    assert set(compose()["services"]) == {
        "kafka",
        "registry",
        "topic-init",
        "worker",
        "loadgen",
        "prometheus",
        "alertmanager",
        "grafana",
    }


def test_kafka_is_a_single_kraft_node_reachable_from_network_and_host() -> None:
    kafka = compose()["services"]["kafka"]
    image, tag = kafka["image"].split(":")
    major, minor, _patch = (int(part) for part in tag.split("."))
    assert image == "apache/kafka" and major == 4 and (major, minor) >= (4, 1)
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) == set(protocols) == {"INTERNAL", "EXTERNAL", "CONTROLLER"}
    assert advertised == {"INTERNAL": "kafka:19092", "EXTERNAL": "localhost:9092"}
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert kafka["ports"] == ["9092:9092"]  # the EXTERNAL listener, for the host
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1  # single node
    # Every stream container talks to the in-network listener.
    for name in STREAM_SERVICES:
        service = compose()["services"][name]
        assert service["environment"]["STREAM_BOOTSTRAP_SERVERS"] == advertised["INTERNAL"]


def test_worker_runs_two_replicas_built_from_the_deploy_dockerfile() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
    # Replicas cannot share a container name or a fixed host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["expose"] == ["6066"]
    for name in STREAM_SERVICES:
        assert services[name]["image"] == worker["image"]
        assert services[name]["build"] == worker["build"]
    for name in ("worker", "loadgen"):
        condition = services[name]["depends_on"]["topic-init"]["condition"]
        assert condition == "service_completed_successfully"
    assert services["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_worker_shuts_down_within_the_stop_grace_period() -> None:
    worker = compose()["services"]["worker"]
    pipeline = yaml.safe_load(PIPELINE.read_text())
    assert worker["stop_signal"] == "SIGTERM"
    assert pipeline["shutdown_grace"] < seconds(worker["stop_grace_period"])
    assert "/health" in " ".join(worker["healthcheck"]["test"])


def test_stream_commands_parse_with_the_real_cli() -> None:
    from stream.cli import build_parser

    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    services = compose()["services"]
    assert services["worker"]["command"][:1] == ["worker"]
    assert services["topic-init"]["command"][:2] == ["topics", "create"]
    assert services["loadgen"]["command"][:1] == ["loadgen"]
    missing = [name for name in STREAM_SERVICES if services[name]["command"][0] not in registered]
    if missing:
        pytest.skip(f"sub-commands not built yet: {missing}")
    for name in STREAM_SERVICES:
        args = parser.parse_args(services[name]["command"])
        assert callable(args.func), name


def test_bind_mounts_exist_and_match_the_configs() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./"), (name, volume)
            assert (ROOT / source).exists(), (name, source)
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "stream-worker"]
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 6066, "refresh_interval": "15s"}
    ]
    alertmanager = services["alertmanager"]
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in alertmanager["volumes"]
    grafana = services["grafana"]
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/stream.yml").read_text()
    )["providers"][0]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
    for name in ("worker", "topic-init"):
        assert (
            "./deploy/k8s/base/pipeline.yaml:/etc/stream/pipeline.yaml:ro"
            in (services[name]["volumes"])
        )


def test_pipeline_file_loads_as_worker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = pytest.importorskip("stream.config")
    monkeypatch.setenv("STREAM_BOOTSTRAP_SERVERS", "kafka:19092")
    settings = config.load_settings(PIPELINE)
    assert settings.topics.input == "events"
    assert settings.group_id == "stream-workers"
    assert settings.web_port == 6066
