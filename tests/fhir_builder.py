"""FHIR R4 clinical resources for tests: the fixture files (written from the FHIR and LOINC specs)
and small builders for variations of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fhir-clinical"
LOINC = "http://loinc.org"
MRN_SYSTEM = "http://example.org/fhir/mrn"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def encode(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource).encode()


def subject(mrn: str) -> dict[str, Any]:
    return {"identifier": {"system": MRN_SYSTEM, "value": mrn}}


def observation(
    code: str = "44261-6",
    *,
    mrn: str = "MRN-SCREEN-1",
    ident: str = "OBS-1",
    status: str = "final",
    value: dict[str, Any] | None = None,
    effective: str = "2026-11-20T10:15:00-05:00",
) -> dict[str, Any]:
    """A screening Observation like the PHQ-9 fixture; `value` replaces its valueQuantity."""
    obs = fixture("observation-phq9-total")
    obs["identifier"][0]["value"] = ident
    obs["code"] = {"coding": [{"system": LOINC, "code": code}]}
    obs["subject"] = subject(mrn)
    obs["status"] = status
    obs["effectiveDateTime"] = effective
    if value is not None:
        del obs["valueQuantity"]
        obs.update(value)
    return obs


def phq9_response(
    *, mrn: str = "MRN-SCREEN-1", ident: str = "QR-0001", scores: list[int] | None = None
) -> dict[str, Any]:
    """The PHQ-9 response fixture (no total), optionally with other item scores (0..3 each)."""
    qr = fixture("questionnaireresponse-phq9-no-total")
    qr["identifier"]["value"] = ident
    qr["subject"] = subject(mrn)
    if scores is not None:
        codes = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]
        for item, score in zip(qr["item"][0]["item"], scores, strict=True):
            item["answer"] = [{"valueCoding": {"system": LOINC, "code": codes[score]}}]
    return qr


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": copy.deepcopy(r), "request": {"method": "POST", "url": r["resourceType"]}} for r in resources
        ],
    }


SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
MED_REC_SNOMED = "430193006"  # Medication reconciliation (procedure)
MED_REC_CPT2 = "1111F"  # discharge medications reconciled with the current medication list


def med_rec_procedure(
    *,
    mrn: str = "MRN12345",
    ident: str = "MR-1",
    status: str = "completed",
    performed: str | None = "2026-11-21T10:00:00-05:00",
    system: str = SNOMED,
    code: str = MED_REC_SNOMED,
) -> dict[str, Any]:
    """A medication reconciliation as a FHIR R4 Procedure (status, code, subject, performed[x])."""
    procedure: dict[str, Any] = {
        "resourceType": "Procedure",
        "identifier": [{"system": "http://example.org/fhir/procedure", "value": ident}],
        "status": status,
        "code": {"coding": [{"system": system, "code": code, "display": "Medication reconciliation"}]},
        "subject": subject(mrn),
    }
    if performed is not None:
        procedure["performedDateTime"] = performed
    return procedure


def med_rec_observation(
    *, mrn: str = "MRN12345", ident: str = "MRO-1", status: str = "final", effective: str = "2026-11-21T10:00:00-05:00"
) -> dict[str, Any]:
    """CPT II 1111F recorded as an Observation (how some EHRs send quality codes)."""
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "http://example.org/fhir/observation", "value": ident}],
        "status": status,
        "code": {"coding": [{"system": CPT, "code": MED_REC_CPT2}]},
        "subject": subject(mrn),
        "effectiveDateTime": effective,
    }


CONSULT_NOTE = "11488-4"  # LOINC Consult note (C-CDA Consult Document Type)


def consult_note(
    *,
    mrn: str = "MRN12345",
    ident: str = "DOC-1",
    status: str = "current",
    doc_status: str | None = "final",
    date: str | None = "2026-12-01T16:00:00-05:00",
    code: str = CONSULT_NOTE,
) -> dict[str, Any]:
    """A consult summary as a FHIR R4 DocumentReference (status, type, subject, date, content)."""
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": "http://example.org/fhir/document", "value": ident}],
        "status": status,
        "type": {"coding": [{"system": LOINC, "code": code, "display": "Consult note"}]},
        "subject": subject(mrn),
        "content": [{"attachment": {"contentType": "application/pdf", "url": "https://bh.example.org/notes/1"}}],
    }
    if doc_status is not None:
        document["docStatus"] = doc_status
    if date is not None:
        document["date"] = date
    return document
