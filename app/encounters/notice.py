"""`EncounterNotice`: what any feed (HL7 v2 ADT, Da Vinci notification) says happened to a visit.

Decoders build notices; everything downstream (state, rules, persistence) sees only notices, so an
admit from ADT and an admit from an ENS Bundle produce the same encounter and the same tasks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import date, datetime

from app.messaging.keys import patient_partition_key
from app.rules.facts import EncounterEventKind


class DecodeError(ValueError):
    """A message that can never be applied as sent; `field` names where it is wrong.

    `http_status` is what an HTTP front door answers: 400 for input that cannot be parsed or is not
    valid FHIR / HL7, 422 for valid input that breaks a business rule (FHIR's distinction)."""

    def __init__(self, reason: str, field: str | None = None, *, http_status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class PatientIdentifier:
    system: str
    value: str
    type_code: str | None = None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    code: str
    system: str | None = None  # as sent: "I10", "ICD-10-CM", a URI ...


@dataclass(frozen=True, slots=True)
class IdentifierChange:
    """One PID/MRG group of an A40 (merge) or A47 (change identifier): the patient's identifiers as they
    are now (PID-3) and the prior ones (MRG-1) being merged into them or replaced by them."""

    identifiers: tuple[PatientIdentifier, ...]
    prior_identifiers: tuple[PatientIdentifier, ...]


@dataclass(frozen=True, slots=True)
class EncounterNotice:
    source: str  # "hl7v2" | "davinci"
    message_id: str  # MSH-10, or the Bundle id
    message_type: str  # "ADT^A03", "notification-discharge"
    kind: EncounterEventKind
    facility: str
    event_time: datetime
    identifiers: tuple[PatientIdentifier, ...]
    family_name: str | None = None
    given_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    death_indicator: bool = False
    death_time: datetime | None = None
    visit_number: str | None = None
    patient_class: str | None = None  # HL7 v2 PV1-2 when the source is v2
    class_system: str | None = None  # FHIR Encounter.class system (v3 ActCode, or v2-0004)
    class_code: str | None = None  # IMP, EMER, AMB, OBSENC, PRENC (ActCode) or a v2-0004 code
    location: str | None = None
    hospital_service: str | None = None
    discharge_disposition: str | None = None
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    diagnoses: tuple[Diagnosis, ...] = field(default_factory=tuple)
    prior_identifiers: tuple[PatientIdentifier, ...] = field(default_factory=tuple)  # MRG-1 of every group
    # A40 / A47: every PID/MRG group, in message order (the first is `identifiers` / its MRG-1).
    identifier_changes: tuple[IdentifierChange, ...] = field(default_factory=tuple)
    # The content hash of the notice as sent, kept when the consumer adjusts a field (an event time
    # clamped to receipt) so the adjusted notice keeps the idempotency key of the message it came from.
    sent_digest: str | None = None
    # The event time is the envelope's (MSH-7, Bundle.timestamp: no EVN-2 / Encounter time was sent). A
    # resend may restamp the envelope, so an envelope time is not part of what the message says.
    event_time_from_envelope: bool = False

    @property
    def message_identity(self) -> str:
        """What the sender calls the message: sending facility + MSH-10 for v2, the Bundle id for FHIR."""
        if self.source == "hl7v2":
            return f"hl7v2|{self.facility}|{self.message_id}"
        return f"{self.source}|{self.message_id}"

    @property
    def content_hash(self) -> str:
        """sha256 of everything the notice says (not its id): an identical resend hashes the same,
        a different message under a reused control id does not. The envelope (MSH-7, Bundle.timestamp)
        is left out, even standing in for the event time, so a resend that only restamps it is the same."""
        if self.sent_digest is not None:
            return self.sent_digest
        skip = _NOT_CONTENT | ({"event_time"} if self.event_time_from_envelope else set())
        said = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        canonical = json.dumps(said, default=_canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def idempotency_key(self) -> str:
        """The same message, resent, has the same key; a reused control id with other content does not."""
        return f"{self.message_identity}|{self.content_hash[:32]}"

    @property
    def patient_key(self) -> PatientIdentifier:
        """The identifier events are keyed (partitioned) by: the first one the feed sends."""
        return self.identifiers[0]

    @property
    def partition_key(self) -> bytes:
        return patient_partition_key(self.patient_key.system, self.patient_key.value)

    @property
    def named_identifiers(self) -> tuple[PatientIdentifier, ...]:
        """Every identifier the message names: PID-3 and MRG-1 of every group."""
        found = [*self.identifiers, *self.prior_identifiers]
        for change in self.identifier_changes:
            found.extend(change.identifiers)
        return tuple(dict.fromkeys(found))

    @property
    def describes_visit(self) -> bool:
        return self.kind not in PATIENT_LEVEL_KINDS


_NOT_CONTENT = frozenset({"message_id", "sent_digest", "event_time_from_envelope"})


def _canonical(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return [getattr(value, f.name) for f in fields(value)]  # type: ignore[arg-type]
    if hasattr(value, "value"):  # an enum
        return value.value  # type: ignore[attr-defined]
    raise TypeError(f"not canonical: {type(value).__name__}")


# Events about the patient record, not a visit: no encounter, no visit rules.
PATIENT_LEVEL_KINDS = frozenset({EncounterEventKind.MERGE, EncounterEventKind.CHANGE_ID, EncounterEventKind.OTHER})
