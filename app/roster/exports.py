"""Outbound files, formatted from membership rows: the ENS vendor's subscription roster, the
engagement status file back to the ACO, the change report, and a Da Vinci ATR Group Bundle."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any, Protocol

from app import csv_writer
from app.roster.atr import (
    ATR_GROUP_PROFILE,
    EXT_CHANGE_TYPE,
    EXT_COVERAGE,
    EXT_PROVIDER,
    NPI_SYSTEM,
    SEX_TO_GENDER,
    V2_0203,
)


class Member(Protocol):
    sender: str
    member_id: str
    identifier_system: str
    identifier_value: str
    medicaid_id: str | None
    family: str | None
    given: str | None
    birth_date: date | None
    sex: str | None
    phone: str | None
    address: str | None
    pcp_npi: str | None
    practice: str | None
    program: str | None
    bh_program: bool
    enrollment_start: date | None
    enrollment_end: date | None
    participation_form_date: date | None
    comprehensive_assessment_date: date | None
    care_plan_date: date | None
    pcp_signoff_date: date | None
    last_contact_at: datetime | None


ENS_COLUMNS = (
    "member_id",
    "identifier_system",
    "identifier_value",
    "family",
    "given",
    "birth_date",
    "sex",
    "address",
    "phone",
    "pcp_npi",
    "practice",
    "enrollment_start",
    "enrollment_end",
)
STATUS_COLUMNS = (
    "member_id",
    "identifier_system",
    "identifier_value",
    "program",
    "participation_form_date",
    "comprehensive_assessment_date",
    "care_plan_date",
    "pcp_signoff_date",
    "last_successful_contact",
    "open_tasks",
)
CHANGE_COLUMNS = (
    "kind",
    "member_id",
    "effective_date",
    "categories",
    "fields",
    "previous_pcp_npi",
    "pcp_npi",
    "previous_practice",
    "practice",
    "program",
    "bh_program",
)


def _flag(value: Any) -> Any:
    """Flags as the partners' files spell them (`Y`/`N`); everything else as the shared writer formats it."""
    return ("Y" if value else "N") if isinstance(value, bool) else value


def csv_lines(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """CSV text one line at a time (CRLF, RFC 4180) through the shared writer (app/csv_writer.py),
    which neutralises formula-like cells."""
    return csv_writer.csv_lines(header, ([_flag(v) for v in r] for r in rows))


def ens_row(member: Member) -> list[Any]:
    return [getattr(member, c) for c in ENS_COLUMNS]


def status_row(member: Member, open_tasks: int) -> list[Any]:
    return [
        member.member_id,
        member.identifier_system,
        member.identifier_value,
        member.program,
        member.participation_form_date,
        member.comprehensive_assessment_date,
        member.care_plan_date,
        member.pcp_signoff_date,
        member.last_contact_at,
        open_tasks,
    ]


def change_row(change: Any, member: Member, categories: list[str]) -> list[Any]:
    return [
        change.kind,
        change.member_id,
        change.effective_date,
        " ".join(categories),
        change.fields.replace(",", " "),
        change.previous_pcp_npi,
        member.pcp_npi,
        change.previous_practice,
        member.practice,
        member.program,
        member.bh_program,
    ]


def atr_bundle(members: Iterable[Member], *, sender: str, group_id: str, as_of: date) -> dict[str, Any]:
    """A `collection` Bundle: the ATR Group first, then each member's Patient, Coverage and PCP."""
    entries: list[dict[str, Any]] = []
    group_members = []
    practitioners: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(members, start=1):
        patient_id, coverage_id = f"p{i}", f"c{i}"
        extensions = [
            {"url": EXT_CHANGE_TYPE, "valueCode": "nochange"},
            {"url": EXT_COVERAGE, "valueReference": {"reference": f"Coverage/{coverage_id}"}},
        ]
        if m.pcp_npi:
            practitioners.setdefault(m.pcp_npi, _practitioner(m.pcp_npi))
            extensions.append({"url": EXT_PROVIDER, "valueReference": {"reference": f"Practitioner/npi-{m.pcp_npi}"}})
        period = {k: v.isoformat() for k, v in (("start", m.enrollment_start), ("end", m.enrollment_end)) if v}
        member: dict[str, Any] = {"extension": extensions, "entity": {"reference": f"Patient/{patient_id}"}}
        if period:
            member["period"] = period
        group_members.append(member)
        entries.append(_entry(_patient(patient_id, m)))
        entries.append(_entry(_coverage(coverage_id, patient_id, m, sender)))
    group = {
        "resourceType": "Group",
        "id": group_id,
        "meta": {"profile": [ATR_GROUP_PROFILE]},
        "identifier": [{"system": "urn:carecoord:roster-sender", "value": sender}],
        "active": True,
        "type": "person",
        "actual": True,
        "name": f"{sender} attribution list as of {as_of.isoformat()}",
        "quantity": len(group_members),
        "member": group_members,
    }
    resources = [_entry(group), *entries, *(_entry(p) for p in practitioners.values())]
    return {"resourceType": "Bundle", "type": "collection", "entry": resources}


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"{resource['resourceType']}/{resource['id']}", "resource": resource}


def _patient(patient_id: str, m: Member) -> dict[str, Any]:
    mr = {"coding": [{"system": V2_0203, "code": "MR"}]}
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"type": mr, "system": m.identifier_system, "value": m.identifier_value}],
    }
    name = {k: v for k, v in (("family", m.family), ("given", m.given.split() if m.given else None)) if v}
    if name:
        patient["name"] = [name]
    if m.birth_date:
        patient["birthDate"] = m.birth_date.isoformat()
    if m.sex in SEX_TO_GENDER:
        patient["gender"] = SEX_TO_GENDER[m.sex]
    if m.phone:
        patient["telecom"] = [{"system": "phone", "value": m.phone}]
    if m.address:
        patient["address"] = [{"text": m.address}]
    return patient


def _coverage(coverage_id: str, patient_id: str, m: Member, sender: str) -> dict[str, Any]:
    mb = {"coding": [{"system": V2_0203, "code": "MB"}]}
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": coverage_id,
        "identifier": [{"type": mb, "system": f"urn:carecoord:member-id:{sender}", "value": m.member_id}],
        "status": "active",
        "beneficiary": {"reference": f"Patient/{patient_id}"},
        "payor": [{"display": sender}],
    }
    if m.medicaid_id:
        coverage["subscriberId"] = m.medicaid_id
    return coverage


def _practitioner(npi: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": f"npi-{npi}", "identifier": [{"system": NPI_SYSTEM, "value": npi}]}
