"""The daily roster cycle over HTTP: upload, job status, change report, exports; roles and audit."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func, select

from app.db.models import AuditEvent
from app.runtime import Runtime
from tests.conftest import bearer, eventually
from tests.roster_builder import csv_text, member, npi


async def upload(client: httpx.AsyncClient, token: str, text: str, name: str, **form: str) -> httpx.Response:
    return await client.post(
        "/rosters/imports",
        headers=bearer(token),
        files={"file": (name, text.encode(), "text/csv")},
        data={"as_of": "2026-11-02", **form},
    )


async def finished(client: httpx.AsyncClient, token: str, job_id: str) -> dict:
    async def probe() -> dict | None:
        body = (await client.get(f"/rosters/imports/{job_id}", headers=bearer(token))).json()
        return body if body["status"] != "queued" else None

    result = await eventually(probe)
    assert result, "import did not finish"
    return result


async def test_upload_then_status_report_and_exports(
    client: httpx.AsyncClient, token_for: Callable[..., str], runtime: Runtime
) -> None:
    data = token_for("DATA")
    day1 = [member(i) for i in range(1, 21)] + [member(99, sex="X")]  # 1 bad row in 21: under the 5% ratio
    r = await upload(client, data, csv_text(day1), "day1.csv")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and r.headers["location"] == f"/rosters/imports/{job['id']}"
    done = await finished(client, data, job["id"])
    assert (done["status"], done["added"], done["error_rows"]) == ("completed", 20, 1)
    assert done["errors"] == [{"line": 22, "field": "sex", "reason": done["errors"][0]["reason"]}]

    again = await upload(client, data, csv_text(day1), "day1.csv")
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["id"] == job["id"]

    day2 = [member(1, pcp_npi=npi(42)), *(member(i) for i in range(3, 22))]  # 2 is gone, 21 is new
    r2 = await upload(client, data, csv_text(day2), "day2.csv", as_of="2026-11-03")
    job2 = await finished(client, data, r2.json()["id"])
    assert (job2["added"], job2["changed"], job2["terminated"], job2["tasks_cancelled"]) == (1, 1, 1, 1)

    changes = (await client.get(f"/rosters/imports/{job2['id']}/changes", headers=bearer(data))).json()
    kinds = sorted((c["kind"], c["member_id"]) for c in changes["changes"])
    assert kinds == [("add", "M000021"), ("change", "M000001"), ("term", "M000002")]
    change = next(c for c in changes["changes"] if c["kind"] == "change")
    assert change["categories"] == ["reassignment"] and change["pcp_npi"] == npi(42)
    report_csv = (await client.get(f"/rosters/imports/{job2['id']}/changes?format=csv", headers=bearer(data))).text
    assert report_csv.splitlines()[0].startswith("kind,member_id,effective_date") and len(report_csv.splitlines()) == 4

    ens = list(csv.DictReader(io.StringIO((await client.get("/rosters/exports/ens", headers=bearer(data))).text)))
    assert [row["member_id"] for row in ens] == [f"M{i:06d}" for i in (1, *range(3, 22))]
    status = list(csv.DictReader(io.StringIO((await client.get("/rosters/exports/status", headers=bearer(data))).text)))
    assert {row["open_tasks"] for row in status} == {"1"} and len(status) == 20
    assert set(status[0]) >= {
        "participation_form_date",
        "care_plan_date",
        "pcp_signoff_date",
        "last_successful_contact",
    }
    atr = await client.get("/rosters/exports/atr?sender=ACO", headers=bearer(data))
    bundle = Bundle.model_validate(json.loads(atr.text))
    assert bundle.entry[0].resource.get_resource_type() == "Group" and bundle.entry[0].resource.quantity == 20

    async with runtime.sessions() as s:
        audited = await s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.actor == "tester"))
    assert audited >= 9

    metrics = await client.get("/metrics", headers=bearer(token_for("METRICS")))
    assert 'carecoord_roster_imports_total{status="completed"}' in metrics.text


@pytest.mark.api_only
async def test_roles_and_problem_details(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    r = await upload(client, token_for("PMC"), csv_text([member(1)]), "x.csv")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    r = await upload(client, token_for("DATA"), csv_text([member(1)]), "x.csv", mapping="nope")
    assert r.status_code == 422 and r.json()["field"] == "mapping"
    r = await client.get("/rosters/imports/00000000-0000-0000-0000-000000000000", headers=bearer(token_for("DATA")))
    assert r.status_code == 404
    assert (await client.get("/rosters/exports/ens")).status_code == 401
    assert (await client.get("/rosters/exports/bogus", headers=bearer(token_for("DATA")))).status_code == 404


async def test_refused_upload_reports_why(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    data = token_for("DATA")
    r = await upload(client, data, "", "empty.csv")
    done = await finished(client, data, r.json()["id"])
    assert done["status"] == "rejected" and "empty" in done["reason"]
