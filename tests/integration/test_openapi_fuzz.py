"""Property-based run of every documented operation (schemathesis over /openapi.json) against the real
service: generated requests, valid and not, must never produce a 5xx, and every response must match what
the OpenAPI document says of that status code and media type.

The caller holds every role, team and the Part 2 permission, so requests reach the handlers' logic rather
than stopping at authorization (the authorization matrix is its own test).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from app.api.auth import mint_token
from app.settings import Settings
from tests.conftest import TEST_JWT_SECRET, bearer
from tests.integration.test_cli import CARECOORD, clean_env, wait_until_ready

EVERY_ROLE = ["PMC", "BHCF", "PCF", "RN", "PHARMD", "SUPERVISOR", "ADMIN", "DATA", "INTEGRATION", "PART2", "AUDITOR"]
EXAMPLES = int(os.environ.get("CARECOORD_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = clean_env(
        CARECOORD_JWT_SECRET=TEST_JWT_SECRET,
        CARECOORD_CONSUMER_SESSION_TIMEOUT_MS="2000",
        CARECOORD_CONSUMER_HEARTBEAT_INTERVAL_MS="500",
        CARECOORD_LOG_LEVEL="WARNING",
    )
    if os.environ.get("CARECOORD_DATABASE_URL"):
        env["CARECOORD_DATABASE_URL"] = os.environ["CARECOORD_DATABASE_URL"]
    from app.messaging.embedded_broker import free_loopback_port

    port = free_loopback_port()
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([CARECOORD, "serve", "--port", str(port)], cwd=tmp, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc)
        token = mint_token(Settings(jwt_secret=TEST_JWT_SECRET, var_dir=Path(tmp)), "fuzzer", EVERY_ROLE, ["T1"], 3600)
        yield base, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_no_server_error_and_responses_match_the_document(fuzz_api: tuple[str, str]) -> None:
    """One hypothesis run per operation; every failing operation is reported, not just the first."""
    base, token = fuzz_api
    schema = schemathesis.openapi.from_dict(httpx.get(f"{base}/openapi.json").json())
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base, headers=bearer(token), checks=CHECKS)

        try:
            run()
        except Exception as exc:
            failures[operation.label] = str(exc)[:2000]
    assert operations > 20, "the OpenAPI document lost its operations"
    assert not failures, "\n\n".join(f"{label}:\n{detail}" for label, detail in failures.items())
