"""Da Vinci Member Attribution (ATR) List: read a Group of members into roster records, and build one.

Accepted input (HL7 Da Vinci ATR STU2, profile `atr-group`): a Bundle holding the Group and the
Patient, Coverage, Practitioner / PractitionerRole / Organization resources its members reference,
or a Group carrying them in `contained` ("#id" references). Per member:

| roster field | from |
|---|---|
| identifier_system / _value | `member.entity` Patient: the identifier typed MR, else the first with system and value |
| member_id | ext-coverageReference Coverage: identifier typed MB, else subscriberId; else Patient MB; else MR |
| medicaid_id | Coverage.subscriberId |
| family, given, birth_date, sex, phone, address | Patient name[0], birthDate, gender, telecom phone, address[0] |
| pcp_npi | ext-attributedProvider: Practitioner (or PractitionerRole.practitioner) NPI identifier |
| practice | ext-attributedProvider Organization (or PractitionerRole.organization) name, else Group.name |
| enrollment_start / _end | member.period; `inactive` true or ext-changeType `dropped` ends the member |
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.group import Group
from pydantic import ValidationError

from app.roster.delimited import RosterFileError, check_record
from app.roster.records import MAX_LENGTHS, MemberRecord, RowError

ATR = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/"
ATR_GROUP_PROFILE = ATR + "atr-group"
EXT_CHANGE_TYPE = ATR + "ext-changeType"
EXT_COVERAGE = ATR + "ext-coverageReference"
EXT_PROVIDER = ATR + "ext-attributedProvider"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
GENDER_TO_SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
SEX_TO_GENDER = {v: k for k, v in GENDER_TO_SEX.items()}


def read_atr(raw: bytes, *, as_of: date, today: date) -> Iterator[MemberRecord | RowError]:
    group, resolve = _load(raw)
    seen: dict[str, int] = {}
    for index, member in enumerate(group.get("member") or [], start=1):
        result = _member(index, member, group, resolve, as_of)
        if isinstance(result, MemberRecord):
            result = check_record(result, today)
        if isinstance(result, MemberRecord):
            first = seen.setdefault(result.member_id, index)
            if first != index:
                result = RowError(index, "member_id", f"duplicate member_id (first at member {first})")
        yield result


def _load(raw: bytes) -> tuple[dict[str, Any], Any]:
    if not raw.strip():
        raise RosterFileError("file is empty")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = getattr(exc, "pos", getattr(exc, "start", "?"))
        raise RosterFileError(f"not JSON (truncated?): {type(exc).__name__} at position {where}") from None
    if not isinstance(data, dict):
        raise RosterFileError("expected a FHIR Bundle or Group object")
    kind = data.get("resourceType")
    model = {"Bundle": Bundle, "Group": Group}.get(str(kind))
    if model is None:
        raise RosterFileError(f"expected resourceType Bundle or Group, got {str(kind)[:40]!r}")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"] if p != "__root__")
        raise RosterFileError(f"invalid FHIR R4 {kind}: {path}: {err['msg']}") from None
    if kind == "Group":
        contained = {f"#{r.get('id')}": r for r in data.get("contained") or []}
        return data, contained.get
    resources: dict[str, dict[str, Any]] = {}
    groups = []
    for entry in data.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Group":
            groups.append(resource)
        if entry.get("fullUrl"):
            resources[entry["fullUrl"]] = resource
        if resource.get("id"):
            resources[f"{resource.get('resourceType')}/{resource['id']}"] = resource
    if len(groups) != 1:
        raise RosterFileError(f"expected exactly one Group in the Bundle, found {len(groups)}")
    return groups[0], resources.get


def _ext(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension") or [] if e.get("url") == url), None)


def _typed(identifiers: list[dict[str, Any]], code: str) -> dict[str, Any] | None:
    for ident in identifiers:
        codings = (ident.get("type") or {}).get("coding") or []
        if any(c.get("code") == code and c.get("system", V2_0203) == V2_0203 for c in codings) and ident.get("value"):
            return ident
    return None


def _member(
    index: int, member: dict[str, Any], group: dict[str, Any], resolve: Any, as_of: date
) -> MemberRecord | RowError:
    path = f"Group.member[{index - 1}]"
    ref = (member.get("entity") or {}).get("reference")
    patient = resolve(ref) if ref else None
    if not patient or patient.get("resourceType") != "Patient":
        return RowError(index, f"{path}.entity", "does not reference a Patient in the file")
    identifiers = patient.get("identifier") or []
    chosen = _typed(identifiers, "MR") or next((i for i in identifiers if i.get("system") and i.get("value")), None)
    if chosen is None or not chosen.get("system"):
        return RowError(index, f"{path}.entity", "Patient has no identifier with system and value")

    coverage_ext = _ext(member, EXT_COVERAGE)
    coverage_ref = ((coverage_ext or {}).get("valueReference") or {}).get("reference")
    coverage = resolve(coverage_ref) if coverage_ref else None
    subscriber = (coverage or {}).get("subscriberId")
    coverage_number = _typed((coverage or {}).get("identifier") or [], "MB")
    patient_number = _typed(identifiers, "MB")
    member_id = (
        (coverage_number or {}).get("value") or subscriber or (patient_number or {}).get("value") or chosen["value"]
    )

    pcp_npi, practice = _provider(member, resolve)
    period = member.get("period") or {}
    start, end = _date(period.get("start")), _date(period.get("end"))
    change = ((_ext(member, EXT_CHANGE_TYPE) or {}).get("valueCode") or "").lower()
    if (member.get("inactive") or change == "dropped") and (end is None or end >= as_of):
        end = as_of - timedelta(days=1)

    name = (patient.get("name") or [{}])[0]
    phone = next((t.get("value") for t in patient.get("telecom") or [] if t.get("system") == "phone"), None)
    values = {
        "member_id": member_id,
        "identifier_system": chosen["system"],
        "identifier_value": chosen["value"],
        "family": name.get("family"),
        "given": " ".join(name.get("given") or []) or None,
        "birth_date": _date(patient.get("birthDate")),
        "sex": GENDER_TO_SEX.get(patient.get("gender") or ""),
        "phone": phone,
        "address": _address((patient.get("address") or [None])[0]),
        "pcp_npi": pcp_npi,
        "practice": practice or group.get("name"),
        "program": "ACO",
        "enrollment_start": start,
        "enrollment_end": end,
        "medicaid_id": subscriber,
    }
    for field, limit in MAX_LENGTHS.items():
        value = values.get(field)
        if isinstance(value, str) and len(value) > limit:
            return RowError(index, field, f"longer than {limit} characters")
    return MemberRecord(line=index, **values)  # type: ignore[arg-type]


def _provider(member: dict[str, Any], resolve: Any) -> tuple[str | None, str | None]:
    ref = ((_ext(member, EXT_PROVIDER) or {}).get("valueReference") or {}).get("reference")
    provider = resolve(ref) if ref else None
    if not provider:
        return None, None
    kind = provider.get("resourceType")
    if kind == "Organization":
        return None, provider.get("name")
    if kind == "PractitionerRole":
        practitioner = resolve((provider.get("practitioner") or {}).get("reference") or "") or {}
        organization = resolve((provider.get("organization") or {}).get("reference") or "") or {}
        return _npi(practitioner), organization.get("name")
    return _npi(provider), None


def _npi(resource: dict[str, Any]) -> str | None:
    return next((i.get("value") for i in resource.get("identifier") or [] if i.get("system") == NPI_SYSTEM), None)


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value and len(value) >= 10 else None


def _address(address: dict[str, Any] | None) -> str | None:
    if not address:
        return None
    parts = [*(address.get("line") or []), address.get("city"), address.get("state"), address.get("postalCode")]
    return ", ".join(p for p in parts if p) or None
