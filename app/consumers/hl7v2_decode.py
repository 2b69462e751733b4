"""HL7 v2 ADT message -> `EncounterNotice`, a plain value the rules and state logic use without hl7.

Pure: no I/O. Anything that makes a message unusable raises `Hl7DecodeError` naming the field,
so the consumer can dead-letter it with a reason a interface analyst can act on.

The decode reads the message through `Hl7Reader` (python-hl7's accessor semantics). `decode_adt` uses
the fast reader (`hl7v2_fast`: ~0.3 ms instead of ~5.5 ms for a 3 KB message); `decode_adt_reference`
uses python-hl7 itself and is the oracle tests/unit/test_hl7v2_fast.py compares it with, outcome for
outcome. Timing: `.venv/bin/python bench/decode.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import hl7

from app.consumers.adt_events import IDENTIFIER_TRIGGERS, VISIT_TRIGGERS, encounter_class, kind_for_trigger
from app.consumers.hl7_time import Hl7TimeError, parse_date, parse_instant
from app.consumers.hl7v2_fast import parse_er7
from app.encounters.notice import DecodeError, Diagnosis, EncounterNotice, IdentifierChange, PatientIdentifier
from app.fhir.identifiers import system_for_authority

# UB-04 patient discharge status codes meaning the patient died (HL7 table 0112 in the US).
DEFAULT_EXPIRED_DISPOSITIONS = frozenset({"20", "40", "41", "42"})

MLLP_FRAME_CHARS = "\x0b\x1c"
BOM = "\ufeff"  # U+FEFF as the first character: a UTF-8 byte-order mark, not content


class Hl7DecodeError(DecodeError):
    pass


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    default_zone: ZoneInfo
    authority_systems: Mapping[str, str] = field(default_factory=dict)
    expired_dispositions: frozenset[str] = DEFAULT_EXPIRED_DISPOSITIONS
    observation_patient_types: frozenset[str] = frozenset({"OBS"})


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
    """Strip MLLP framing and a leading UTF-8 byte-order mark (Windows tools write one), and accept LF /
    CRLF segment separators as well as CR. Every front door (HTTP, MLLP, Kafka) decodes through here."""
    text = text.strip(MLLP_FRAME_CHARS + "\r\n\t ")
    if text.startswith(BOM):
        text = text.lstrip(BOM).strip(MLLP_FRAME_CHARS + "\r\n\t ")
    return text.replace("\r\n", "\r").replace("\n", "\r") if "\n" in text else text


class SegmentReader(Protocol):
    def component(self, field_no: int, component: int) -> str:
        """`str(seg(field_no)(1)(component)).strip()`: raw (escape sequences kept), '' when absent."""
        ...

    def leaf(self, field_no: int) -> str:
        """The field's raw text when it holds no separator at all (python-hl7 keeps it a plain str,
        so `component` reads it as absent); '' otherwise."""
        ...


class Hl7Reader(Protocol):
    """What the decode reads from a message, with python-hl7's semantics."""

    def __getitem__(self, path: str) -> object:
        """The value at an accessor path (`PID.F3.R1.C4.S1`), unescaped; KeyError when the segment is
        absent, IndexError when the path runs off the message."""
        ...

    def value(self, path: str) -> str:
        """`str(self[path]).strip()`; '' when the segment or component is absent."""
        ...

    def segments(self, name: str) -> Sequence[SegmentReader]:
        """Every segment called `name`, in order; KeyError when there is none."""
        ...


class LibrarySegment:
    __slots__ = ("segment",)

    def __init__(self, segment: hl7.Segment) -> None:
        self.segment = segment

    def component(self, field_no: int, component: int) -> str:
        seg = self.segment
        try:
            return str(seg(field_no)(1)(component)).strip() if len(seg) > field_no else ""
        except (IndexError, KeyError, TypeError):
            return ""

    def leaf(self, field_no: int) -> str:
        seg = self.segment
        if len(seg) <= field_no:
            return ""
        first = seg(field_no)(1)
        return first.strip() if isinstance(first, str) else ""


class LibraryReader:
    """`Hl7Reader` over an `hl7.Message`: the reference implementation."""

    __slots__ = ("message",)

    def __init__(self, message: hl7.Message) -> None:
        self.message = message

    def __getitem__(self, path: str) -> object:
        return self.message[path]

    def value(self, path: str) -> str:
        try:
            return str(self.message[path]).strip()
        except (KeyError, IndexError):
            return ""

    def segments(self, name: str) -> list[LibrarySegment]:
        return [LibrarySegment(seg) for seg in self.message.segments(name)]


def _checked(text: str) -> str:
    text = normalise(text)
    if not text.startswith("MSH"):
        raise Hl7DecodeError("not an HL7 v2 message: first segment must be MSH", "MSH")
    return text


