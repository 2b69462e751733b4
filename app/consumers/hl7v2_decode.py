"""HL7 v2 ADT message -> `AdtMessage`, a plain value the rules and state logic can use without hl7.

Pure: no I/O. Anything that makes a message unusable raises `Hl7DecodeError` naming the field,
so the consumer can dead-letter it with a reason a interface analyst can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import hl7

from app.consumers.hl7_time import Hl7TimeError, parse_date, parse_instant
from app.fhir.identifiers import system_for_authority

MLLP_FRAME_CHARS = "\x0b\x1c"


class Hl7DecodeError(ValueError):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class PatientIdentifier:
    system: str
    value: str
    type_code: str | None = None


@dataclass(frozen=True, slots=True)
class AdtMessage:
    control_id: str
    sending_application: str
    sending_facility: str
    message_code: str
    trigger_event: str
    version: str
    message_time: datetime
    event_time: datetime
    identifiers: tuple[PatientIdentifier, ...]
    family_name: str | None
    given_name: str | None
    birth_date: date | None
    sex: str | None
    death_indicator: bool
    death_time: datetime | None
    patient_class: str | None
    location: str | None
    hospital_service: str | None
    visit_number: str | None
    discharge_disposition: str | None
    admit_time: datetime | None
    discharge_time: datetime | None
    diagnosis_codes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def idempotency_key(self) -> str:
        """Stable across resends of the same message: sending facility + MSH-10."""
        return f"hl7v2|{self.sending_facility}|{self.control_id}"

    @property
    def patient_key(self) -> PatientIdentifier:
        """The identifier events are keyed (partitioned) by: the first PID-3 repetition."""
        return self.identifiers[0]


def decode_text(payload: bytes) -> str:
    """Bytes off the wire -> text. UTF-8 unless MSH-18 declares ISO 8859-1 (common in older feeds)."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        head = payload[:512].decode("latin-1")
        if "8859/1" in head.split("\r", 1)[0].split("\n", 1)[0]:
            return payload.decode("latin-1")
        raise Hl7DecodeError("message is not valid UTF-8 and MSH-18 does not declare 8859/1", "MSH-18") from None


def normalise(text: str) -> str:
    """Strip MLLP framing and accept LF / CRLF segment separators as well as CR."""
    text = text.strip(MLLP_FRAME_CHARS + "\r\n\t ")
    return text.replace("\r\n", "\r").replace("\n", "\r")


def parse_message(text: str) -> hl7.Message:
    text = normalise(text)
    if not text.startswith("MSH"):
        raise Hl7DecodeError("not an HL7 v2 message: first segment must be MSH", "MSH")
    try:
        return hl7.parse(text)
    except (hl7.ParseException, IndexError, ValueError) as exc:
        raise Hl7DecodeError(f"unparseable HL7 v2 message: {type(exc).__name__}", "MSH") from None


def value(msg: hl7.Message, path: str) -> str:
    """Field value by python-hl7 accessor path; '' when the segment or component is absent."""
    try:
        return str(msg[path]).strip()
    except (KeyError, IndexError):
        return ""


def _required(msg: hl7.Message, path: str, label: str) -> str:
    found = value(msg, path)
    if not found:
        raise Hl7DecodeError(f"{label} is required", label)
    return found


def _instant(msg: hl7.Message, path: str, label: str, zone: ZoneInfo) -> datetime | None:
    raw = value(msg, path)
    if not raw:
        return None
    try:
        return parse_instant(raw, zone)
    except Hl7TimeError as exc:
        raise Hl7DecodeError(f"{label}: {exc}", label) from None


def _identifiers(msg: hl7.Message, authority_systems: Mapping[str, str]) -> tuple[PatientIdentifier, ...]:
    found: list[PatientIdentifier] = []
    for rep in range(1, 100):
        try:
            ident = str(msg[f"PID.F3.R{rep}.C1"]).strip()
        except (KeyError, IndexError):
            break
        if not ident:
            continue
        system = system_for_authority(
            value(msg, f"PID.F3.R{rep}.C4.S1"), value(msg, f"PID.F3.R{rep}.C4.S2"), authority_systems
        )
        type_code = value(msg, f"PID.F3.R{rep}.C5")
        # CX.5 is a table-0203 code; some feeds put free text there, which is not a type.
        type_code = type_code if type_code and len(type_code) <= 16 and " " not in type_code else None
        found.append(PatientIdentifier(system=system, value=ident, type_code=type_code))
    if not found:
        raise Hl7DecodeError("PID-3 patient identifier list is empty", "PID-3")
    return tuple(found)


