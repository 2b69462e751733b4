"""Hostile HTTP input never gives a 500 (app/api/request_body.py, app/api/downloads.py): JSON nested
10,000 deep or with integers of thousands of digits, cursors that decode to such JSON, bodies beyond the
cap (chunked, no Content-Length), oversize headers, tokens without a subject, and download names with
non-ASCII or control characters. Errors are OperationOutcome under /fhir, problem+json elsewhere."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from app.api.auth import mint_token
from app.settings import Settings
from tests.conftest import bearer

DEEP = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
HUGE_INT = b'{"outcome": "reached", "n": ' + b"9" * 5_000 + b"}"  # beyond Python's 4,300-digit int limit
LONG_INT = b'{"outcome": "reached", "n": ' + b"9" * 2_000 + b"}"  # parses in Python, overflows any column
BAD_BODIES = {"deep-array": DEEP, "deep-object": DEEP_OBJECT, "huge-int": HUGE_INT, "long-int": LONG_INT}


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def endpoints() -> list[tuple[str, str, str, bool]]:
    task = uuid.uuid4()
    return [
        ("POST", f"/tasks/{task}/complete", "application/json", False),  # a pydantic body
        ("POST", f"/patients/{uuid.uuid4()}/consents", "application/json", False),
        ("PUT", f"/fhir/Task/{task}", "application/fhir+json", True),  # read by the endpoint itself
        ("POST", "/fhir/CarePlan", "application/fhir+json", True),
        ("POST", "/fhir/Observation", "application/fhir+json", True),  # an ingest front door
        ("POST", "/fhir", "application/fhir+json", True),
    ]


def assert_rendered(response: httpx.Response, status: int, fhir: bool) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    if fhir:
        assert response.headers["content-type"].startswith("application/fhir+json")
        assert response.json()["resourceType"] == "OperationOutcome"
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == status


@pytest.mark.parametrize("kind", sorted(BAD_BODIES))
async def test_hostile_json_bodies_get_400_on_every_kind_of_endpoint(
    kind: str, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    headers = bearer(token_for("INTEGRATION", "SUPERVISOR", "CARE_COORDINATOR"))
    for method, path, media, fhir in endpoints():
        response = await client.request(
            method, path, content=BAD_BODIES[kind], headers={**headers, "Content-Type": media, "If-Match": 'W/"1"'}
        )
        assert_rendered(response, 400, fhir)


# deep enough to exhaust the JSON parser's recursion, short enough to fit the header cap
CURSORS = [b"[" * 3_000 + b"]" * 3_000, b'{"s":' * 1_500 + b"1" + b"}" * 1_500, b'{"s": ' + b"9" * 5_000 + b"}"]


@pytest.mark.parametrize("raw", [*CURSORS, b'{"t": ' + b"1" * 2_000 + b"}", b'{"k": [[[[[[1]]]]]]}'])
async def test_cursors_that_decode_to_hostile_json_are_refused_not_500(
    raw: bytes, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    cursor = cursor_of(raw)
    supervisor = bearer(token_for("SUPERVISOR"))
    tasks = await client.get("/tasks", params={"cursor": cursor}, headers=supervisor)
    assert tasks.status_code == 422 and tasks.json()["field"] == "cursor", tasks.text[:300]
    fhir = await client.get("/fhir/Task", params={"_cursor": cursor}, headers=supervisor)
    assert 400 <= fhir.status_code < 500 and fhir.json()["resourceType"] == "OperationOutcome", fhir.text[:300]
    dead = await client.get("/admin/dead-letters", params={"cursor": cursor}, headers=bearer(token_for("ADMIN")))
    assert dead.status_code == 422 and dead.json()["field"] == "cursor", dead.text[:300]


async def chunks(total: int, size: int = 65_536) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def test_chunked_bodies_beyond_the_cap_get_413_without_content_length(
    client: httpx.AsyncClient, settings: Settings, token_for: Callable[..., str]
) -> None:
    headers = bearer(token_for("INTEGRATION", "SUPERVISOR"))
    over = settings.http_max_body_bytes + 1
    rest = await client.post(
        f"/tasks/{uuid.uuid4()}/complete",
        content=chunks(over),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert "content-length" not in rest.request.headers
    assert_rendered(rest, 413, fhir=False)
    fhir = await client.put(
        f"/fhir/Task/{uuid.uuid4()}", content=chunks(over), headers={**headers, "Content-Type": "application/fhir+json"}
    )
    assert_rendered(fhir, 413, fhir=True)
    ingest = await client.post(
        "/ingest/hl7v2",
        content=chunks(settings.ingest_max_bytes + 1),
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert_rendered(ingest, 413, fhir=False)  # not JSON: counted all the same, against the ingest cap
    fhir_ingest = await client.post(
        "/fhir/Observation",
        content=chunks(settings.ingest_max_bytes + 1),
        headers={**headers, "Content-Type": "application/fhir+json"},
    )
    assert_rendered(fhir_ingest, 413, fhir=True)


async def test_a_declared_length_beyond_the_cap_is_refused_before_reading(
    client: httpx.AsyncClient, settings: Settings, token_for: Callable[..., str]
) -> None:
    body = b"{" + b" " * settings.http_max_body_bytes + b"}"
    response = await client.post(
        f"/tasks/{uuid.uuid4()}/complete",
        content=body,
        headers={**bearer(token_for("SUPERVISOR")), "Content-Type": "application/json"},
    )
    assert_rendered(response, 413, fhir=False)


async def test_oversize_headers_get_431(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get("/tasks", headers={"X-Padding": "a" * settings.http_max_header_bytes})
    assert_rendered(response, 431, fhir=False)
    fhir = await client.get("/fhir/Task", headers={"X-Padding": "a" * settings.http_max_header_bytes})
    assert_rendered(fhir, 431, fhir=True)


@pytest.mark.parametrize("subject", ["", "   "])
async def test_a_token_with_an_empty_subject_is_refused(
    subject: str, client: httpx.AsyncClient, settings: Settings
) -> None:
    token = mint_token(settings, subject, ["SUPERVISOR"], [], 600)
    response = await client.get("/tasks", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert "sub" in response.json()["title"] + response.json().get("detail", "")


@pytest.mark.parametrize("sender", ["Ärzte-Verbund", "名前", "a\u0085b\u2028c", 'x"; filename=evil.exe'])
async def test_download_names_from_query_parameters_are_rfc6266_encoded(
    sender: str, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    response = await client.get("/rosters/exports/ens", params={"sender": sender}, headers=bearer(token_for("DATA")))
    assert response.status_code == 200, response.text[:300]
    disposition = response.headers["content-disposition"]
    assert disposition.isascii() and disposition.isprintable()
    assert disposition.count(";") == 2 and 'evil.exe"' not in disposition
    fallback, extended = disposition.split("; ")[1:]
    assert fallback.startswith('filename="') and extended.startswith("filename*=UTF-8''")
    from urllib.parse import unquote

    visible = "".join(ch for ch in sender if ch.isprintable())
    assert unquote(extended.removeprefix("filename*=UTF-8''")).startswith(f"ens-{visible}-")