def _parse_library(text: str) -> hl7.Message:
    try:
        return hl7.parse(text)
    except (hl7.ParseException, IndexError, ValueError) as exc:
        raise Hl7DecodeError(f"unparseable HL7 v2 message: {type(exc).__name__}", "MSH") from None


def parse_message(text: str) -> hl7.Message:
    return _parse_library(_checked(text))


def read_message(text: str) -> Hl7Reader:
    """The fast reader; python-hl7 for the rare MSH header the fast reader does not model."""
    text = _checked(text)
    return parse_er7(text) or LibraryReader(_parse_library(text))


def _required(msg: Hl7Reader, path: str, label: str) -> str:
    found = msg.value(path)
    if not found:
        raise Hl7DecodeError(f"{label} is required", label)
    return found


def _instant(msg: Hl7Reader, path: str, label: str, zone: ZoneInfo) -> datetime | None:
    raw = msg.value(path)
    if not raw:
        return None
    try:
        return parse_instant(raw, zone)
    except Hl7TimeError as exc:
        raise Hl7DecodeError(f"{label}: {exc}", label) from None


def _identifiers(
    msg: Hl7Reader, field_path: str, authority_systems: Mapping[str, str], facility: str
) -> list[PatientIdentifier]:
    """A CX list (PID-3, MRG-1): value, and a system from the assigning authority (CX.4). Without a
    CX.4 the sending facility is taken as the authority: an unscoped "12345" from two hospitals must
    not become one patient."""
    found: list[PatientIdentifier] = []
    for rep in range(1, 100):
        try:
            ident = str(msg[f"{field_path}.R{rep}.C1"]).strip()
        except (KeyError, IndexError):
            break
        if not ident:
            continue
        namespace, universal = msg.value(f"{field_path}.R{rep}.C4.S1"), msg.value(f"{field_path}.R{rep}.C4.S2")
        system = system_for_authority(namespace or ("" if universal else facility), universal, authority_systems)
        type_code = msg.value(f"{field_path}.R{rep}.C5")
        # CX.5 is a table-0203 code; some feeds put free text there, which is not a type.
        type_code = type_code if type_code and len(type_code) <= 16 and " " not in type_code else None
        found.append(PatientIdentifier(system=system, value=ident, type_code=type_code))
    return found


def _diagnoses(msg: Hl7Reader) -> tuple[Diagnosis, ...]:
    """DG1-3 (code ^ text ^ coding system); pre-2.5 feeds may put the code in DG1-3 alone."""
    try:
        segments = msg.segments("DG1")
    except KeyError:
        return ()
    found: list[Diagnosis] = []
    for seg in segments:
        # CE "code^text^system"; older feeds send DG1-3 as the bare code (system then in DG1-2).
        code = seg.component(3, 1) or seg.leaf(3)
        if code:
            found.append(Diagnosis(code=code, system=seg.component(3, 3) or seg.component(2, 1) or seg.leaf(2) or None))
    return tuple(found)


def decode_hl7v2(payload: bytes, options: DecodeOptions) -> EncounterNotice:
    return decode_adt(decode_text(payload), options)


def decode_adt(text: str, options: DecodeOptions) -> EncounterNotice:
    return _decode(read_message(text), options)


def decode_adt_reference(text: str, options: DecodeOptions) -> EncounterNotice:
    """`decode_adt` reading through python-hl7 alone: the oracle the fast reader is tested against."""
    return _decode(LibraryReader(parse_message(text)), options)


