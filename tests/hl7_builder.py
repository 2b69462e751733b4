"""Build HL7 v2 ADT messages by field position, so tests never depend on counting pipes by hand."""

from __future__ import annotations

from collections.abc import Mapping


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
    discharge_time: str = "20261120140000-0500",
    version: str = "2.5.1",
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
            3: f"4W^401^A^{facility}",
            10: hospital_service,
            19: f"{visit_number}^^^{facility}^VN" if visit_number else "",
            36: discharge_disposition,
            44: admit_time,
            45: discharge_time if trigger == "A03" else "",
        },
    )
    return "\r".join([msh, evn, pid, pv1]) + "\r"
