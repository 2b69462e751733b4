"""deploy/Dockerfile and deploy/compose.yaml, checked without a Docker daemon (none on the development
and CI machines): the Dockerfile parsed with Docker's own parser (the `dockerfile` package), the compose
file as YAML against what the service needs. The container health check script is run for real."""

from __future__ import annotations

import fnmatch
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dockerfile
import pytest
import yaml

from app.cli import cli
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CARECOORD_SERVICES = ("migrate", "kafka-init", "api", "consumer", "mllp")


def stages() -> list[list[dockerfile.Command]]:
    found: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DEPLOY / "Dockerfile")):
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in patterns)


def test_dockerfile_is_multi_stage_slim_non_root_with_a_health_check() -> None:
    build, runtime = stages()
    args = {
        c.value[0].split("=")[0]: c.value[0].split("=", 1)[1]
        for c in dockerfile.parse_file(str(DEPLOY / "Dockerfile"))
        if c.cmd == "ARG"
    }
    assert "slim" in args["PYTHON_IMAGE"]
    assert build[0].value[-1] == "build" and runtime[0].value[-1] == "runtime"
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in runtime), "runtime copies the build's venv"
    assert not any(c.cmd == "RUN" and "pip install" in c.value[0] for c in runtime), "no build tools in the runtime"
    [user] = [c.value[0] for c in runtime if c.cmd == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "numeric non-root user (Kubernetes runAsNonRoot can verify it)"
    [health] = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    assert health.value[0] == "CMD"
    [cmd] = [c for c in runtime if c.cmd == "CMD"]
    assert list(cmd.value) == ["carecoord", "serve"]


def test_dockerfile_copies_exist_and_are_in_the_build_context() -> None:
    for stage in stages():
        for command in stage:
            if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags):
                for source in command.value[:-1]:
                    assert (ROOT / source).exists(), source
                    assert not dockerignored(source), f"{source} is excluded by .dockerignore"
    assert dockerignored(".venv") and dockerignored(".env") and dockerignored("var"), "local state stays out"


def test_dockerfile_ports_and_environment_match_the_settings() -> None:
    _, runtime = stages()
    [expose] = [c for c in runtime if c.cmd == "EXPOSE"]
    env: dict[str, str] = {}
    for command in runtime:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    assert {env["CARECOORD_PORT"], env["CARECOORD_OPS_PORT"], env["CARECOORD_MLLP_PORT"]} == set(expose.value)
    known = {f"CARECOORD_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("CARECOORD_")} <= known
    assert env["CARECOORD_ENVIRONMENT"] == "production"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_health_check_script_finds_either_port(health_server: int) -> None:
    script = str(DEPLOY / "healthcheck.py")
    closed = "1"  # nothing listens on port 1

    def check(api: str, ops: str) -> int:
        env = {**os.environ, "CARECOORD_PORT": api, "CARECOORD_OPS_PORT": ops}
        return subprocess.run([sys.executable, script], env=env, timeout=30, check=False).returncode

    assert check(str(health_server), closed) == 0  # serve
    assert check(closed, str(health_server)) == 0  # consume / mllp (operations port)
    assert check(closed, closed) == 1


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_production_like_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", *CARECOORD_SERVICES}
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "KAFKA_ZOOKEEPER_CONNECT" not in kafka, "KRaft"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    commands = {name: services[name]["command"] for name in CARECOORD_SERVICES}
    assert commands["migrate"] == ["carecoord", "migrate"]
    assert commands["kafka-init"] == ["carecoord", "kafka", "init"]
    cli_commands = {c.name or c.callback.__name__ for c in cli.registered_commands} | {
        g.name for g in cli.registered_groups
    }
    assert {c[1] for c in commands.values()} <= cli_commands
    for name in ("api", "consumer", "mllp"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["kafka-init"]["condition"] == "service_completed_successfully", name
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["api"]["environment"]["CARECOORD_RUN_CONSUMERS"] == "false"
    partitions = int(services["consumer"]["environment"]["CARECOORD_KAFKA_PARTITIONS"])
    assert 1 <= services["consumer"]["deploy"]["replicas"] <= partitions
    for name in ("api", "mllp"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), "published on loopback only"


def test_compose_takes_secrets_from_the_environment_only() -> None:
    env = compose()["services"]["api"]["environment"]
    known = {f"CARECOORD_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known
    assert re.fullmatch(r"\$\{CARECOORD_JWT_SECRET:\?[^}]+\}", env["CARECOORD_JWT_SECRET"])
    assert "${CARECOORD_DB_PASSWORD:?" in env["CARECOORD_DATABASE_URL"]
    assert "${CARECOORD_DB_PASSWORD:?" in compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|DATABASE_URL", key):
                assert "${" in str(value), f"{name}: {key} must come from deploy/.env, not the file"
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()