def _decode(msg: Hl7Reader, options: DecodeOptions) -> EncounterNotice:
    zone = options.default_zone

    message_code = _required(msg, "MSH.F9.R1.C1", "MSH-9")
    if message_code != "ADT":
        raise Hl7DecodeError(f"unsupported message type {message_code[:16]!r}: expected ADT", "MSH-9")
    trigger = (msg.value("MSH.F9.R1.C2") or msg.value("EVN.F1")).upper()
    if not trigger:
        raise Hl7DecodeError("trigger event is required (MSH-9.2 or EVN-1)", "MSH-9")
    control_id = _required(msg, "MSH.F10", "MSH-10")
    facility = msg.value("MSH.F4.R1.C1") or msg.value("MSH.F4.R1.C2")
    if not facility:
        raise Hl7DecodeError("MSH-4 sending facility is required", "MSH-4")
    message_time = _instant(msg, "MSH.F7.R1.C1", "MSH-7", zone)
    if message_time is None:
        raise Hl7DecodeError("MSH-7 is required", "MSH-7")
    recorded_time = _instant(msg, "EVN.F2.R1.C1", "EVN-2", zone)
    event_time = recorded_time or message_time

    if not _has_segment(msg, "PID"):
        raise Hl7DecodeError("PID segment is required", "PID")
    identifiers = _identifiers(msg, "PID.F3", options.authority_systems, facility)
    if not identifiers:
        raise Hl7DecodeError("PID-3 patient identifier list is empty", "PID-3")

    birth_raw = msg.value("PID.F7.R1.C1")
    try:
        birth_date = parse_date(birth_raw) if birth_raw else None
    except Hl7TimeError as exc:
        raise Hl7DecodeError(f"PID-7: {exc}", "PID-7") from None
    if birth_date is not None and birth_date > message_time.date():
        raise Hl7DecodeError("PID-7 birth date is after the message time", "PID-7")

    kind = kind_for_trigger(trigger)
    changes: tuple[IdentifierChange, ...] = ()
    if trigger in IDENTIFIER_TRIGGERS:
        changes = _identifier_changes(msg, trigger, options.authority_systems, facility)
    elif trigger in VISIT_TRIGGERS and not _has_segment(msg, "PV1"):
        raise Hl7DecodeError(f"PV1 segment is required for {trigger}", "PV1")
    prior = [ident for change in changes for ident in change.prior_identifiers]

    admit_time = _instant(msg, "PV1.F44.R1.C1", "PV1-44", zone)
    discharge_time = _instant(msg, "PV1.F45.R1.C1", "PV1-45", zone)
    if admit_time and discharge_time and discharge_time < admit_time:
        raise Hl7DecodeError("PV1-45 discharge time is before PV1-44 admit time", "PV1-45")
    disposition = msg.value("PV1.F36.R1.C1") or None
    patient_class = msg.value("PV1.F2.R1.C1").upper() or None
    death_time = _instant(msg, "PID.F29.R1.C1", "PID-29", zone)
    expired = disposition in options.expired_dispositions
    enc_class = encounter_class(patient_class, msg.value("PV1.F18.R1.C1"), options.observation_patient_types)

    return EncounterNotice(
        source="hl7v2",
        message_id=control_id,
        message_type=f"{message_code}^{trigger}",
        kind=kind,
        facility=facility,
        event_time=event_time,
        event_time_from_envelope=recorded_time is None,
        identifiers=tuple(identifiers),
        family_name=msg.value("PID.F5.R1.C1.S1") or None,
        given_name=msg.value("PID.F5.R1.C2") or None,
        birth_date=birth_date,
        sex=msg.value("PID.F8.R1.C1") or None,
        death_indicator=msg.value("PID.F30.R1.C1").upper() == "Y" or expired,
        death_time=death_time or (discharge_time if expired else None),
        visit_number=msg.value("PV1.F19.R1.C1") or None,
        patient_class=patient_class,
        class_system=enc_class[0] if enc_class else None,
        class_code=enc_class[1] if enc_class else None,
        location="^".join(part for part in (msg.value(f"PV1.F3.R1.C{i}") for i in (1, 2, 3)) if part) or None,
        hospital_service=msg.value("PV1.F10.R1.C1") or None,
        discharge_disposition=disposition,
        admit_time=admit_time,
        discharge_time=discharge_time,
        diagnoses=_diagnoses(msg),
        prior_identifiers=tuple(dict.fromkeys(prior)),
        identifier_changes=changes,
    )


def _identifier_changes(
    msg: Hl7Reader, trigger: str, authority_systems: Mapping[str, str], facility: str
) -> tuple[IdentifierChange, ...]:
    """A40 / A47: each PID is paired with the MRG of its group, in message order."""
    if not _has_segment(msg, "MRG"):
        raise Hl7DecodeError(f"MRG segment is required for {trigger}", "MRG")
    pids, mrgs = len(msg.segments("PID")), len(msg.segments("MRG"))
    if pids != mrgs:
        raise Hl7DecodeError(f"{trigger}: each PID needs its MRG ({pids} PID, {mrgs} MRG segments)", "MRG")
    changes: list[IdentifierChange] = []
    for n in range(1, pids + 1):
        current = _identifiers(msg, f"PID{n}.F3", authority_systems, facility)
        prior = _identifiers(msg, f"MRG{n}.F1", authority_systems, facility)
        if not current:
            raise Hl7DecodeError("PID-3 patient identifier list is empty", "PID-3")
        if not prior:
            raise Hl7DecodeError("MRG-1 prior patient identifier list is empty", "MRG-1")
        changes.append(IdentifierChange(tuple(current), tuple(prior)))
    return tuple(changes)


def _has_segment(msg: Hl7Reader, name: str) -> bool:
    try:
        msg.segments(name)
    except KeyError:
        return False
    return True
