"""Build HL7 v2 ADT messages by field position, so tests never depend on counting pipes by hand."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from app.db.models import utcnow

HL7_TS = "%Y%m%d%H%M%S%z"


def hl7_ts(at: datetime) -> str:
    """An aware instant as an HL7 v2 DTM with its offset (`YYYYMMDDHHMMSS+ZZZZ`)."""
    return at.strftime(HL7_TS)


def stay_ended(days_ago: float, *, length_days: float = 5) -> dict[str, str]:
    """`adt()` times for a stay discharged `days_ago` before the clock's now: tests that compare with
    "now" (windows still open or closed, timeliness) stay true on any date."""
    discharged = utcnow() - timedelta(days=days_ago)
    return {
        "admit_time": hl7_ts(discharged - timedelta(days=length_days)),
        "discharge_time": hl7_ts(discharged),
        "event_time": hl7_ts(discharged + timedelta(minutes=25)),
        "message_time": hl7_ts(discharged + timedelta(minutes=30)),
    }


def segment(name: str, fields: Mapping[int, str]) -> str:
    if not fields:
        return name
    values = [""] * max(fields)
    for pos, val in fields.items():
        values[pos - 1] = val
    return "|".join([name, *values])


def adt(
    trigger: str = "A03",
    *,
    control_id: str = "MSG-0001",
    facility: str = "GOODHEALTH",
    message_time: str = "20261120143000-0500",
    event_time: str = "20261120142500-0500",
    mrn: str = "MRN12345",
    authority: str = "GOODHEALTH",
    family: str = "DOE",
    given: str = "JANE",
    birth_date: str = "19700412",
    sex: str = "F",
    death_indicator: str = "",
    patient_class: str = "I",
    hospital_service: str = "MED",
    visit_number: str = "V0001",
    discharge_disposition: str = "01",
    admit_time: str = "20261115083000-0500",
    discharge_time: str | None = None,
    version: str = "2.5.1",
    location: str | None = None,
    patient_type: str = "",
    diagnoses: tuple[tuple[str, str], ...] = (),
    prior_mrn: str = "",
    include_pv1: bool = True,
) -> str:
    msh = "MSH|^~\\&|" + "|".join(
        [
            "ADT1",
            facility,
            "CARECOORD",
            "ACO",
            message_time,
            "",
            f"ADT^{trigger}^ADT_{trigger}",
            control_id,
            "P",
            version,
        ]
    )
    evn = segment("EVN", {1: trigger, 2: event_time})
    pid = segment(
        "PID",
        {1: "1", 3: f"{mrn}^^^{authority}^MR", 5: f"{family}^{given}", 7: birth_date, 8: sex, 30: death_indicator},
    )
    pv1 = segment(
        "PV1",
        {
            1: "1",
            2: patient_class,
            3: location or f"4W^401^A^{facility}",
            18: patient_type,
            10: hospital_service,
            19: f"{visit_number}^^^{facility}^VN" if visit_number else "",
            36: discharge_disposition,
            44: admit_time,
            # PV1-45 defaults only on an A03; pass it explicitly to send it on any event.
            45: discharge_time or ("20261120140000-0500" if trigger == "A03" else ""),
        },
    )
    segments = [msh, evn, pid]
    if prior_mrn:
        segments.append(segment("MRG", {1: f"{prior_mrn}^^^{authority}^MR"}))
    if include_pv1:
        segments.append(pv1)
    segments += [segment("DG1", {1: str(i), 3: f"{code}^^{system}"}) for i, (code, system) in enumerate(diagnoses, 1)]
    return "\r".join(segments) + "\r"
