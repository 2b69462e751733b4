"""carecoord against a peer converter: every in-scope sample ADT message, through the real pipeline,
read back over `GET /fhir/Encounter`, compared with Microsoft FHIR-Converter's expected Encounter.

Each sample (tests/fixtures/samples/hl7v2/) is published to the real broker as a hospital's integration
engine would, applied by the real consumer into a clean database (one parametrized test per sample: the
samples all share MSH-4 + MSH-10, so in one database every message after the first would rightly be a
duplicate), and fetched over FHIR search. Compared fields:

- patient identifiers: every PID-3 value carecoord stored is among the converter's Patient.identifier
  values (values only: systems differ by design; carecoord names an unmapped assigning authority X
  `urn:hl7v2:aa:X`, the converter invents `http://example.com/v2-to-fhir-converter/Identifier/X`);
- the visit number (Encounter.identifier value), class code, status;
- period start and end as instants (the converter renders them at +05:30, carecoord in UTC);
- discharge disposition code (carecoord: the NUBC coding's code, or the text of a non-UB-04 value).

Where carecoord deliberately differs, `DIFFERENCES` names the field, both values and the reason, and the
test asserts carecoord's value (and that the converter still says what the table claims). The converter's
choices are one reasonable mapping, not the standard. Where the two agree on a choice that is not
obvious, the test says so: PV1-2 `P` -> class PRENC (both follow the HL7 v2-to-FHIR ConceptMap
table-0004-to-ActCode), A04 -> in-progress (carecoord's fold: a registration starts the visit).

Sample facts that shape the results: PID-30 = Y in the GHH samples (A01-A05, A08, A11, A13), so carecoord
records those patients as deceased (PID-29 2008) although the visit is in 2015 - it does not affect the
Encounter; PV1-36 carries free text ("Admitted as Inpatient"), not a UB-04 code; EVN-2 is 2029-08-01.

Samples outside carecoord's encounter model (no test; no Encounter to compare):

| sample | event | why not compared |
|---|---|---|
| ADT-A09-01 | patient departing - tracking | location tracking; not a visit state carecoord models |
| ADT-A10-01 | patient arriving - tracking | location tracking |
| ADT-A14-01 | pending admit | pending events are not modelled (only actual admits / pre-admits) |
| ADT-A15-01 | pending transfer | pending events are not modelled |
| ADT-A16-01 | pending discharge | pending events are not modelled |
| ADT-A25-01 | cancel pending discharge | cancels a pending event carecoord does not model |
| ADT-A26-01 | cancel pending transfer | as above |
| ADT-A27-01 | cancel pending admit | as above |
| ADT-A28-01 | add person information | person (master file) maintenance, no visit |
| ADT-A29-01 | delete person information | person maintenance, no visit |
| ADT-A31-01 | update person information | person maintenance, no visit |
| ADT-A40-01 | merge patient - identifier list | modelled as a patient merge (test_adt_semantics.py): no Encounter |
| ADT-A41-01 | merge account | account level, not modelled |
| ADT-A45-01 | move visit information | visit re-parenting, not modelled |
| ADT-A47-01 | change patient identifier list | an identifier change (test_adt_identity_events.py): no Encounter |
| ADT-A60-01 | update adverse reaction information | allergies, not modelled |

(A12 cancel transfer is in scope but has no sample.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import PatientIdentifier
from app.runtime import Runtime
from app.settings import Settings
from tests.access_builder import everyone_in_scope
from tests.conftest import bearer, eventually
from tests.integration.test_adt_pipeline import produce

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
IN_SCOPE = ("A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A13")

CONVERTER_OFFSET_ADMIT = "2015-02-08T15:54:19+05:30"  # PV1-44 / PV2-8 20150208113419+0110
CONVERTER_OFFSET_DISCHARGE = "2015-02-09T15:54:19+05:30"  # PV1-45 / PV2-9 20150209113419+0110


@dataclass(frozen=True)
class Difference:
    converter: Any
    carecoord: Any
    reason: str


DISPOSITION_ONLY_ON_DISCHARGE = (
    "PV1-36 discharge disposition is a fact about a discharge: carecoord's state fold keeps it only once the "
    "encounter is finished, so a value sent on an admit, transfer, registration or pre-admit is not shown "
    "(the converter copies PV1-36 from any message)"
)
DISPOSITION_CLEARED_BY_A13 = (
    "A13 cancels the discharge, and with it the discharge time and disposition; the converter copies PV1-36 "
    "regardless of the event"
)
EXPECTED_DATES_ARE_PLANS = (
    "the converter falls back to PV2-8/PV2-9 (expected admit/discharge date) when PV1-44/PV1-45 are empty; "
    "carecoord's Encounter.period holds only actual times (PV1-44/PV1-45, or the A03 event time): a visit "
    "that has not started or ended has no start or end"
)

# (sample, field) -> Difference. Every other compared field must agree with the converter.
DIFFERENCES: dict[tuple[str, str], Difference] = {
    ("A01", "disposition"): Difference("Admitted as Inpatient", None, DISPOSITION_ONLY_ON_DISCHARGE),
    ("A02", "disposition"): Difference("Admitted as Inpatient", None, DISPOSITION_ONLY_ON_DISCHARGE),
    ("A04", "disposition"): Difference("Admitted as Inpatient", None, DISPOSITION_ONLY_ON_DISCHARGE),
    ("A04", "period.end"): Difference(CONVERTER_OFFSET_DISCHARGE, None, EXPECTED_DATES_ARE_PLANS),
    ("A05", "disposition"): Difference("Admitted as Inpatient", None, DISPOSITION_ONLY_ON_DISCHARGE),
    ("A05", "period.start"): Difference(CONVERTER_OFFSET_ADMIT, None, EXPECTED_DATES_ARE_PLANS),
    ("A05", "period.end"): Difference(CONVERTER_OFFSET_DISCHARGE, None, EXPECTED_DATES_ARE_PLANS),
    ("A11", "disposition"): Difference(
        "Admitted as Inpatient", None, DISPOSITION_ONLY_ON_DISCHARGE + "; a cancelled admit was never discharged"
    ),
    ("A11", "period.end"): Difference(CONVERTER_OFFSET_DISCHARGE, None, EXPECTED_DATES_ARE_PLANS),
    ("A13", "disposition"): Difference("Admitted as Inpatient", None, DISPOSITION_CLEARED_BY_A13),
}

# Same value, different rendering (asserted below, not a value difference): on A03/A08 both carry PV1-36
# "Admitted as Inpatient"; the converter makes it a Coding in an invented system from PV1-36.3 ("ACR"),
# carecoord keeps it as CodeableConcept.text because it is not a UB-04 (NUBC) code and has no known system.
TEXT_DISPOSITIONS = {"A03", "A08"}

# What app/encounters/state.py makes of each event when it is the visit's only one.
STATUS_FROM_FOLD = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "in-progress",
    "A05": "planned",
    "A06": "in-progress",  # class change, first event, no PV1-45: inferred in-progress
    "A07": "in-progress",
    "A08": "finished",  # update, first event, PV1-45 present: inferred finished
    "A11": "cancelled",
    "A13": "in-progress",
}

FIELDS = ("visit_number", "class", "status", "period.start", "period.end", "disposition")


def converter_bundle(trigger: str) -> dict[str, Any]:
    return json.loads((SAMPLES / "hl7v2-expected-fhir" / f"ADT-{trigger}-01-expected.json").read_text("utf-8"))


def only(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (resource,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]
    return resource


def instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, f"{text} has no offset"
    return value


def disposition(encounter: dict[str, Any]) -> str | None:
    concept = encounter.get("hospitalization", {}).get("dischargeDisposition")
    if concept is None:
        return None
    return concept["coding"][0]["code"] if concept.get("coding") else concept.get("text")


def compared(encounter: dict[str, Any], visit_system: str | None) -> dict[str, Any]:
    period = encounter.get("period", {})
    visit_numbers = [i["value"] for i in encounter.get("identifier", []) if visit_system in (None, i.get("system"))]
    return {
        "visit_number": visit_numbers[0] if visit_numbers else None,
        "class": encounter["class"]["code"],
        "status": encounter["status"],
        "period.start": instant(period.get("start")),
        "period.end": instant(period.get("end")),
        "disposition": disposition(encounter),
    }


def converter_values(trigger: str) -> dict[str, Any]:
    encounter = only(converter_bundle(trigger), "Encounter")
    # the converter's first identifier is the visit number (type VN, PV1-19); the second is PV1-50
    (visit,) = [i for i in encounter["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "VN"]
    values = compared(encounter, None)
    values["visit_number"] = visit["value"]
    return values


def test_difference_table_names_only_compared_fields_of_in_scope_samples() -> None:
    assert {sample for sample, _ in DIFFERENCES} <= set(IN_SCOPE)
    assert {field for _, field in DIFFERENCES} <= set(FIELDS)
    assert all(d.reason for d in DIFFERENCES.values())


async def _applied_encounter(client: httpx.AsyncClient, token: str, db: AsyncEngine) -> dict[str, Any] | None:
    await everyone_in_scope(db)  # encounters are read by care roles for patients in their scope
    resp = await client.get("/fhir/Encounter", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body if body["total"] == 1 else None


@pytest.mark.parametrize("trigger", IN_SCOPE)
async def test_sample_matches_peer_converter(
    trigger: str,
    runtime: Runtime,
    settings: Settings,
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
    db: AsyncEngine,
) -> None:
    payload = (SAMPLES / "hl7v2" / f"ADT-{trigger}-01.hl7").read_bytes()
    await produce(settings, payload)
    token = token_for("PMC")
    body = await eventually(lambda: _applied_encounter(client, token, db))
    assert body is not None, f"no encounter applied from ADT-{trigger}-01"
    Bundle.model_validate(body)
    (entry,) = body["entry"]
    ours = entry["resource"]
    assert entry["search"] == {"mode": "match"}

    # Patient identifiers: what carecoord stored from PID-3 is what the converter read.
    patient_id = uuid.UUID(ours["subject"]["reference"].removeprefix("Patient/"))
    async with db.connect() as conn:
        stored = (
            await conn.execute(select(PatientIdentifier.value).where(PatientIdentifier.patient_id == patient_id))
        ).scalars()
        stored_values = set(stored)
    converter_patient = only(converter_bundle(trigger), "Patient")
    assert stored_values, "carecoord stored no PID-3 identifier"
    assert stored_values <= {i["value"] for i in converter_patient["identifier"]}
    assert "PATID1234" in stored_values

    theirs = converter_values(trigger)
    mine = compared(ours, "urn:carecoord:visit:GHHSFacility")
    for field in FIELDS:
        difference = DIFFERENCES.get((trigger, field))
        if difference is None:
            assert mine[field] == theirs[field], (
                f"ADT-{trigger}-01 {field}: carecoord {mine[field]!r}, converter {theirs[field]!r}"
            )
            continue
        documented_converter = instant(difference.converter) if field.startswith("period.") else difference.converter
        assert theirs[field] == documented_converter, f"the converter's {field} is no longer what the table says"
        assert mine[field] == difference.carecoord, f"ADT-{trigger}-01 {field}: {difference.reason}"

    if trigger in TEXT_DISPOSITIONS:
        assert ours["hospitalization"]["dischargeDisposition"] == {"text": "Admitted as Inpatient"}
    # carecoord's own expectations, independent of the converter
    assert ours["status"] == STATUS_FROM_FOLD[trigger]
    for bound in ("start", "end"):
        if bound in ours.get("period", {}):
            assert ours["period"][bound].endswith("+00:00")  # the same instants, rendered in UTC
