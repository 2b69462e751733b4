"""Da Vinci Unsolicited Notifications message Bundle -> `EncounterNotice` (pure: no I/O).

The sender (a hospital or an ENS intermediary) posts a FHIR R4 `Bundle` of type `message`
(HL7 Da Vinci Unsolicited Notifications IG, hl7.fhir.us.davinci-alerts): the first entry is a
MessageHeader whose `eventCoding` comes from the IG's notification-event code system, and whose
`focus` is the Encounter; the Encounter references the Patient, and the Bundle carries them and the
Organization / Location / Condition resources they reference.

Mapping (chosen so an ENS notification and an HL7 v2 ADT message about the same visit produce the
same encounter events):

- kind: `notification-admit` / `-discharge` / `-transfer` -> ADMIT / DISCHARGE / TRANSFER (A01 / A03 / A02).
- message_id: Bundle.id (the FHIR messaging duplicate-detection key; idempotency is `davinci|<Bundle.id>`).
- event_time: Bundle.timestamp (the message instant, as MSH-7 is for v2); when absent, the Encounter
  period end (discharge) or start.
- facility: the Encounter.serviceProvider Organization (else MessageHeader.sender): its NPI when it
  has one, else its first identifier value, else its name. Together with the visit number it is the
  encounter key, so an ADT feed for the same hospital must send that value in MSH-4.1.
- visit_number: the Encounter.identifier typed VN (v2-0203), else the first one (ADT PV1-19).
- identifiers: Patient.identifier with system and value (ADT PID-3 through the configured
  assigning-authority systems). Identifiers without a system are skipped: a bare value names nobody.
- class: Encounter.class as sent (v3 ActCode); a v2-0004 code is mapped like ADT PV1-2 (I -> IMP, ...).
- admit_time / discharge_time: Encounter.period start / end (end only once the visit is finished or
  this is a discharge: an in-progress encounter's period end is not a discharge). Date-only values
  and partial dates start at midnight in `DecodeOptions.default_zone`.
- discharge_disposition: hospitalization.dischargeDisposition.coding[0].code (NUBC codes zero-padded
  to their two digits, "1" -> "01", as ADT PV1-36 carries them).
- diagnoses: codings of Encounter.diagnosis.condition, Encounter.reasonCode, and the Bundle's
  Conditions whose `encounter` is the focus Encounter (the IG links diagnoses that way).
- death: Patient.deceasedBoolean / deceasedDateTime, or an expired discharge disposition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from app.api.request_body import InvalidJson, loads
from app.consumers.adt_events import V2_0004, encounter_class
from app.consumers.hl7v2_decode import DecodeOptions
from app.encounters.notice import DecodeError, Diagnosis, EncounterNotice, PatientIdentifier
from app.rules.facts import EncounterEventKind
from app.settings import Settings

__all__ = [
    "EVENT_KINDS",
    "NOTIFICATION_EVENT_SYSTEM",
    "DavinciDecodeError",
    "Entry",
    "ResourceDecoder",
    "SubjectPatient",
    "decode_davinci",
]

NOTIFICATION_EVENT_SYSTEM = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
EVENT_KINDS: dict[str, EncounterEventKind] = {
    "notification-admit": EncounterEventKind.ADMIT,
    "notification-discharge": EncounterEventKind.DISCHARGE,
    "notification-transfer": EncounterEventKind.TRANSFER,
}

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
NUBC_SYSTEMS = frozenset(
    {
        "http://www.nubc.org/patient-discharge",
        "https://www.nubc.org/CodeSystem/PatDischargeStatus",
        "http://terminology.hl7.org/CodeSystem/nubc-UB92",
    }
)
# FHIR administrative-gender -> HL7 v2 table 0001, so both feeds store the same value.
SEX_CODES = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_PATH_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DavinciDecodeError(DecodeError):
    pass


def decode_davinci(payload: bytes, options: DecodeOptions) -> EncounterNotice:
    data = _parse_json(payload)
    bundle = _validate(data)
    return ResourceDecoder(bundle.entry or [], options, bundle).notice()


def _parse_json(payload: bytes) -> dict[str, Any]:
    data = parse_fhir_json(payload, "Bundle", DavinciDecodeError)
    resource_type = data.get("resourceType")
    if resource_type != "Bundle":
        raise DavinciDecodeError(f"expected resourceType Bundle, got {str(resource_type)[:40]!r}", "Bundle")
    return data


_LIMITS = Settings.model_fields  # the documented JSON limits (consumers decode without a request)


def parse_fhir_json(payload: bytes, what: str, error: type[DecodeError] = DecodeError) -> dict[str, Any]:
    """FHIR JSON bytes -> the top-level object; `what` names the expected content in errors."""
    try:
        data = loads(payload, _LIMITS["json_max_depth"].default, _LIMITS["json_max_int_digits"].default)
    except InvalidJson as exc:  # not UTF-8, not JSON, nested too deeply, an integer too long
        raise error(f"not a FHIR JSON {what}: {exc}", what) from None
    if not isinstance(data, dict):
        raise error(f"not a FHIR JSON {what}: expected a JSON object", what)
    return data


def _validate(data: dict[str, Any]) -> Bundle:
    return validate_resource(data, Bundle, DavinciDecodeError)


def validate_resource(data: dict[str, Any], model: type[Any], error: type[DecodeError] = DecodeError) -> Any:
    """fhir.resources R4B validation; its errors name the element, e.g. Bundle.entry[1].resource.period.start."""
    root = model.get_resource_type()
    entries = data.get("entry") if root == "Bundle" else None
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and not known_resource_type(resource.get("resourceType")):
                raise error(
                    f"unknown resourceType {str(resource.get('resourceType'))[:40]!r}",
                    f"Bundle.entry[{i}].resource",
                )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = element_path(err["loc"], root)
        raise error(f"invalid FHIR R4 {root}: {path}: {err['msg']}", path) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise error(f"invalid FHIR R4 {root}: {type(exc).__name__}", root) from None


def known_resource_type(name: object) -> bool:
    if not isinstance(name, str) or not _PATH_PART.match(name):
        return False
    try:
        get_fhir_model_class(name)
    except (ValueError, KeyError, AttributeError):
        return False
    return True


def element_path(loc: Sequence[int | str], root: str = "Bundle") -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PATH_PART.match(part):
            path += f".{part}"
    return path


@dataclass(frozen=True, slots=True)
class SubjectPatient:
    """Who an Encounter is about: identifiers, and the Patient resource when the sender included one."""

    identifiers: tuple[PatientIdentifier, ...]
    resource: Any = None
    path: str = "Patient"


@dataclass(frozen=True, slots=True)
class Entry:
    """A resource the decoder can resolve references to: a Bundle entry, or a contained resource ("#id")."""

    fullUrl: str | None
    resource: Any


class ResourceDecoder:
    """Reference resolution and Encounter mapping over a set of resources (a Bundle's entries)."""

    def __init__(self, entries: Iterable[Any], options: DecodeOptions, bundle: Bundle | None = None) -> None:
        self.bundle = bundle
        self.options = options
        self.entries = list(entries)

    # -- bundle navigation ------------------------------------------------------------------

    def resolve(self, reference: Any, expected: str | None = None) -> tuple[int, Any] | None:
        """(entry index, resource) a Reference points at inside this Bundle: by fullUrl, or Type/id."""
        ref = getattr(reference, "reference", None)
        if not ref:
            return None
        for i, entry in enumerate(self.entries):
            resource = entry.resource
            if resource is None or (expected and resource.get_resource_type() != expected):
                continue
            if entry.fullUrl and entry.fullUrl == ref:
                return i, resource
            if resource.id and (
                ref == f"{resource.get_resource_type()}/{resource.id}"
                or ref.endswith(f"/{resource.get_resource_type()}/{resource.id}")
            ):
                return i, resource
        return None

    def of_type(self, resource_type: str) -> Iterator[tuple[int, Any]]:
        for i, entry in enumerate(self.entries):
            if entry.resource is not None and entry.resource.get_resource_type() == resource_type:
                yield i, entry.resource

    # -- the notice ---------------------------------------------------------------------------

    def notice(self) -> EncounterNotice:
        b = self.bundle
        assert b is not None
        if b.type != "message":
            raise DavinciDecodeError(f"Bundle.type must be 'message', got {str(b.type)[:20]!r}", "Bundle.type")
        if not b.id:
            raise DavinciDecodeError("Bundle.id is required: it identifies the message", "Bundle.id")
        header = self.entries[0].resource if self.entries else None
        if header is None or header.get_resource_type() != "MessageHeader":
            raise DavinciDecodeError("the first Bundle entry must be a MessageHeader", "Bundle.entry[0].resource")
        code, kind = self._event(header)
        enc_index, encounter = self._focus_encounter(header)
        enc_path = f"Bundle.entry[{enc_index}].resource"
        pat_index, patient = self._patient(encounter, enc_path)
        pat_path = f"Bundle.entry[{pat_index}].resource"
        return self.encounter_notice(
            encounter,
            enc_path,
            SubjectPatient(self.identifiers(patient, pat_path), patient, pat_path),
            source="davinci",
            message_id=b.id,
            message_type=code,
            kind=kind,
            message_time=(self.instant(b.timestamp, "Bundle.timestamp"), "Bundle.timestamp"),
            sender=header.sender,
        )

    def encounter_notice(
        self,
        encounter: Any,
        enc_path: str,
        subject: SubjectPatient,
        *,
        source: str,
        message_id: str,
        message_type: str,
        kind: EncounterEventKind,
        message_time: tuple[datetime | None, str],
        sender: Any = None,
    ) -> EncounterNotice:
        """The notice an Encounter resource describes; shared with the FHIR clinical feed so both
        map period, class, facility, visit number, disposition and diagnoses the same way."""
        zone = self.options.default_zone
        admit_time = self.instant(getattr(encounter.period, "start", None), f"{enc_path}.period.start")
        period_end = self.instant(getattr(encounter.period, "end", None), f"{enc_path}.period.end")
        finished = kind is EncounterEventKind.DISCHARGE or encounter.status == "finished"
        discharge_time = period_end if finished else None
        if admit_time and discharge_time and discharge_time < admit_time:
            raise DavinciDecodeError("Encounter.period.end is before Encounter.period.start", f"{enc_path}.period.end")
        event_time = message_time[0] or discharge_time or admit_time
        if event_time is None:
            raise DavinciDecodeError(f"{message_time[1].rsplit('.', 1)[-1]} is required", message_time[1])

        patient, pat_path = subject.resource, subject.path
        birth_date = patient.birthDate if patient is not None and isinstance(patient.birthDate, date) else None
        if birth_date is not None and birth_date > event_time.astimezone(zone).date():
            raise DavinciDecodeError("Patient.birthDate is after the message time", f"{pat_path}.birthDate")
        disposition, expired = self._disposition(encounter)
        deceased_at = (
            self.instant(patient.deceasedDateTime, f"{pat_path}.deceasedDateTime") if patient is not None else None
        )
        enc_class = self._class(encounter)
        family, given = patient_name(patient.name or []) if patient is not None else (None, None)

        return EncounterNotice(
            source=source,
            message_id=message_id,
            message_type=message_type,
            kind=kind,
            facility=self._facility(encounter, sender, enc_path),
            event_time=event_time,
            event_time_from_envelope=message_time[0] is not None,
            identifiers=subject.identifiers,
            family_name=family,
            given_name=given,
            birth_date=birth_date,
            sex=SEX_CODES.get(patient.gender or "") if patient is not None else None,
            death_indicator=(patient is not None and bool(patient.deceasedBoolean))
            or deceased_at is not None
            or expired,
            death_time=deceased_at or (discharge_time if expired else None),
            visit_number=_visit_number(encounter.identifier or []),
            class_system=enc_class[0] if enc_class else None,
            class_code=enc_class[1] if enc_class else None,
            location=self._location(encounter),
            hospital_service=_first_code([encounter.serviceType] if encounter.serviceType else []),
            discharge_disposition=disposition,
            admit_time=admit_time,
            discharge_time=discharge_time,
            diagnoses=self._diagnoses(encounter),
        )

    def _event(self, header: Any) -> tuple[str, EncounterEventKind]:
        coding = header.eventCoding
        if coding is None or not coding.code:
            raise DavinciDecodeError(
                "MessageHeader.eventCoding is required (a Da Vinci notification event)",
                "Bundle.entry[0].resource.eventCoding",
            )
        kind = EVENT_KINDS.get(coding.code)
        if coding.system != NOTIFICATION_EVENT_SYSTEM or kind is None:
            raise DavinciDecodeError(
                f"unsupported event {coding.system or '(no system)'}|{coding.code[:60]}: expected "
                f"{', '.join(EVENT_KINDS)} from {NOTIFICATION_EVENT_SYSTEM}",
                "Bundle.entry[0].resource.eventCoding",
            )
        return coding.code, kind

    def _focus_encounter(self, header: Any) -> tuple[int, Any]:
        focus = header.focus or []
        if not focus:
            raise DavinciDecodeError(
                "MessageHeader.focus is required (the Encounter)", "Bundle.entry[0].resource.focus"
            )
        for ref in focus:
            found = self.resolve(ref, "Encounter")
            if found is not None:
                return found
        raise DavinciDecodeError(
            "MessageHeader.focus does not reference an Encounter in the Bundle", "Bundle.entry[0].resource.focus"
        )

    def _patient(self, encounter: Any, enc_path: str) -> tuple[int, Any]:
        if encounter.subject is None:
            raise DavinciDecodeError("Encounter.subject is required (the Patient)", f"{enc_path}.subject")
        found = self.resolve(encounter.subject, "Patient")
        if found is None:
            raise DavinciDecodeError(
                "Encounter.subject does not reference a Patient in the Bundle", f"{enc_path}.subject"
            )
        return found

    def identifiers(self, patient: Any, pat_path: str) -> tuple[PatientIdentifier, ...]:
        found: list[PatientIdentifier] = []
        for ident in patient.identifier or []:
            if not ident.system or not ident.value or (ident.use == "old"):
                continue
            found.append(PatientIdentifier(system=ident.system, value=ident.value, type_code=_first_code([ident.type])))
        if not found:
            raise DavinciDecodeError("Patient.identifier with system and value is required", f"{pat_path}.identifier")
        return tuple(found)

    def instant(self, value: Any, path: str) -> datetime | None:
        """FHIR instant/dateTime -> aware UTC. Dates and partial dates start at midnight in the default zone."""
        if value is None:
            return None
        zone = self.options.default_zone
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
        if isinstance(value, date):
            return datetime.combine(value, time(), tzinfo=zone).astimezone(UTC)
        text = str(value)
        match = re.fullmatch(r"(\d{4})(?:-(\d{2}))?", text)
        if not match:
            raise DavinciDecodeError(f"not a FHIR dateTime: {text[:32]!r}", path)
        return datetime(int(match[1]), int(match[2] or 1), 1, tzinfo=zone).astimezone(UTC)

    def _class(self, encounter: Any) -> tuple[str | None, str] | None:
        coding = encounter.class_fhir
        if coding is None or not coding.code:
            return None
        if coding.system == V2_0004:
            return encounter_class(coding.code.upper(), None, frozenset())
        return coding.system, coding.code

    def _disposition(self, encounter: Any) -> tuple[str | None, bool]:
        concept = getattr(encounter.hospitalization, "dischargeDisposition", None)
        codings = [c for c in (concept.coding or [] if concept else []) if c.code]
        if not codings:
            return None, False
        first = codings[0]
        code = first.code
        if first.system in NUBC_SYSTEMS and code.isdigit() and len(code) == 1:
            code = code.zfill(2)
        expired = code in self.options.expired_dispositions or any(
            c.system == DISCHARGE_DISPOSITION and c.code == "exp" for c in codings
        )
        return code, expired

    def _facility(self, encounter: Any, sender: Any, enc_path: str) -> str:
        provider = encounter.serviceProvider
        for ref in (provider, sender):
            found = self.resolve(ref, "Organization") if ref is not None else None
            if found is not None:
                org = found[1]
                identifiers = [i for i in org.identifier or [] if i.value]
                npi = next((i.value for i in identifiers if i.system == NPI_SYSTEM), None)
                value = npi or (identifiers[0].value if identifiers else None) or org.name
                if value:
                    return value
        # serviceProvider is always an Organization: a logical reference or its display still names it.
        ident = getattr(provider, "identifier", None)
        if ident is not None and ident.value:
            return ident.value
        if provider is not None and provider.display:
            return provider.display
        raise DavinciDecodeError(
            "Encounter.serviceProvider (the facility) is required and must name an Organization",
            f"{enc_path}.serviceProvider",
        )

    def _location(self, encounter: Any) -> str | None:
        entries = encounter.location or []
        if not entries:
            return None
        current = next((e for e in entries if e.status == "active"), entries[-1])
        found = self.resolve(current.location, "Location")
        if found is not None and found[1].name:
            return found[1].name
        return current.location.display or None

    def _diagnoses(self, encounter: Any) -> tuple[Diagnosis, ...]:
        concepts: list[Any] = []
        for dx in encounter.diagnosis or []:
            found = self.resolve(dx.condition, "Condition")
            if found is not None and found[1].code is not None:
                concepts.append(found[1].code)
        concepts += encounter.reasonCode or []
        for _, condition in self.of_type("Condition"):
            found = self.resolve(condition.encounter, "Encounter") if condition.encounter else None
            if found is not None and found[1] is encounter and condition.code is not None:
                concepts.append(condition.code)
        return tuple(dict.fromkeys(_diagnoses_of(concepts)))


def _diagnoses_of(concepts: Iterable[Any]) -> Iterator[Diagnosis]:
    for concept in concepts:
        for coding in concept.coding or []:
            if coding.code:
                yield Diagnosis(code=coding.code, system=coding.system)


def _first_code(concepts: Iterable[Any]) -> str | None:
    for concept in concepts:
        for coding in getattr(concept, "coding", None) or []:
            if coding.code:
                return coding.code
    return None


def _visit_number(identifiers: Sequence[Any]) -> str | None:
    usable = [i for i in identifiers if i.value]
    for ident in usable:
        if any(c.code == "VN" and c.system in (V2_0203, None) for c in getattr(ident.type, "coding", None) or []):
            return ident.value
    return usable[0].value if usable else None


def patient_name(names: Sequence[Any]) -> tuple[str | None, str | None]:
    usable = [n for n in names if n.use not in ("old", "nickname", "anonymous")] or list(names)
    if not usable:
        return None, None
    name = next((n for n in usable if n.use == "official"), next((n for n in usable if n.use == "usual"), usable[0]))
    return name.family or None, (name.given[0] if name.given else None)