def _diagnosis_codes(msg: hl7.Message) -> tuple[str, ...]:
    try:
        segments = msg.segments("DG1")
    except KeyError:
        return ()
    codes = []
    for seg in segments:
        try:
            code = str(seg(3)(1)(1)).strip() if len(seg) > 3 else ""
        except (IndexError, KeyError):
            code = ""
        if code:
            codes.append(code)
    return tuple(codes)


def decode_adt(text: str, *, default_zone: ZoneInfo, authority_systems: Mapping[str, str] | None = None) -> AdtMessage:
    msg = parse_message(text)
    authority_systems = authority_systems or {}

    message_code = _required(msg, "MSH.F9.R1.C1", "MSH-9")
    if message_code != "ADT":
        raise Hl7DecodeError(f"unsupported message type {message_code[:16]!r}: expected ADT", "MSH-9")
    trigger = value(msg, "MSH.F9.R1.C2") or value(msg, "EVN.F1")
    if not trigger:
        raise Hl7DecodeError("trigger event is required (MSH-9.2 or EVN-1)", "MSH-9")
    control_id = _required(msg, "MSH.F10", "MSH-10")
    facility = value(msg, "MSH.F4.R1.C1") or value(msg, "MSH.F4.R1.C2")
    if not facility:
        raise Hl7DecodeError("MSH-4 sending facility is required", "MSH-4")
    message_time = _instant(msg, "MSH.F7.R1.C1", "MSH-7", default_zone)
    if message_time is None:
        raise Hl7DecodeError("MSH-7 is required", "MSH-7")
    event_time = _instant(msg, "EVN.F2.R1.C1", "EVN-2", default_zone) or message_time

    try:
        msg.segment("PID")
    except KeyError:
        raise Hl7DecodeError("PID segment is required", "PID") from None
    identifiers = _identifiers(msg, authority_systems)

    birth_raw = value(msg, "PID.F7.R1.C1")
    try:
        birth_date = parse_date(birth_raw) if birth_raw else None
    except Hl7TimeError as exc:
        raise Hl7DecodeError(f"PID-7: {exc}", "PID-7") from None

    return AdtMessage(
        control_id=control_id,
        sending_application=value(msg, "MSH.F3.R1.C1"),
        sending_facility=facility,
        message_code=message_code,
        trigger_event=trigger,
        version=value(msg, "MSH.F12.R1.C1"),
        message_time=message_time,
        event_time=event_time,
        identifiers=identifiers,
        family_name=value(msg, "PID.F5.R1.C1.S1") or None,
        given_name=value(msg, "PID.F5.R1.C2") or None,
        birth_date=birth_date,
        sex=value(msg, "PID.F8.R1.C1") or None,
        death_indicator=value(msg, "PID.F30.R1.C1").upper() == "Y",
        death_time=_instant(msg, "PID.F29.R1.C1", "PID-29", default_zone),
        patient_class=value(msg, "PV1.F2.R1.C1") or None,
        location="^".join(part for part in (value(msg, f"PV1.F3.R1.C{i}") for i in (1, 2, 3)) if part) or None,
        hospital_service=value(msg, "PV1.F10.R1.C1") or None,
        visit_number=value(msg, "PV1.F19.R1.C1") or None,
        discharge_disposition=value(msg, "PV1.F36.R1.C1") or None,
        admit_time=_instant(msg, "PV1.F44.R1.C1", "PV1-44", default_zone),
        discharge_time=_instant(msg, "PV1.F45.R1.C1", "PV1-45", default_zone),
        diagnosis_codes=_diagnosis_codes(msg),
    )
