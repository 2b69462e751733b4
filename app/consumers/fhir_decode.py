"""FHIR R4 clinical payload -> `FhirMessage` (pure: no I/O).

A payload is one resource (Encounter, Observation, Procedure, DocumentReference, Questionnaire,
QuestionnaireResponse) or a Bundle
(`transaction`, `batch` or `collection`) of them, with the Patient / Organization / Location /
Condition / Practitioner resources they reference. Validation is fhir.resources' R4B models (R4 JSON);
every error names the element path (`Observation.valueQuantity.code`, `Bundle.entry[2].resource.code`).
HTTP status: 400 for what is not valid FHIR, 422 for valid FHIR that breaks a rule below.

Rules (docs/fhir-clinical.md has the full table):
- Observation: `code` must carry a screening LOINC code (instrument totals, PHQ-9 item 9); a result
  with status final / amended / corrected needs `effective[x]` (or `issued`) and a value as
  `valueInteger` or `valueQuantity` with UCUM `{score}`, a whole number in the instrument's range.
- QuestionnaireResponse: `questionnaire` (canonical) and `subject` required; completed / amended
  ones need `authored`. Scored against the Questionnaire registry (in the same Bundle, earlier, or
  when the Questionnaire arrives later).
- Procedure / DocumentReference, and an Observation coded with a rules-file evidence code instead of a
  screening code: evidence (`EvidenceItem`); its `code` (DocumentReference: `type`) must carry one of
  the rules' evidence codes, and a completed / final / current one needs its time (performed[x],
  effective[x], date).
- Questionnaire: `url` required, and it must be a supported instrument (app/screening/scoring.py).
- Encounter: mapped like a Da Vinci notification's Encounter (app/consumers/davinci_decode.py),
  its event kind taken from `status`, its event time from `meta.lastUpdated` (else the period).
- subject: a Patient in the Bundle or contained, a logical reference (`identifier` system + value),
  or `Patient/{id}` of a carecoord patient (not for Encounters: visits are keyed by identifier).

Identity (conditional create): the first `identifier` with system and value (Questionnaire: url|version);
without one, the content itself. A resend with the same identity and content is a duplicate; the
same identity with other content is a new version of the resource (amended, corrected, retracted).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from app.consumers.davinci_decode import (
    SEX_CODES,
    DavinciDecodeError,
    Entry,
    ResourceDecoder,
    SubjectPatient,
    parse_fhir_json,
    patient_name,
    validate_resource,
)
from app.consumers.hl7v2_decode import DecodeOptions
from app.encounters.notice import DecodeError, EncounterNotice, PatientIdentifier
from app.messaging.keys import patient_partition_key
from app.rules.facts import EncounterEventKind as K
from app.screening.instruments import (
    BY_TOTAL_CODE,
    LOINC,
    LOINC_ANSWER_SCORES,
    PHQ9_ITEM9,
    SCREENING_OBSERVATION_CODES,
    InstrumentId,
)
from app.screening.scoring import QuestionnaireDefinition, Score, ScoringError, score_response, whole_score
from app.state.limits import check_lengths

CLINICAL_TYPES = (
    "Encounter",
    "Observation",
    "Procedure",
    "DocumentReference",
    "Questionnaire",
    "QuestionnaireResponse",
)
EVIDENCE_TYPES = ("Procedure", "DocumentReference")  # taken only when coded with a rule's evidence code
SUPPORTING_TYPES = frozenset({"Patient", "Organization", "Location", "Condition", "Practitioner", "PractitionerRole"})
BUNDLE_TYPES = ("transaction", "batch", "collection")
RESULT_STATUSES = frozenset({"final", "amended", "corrected"})  # Observation.status that count
RESPONSE_STATUSES = frozenset({"completed", "amended"})  # QuestionnaireResponse.status that count
PROCEDURE_DONE = "completed"  # Procedure.status (EventStatus) that counts as evidence
DOCUMENT_CURRENT = "current"  # DocumentReference.status that counts (document-reference-status)
DOCUMENT_FINAL = frozenset({"final", "amended"})  # DocumentReference.docStatus that counts (or none given)
RETRACTED = "entered-in-error"
SCORE_UNIT = "{score}"
UCUM = "http://unitsofmeasure.org"
ITEM9_MAX = 3
PHQ9_TOTAL = next(code for code, i in BY_TOTAL_CODE.items() if i.id is InstrumentId.PHQ9)
# Encounter.status -> the ADT-equivalent event (A05, A01, A03, A11, A08).
ENCOUNTER_KINDS = {
    "planned": K.PREADMIT,
    "arrived": K.ADMIT,
    "triaged": K.ADMIT,
    "in-progress": K.ADMIT,
    "onleave": K.ADMIT,
    "finished": K.DISCHARGE,
    "cancelled": K.CANCEL_ADMIT,
    RETRACTED: K.CANCEL_ADMIT,
    "unknown": K.UPDATE,
}
# Required bindings (FHIR R4 value sets observation-status, questionnaire-answers-status,
# encounter-status, publication-status).
STATUSES = {
    "Observation": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", RETRACTED, "unknown"}
    ),
    "QuestionnaireResponse": frozenset({"in-progress", "completed", "amended", RETRACTED, "stopped"}),
    "Encounter": frozenset(ENCOUNTER_KINDS),
    "DocumentReference": frozenset({DOCUMENT_CURRENT, "superseded", RETRACTED}),
    "Procedure": frozenset(
        {"preparation", "in-progress", "not-done", "on-hold", "stopped", PROCEDURE_DONE, RETRACTED, "unknown"}
    ),
    "Questionnaire": frozenset({"draft", "active", "retired", "unknown"}),
}
_LOCAL_PATIENT = re.compile(r"(?:^|/)Patient/([0-9a-fA-F-]{36})$")


class FhirDecodeError(DecodeError):
    pass


def _rule(reason: str, path: str) -> FhirDecodeError:
    """Valid FHIR that carecoord cannot use: 422, as FHIR asks for business-rule violations."""
    return FhirDecodeError(reason, path, http_status=422)


@dataclass(frozen=True, kw_only=True)
class PatientRef:
    """Who a resource is about, as the sender said it: identifiers (and demographics when a Patient
    resource came along), or the id of a patient carecoord already knows."""

    identifiers: tuple[PatientIdentifier, ...] = ()
    local_id: uuid.UUID | None = None
    family_name: str | None = None
    given_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    death_indicator: bool = False
    death_time: datetime | None = None

    @property
    def patient_key(self) -> PatientIdentifier:
        return self.identifiers[0]


@dataclass(frozen=True, kw_only=True)
class Item:
    resource_type: str
    path: str  # element path of the resource in the payload
    identity: str
    content: dict[str, Any]  # the resource JSON as received
    content_hash: str

    @property
    def idempotency_key(self) -> str:
        return f"fhir|{self.resource_type}|{_digest(self.identity, self.content_hash)}"


@dataclass(frozen=True, kw_only=True)
class EncounterItem(Item):
    notice: EncounterNotice


@dataclass(frozen=True, kw_only=True)
class ObservationItem(Item):
    patient: PatientRef
    status: str
    code: str  # the screening LOINC code
    value: int | None
    item9: int | None = None  # PHQ-9 item 9 sent as a component of the PHQ-9 total
    effective_at: datetime | None


# Per evidence resource type, the statuses that count (also what the rules load from storage).
COUNTING_STATUSES = {
    "Procedure": frozenset({PROCEDURE_DONE}),
    "Observation": RESULT_STATUSES,
    "DocumentReference": frozenset({DOCUMENT_CURRENT}),
}


@dataclass(frozen=True, kw_only=True)
class EvidenceItem(Item):
    """A Procedure or Observation coded as evidence of work a rule waits for (medication
    reconciliation: the rules file's `complete.evidence_codes`)."""

    patient: PatientRef
    status: str
    code: str  # "system|code", one of the rules' evidence codes
    performed_at: datetime | None

    @property
    def counts(self) -> bool:
        """Done and dated: a completed Procedure, a final/amended/corrected Observation, a current
        DocumentReference (its docStatus final or amended, or not given)."""
        return self.status in COUNTING_STATUSES[self.resource_type] and self.performed_at is not None


@dataclass(frozen=True, kw_only=True)
class QuestionnaireItem(Item):
    definition: QuestionnaireDefinition


@dataclass(frozen=True, kw_only=True)
class ResponseItem(Item):
    patient: PatientRef
    status: str
    questionnaire_url: str
    questionnaire_version: str | None
    authored_at: datetime | None
    response: Any  # the validated QuestionnaireResponse, scored at apply time against the registry
    score: Score | None = None  # already scored when its Questionnaire came in the same payload


@dataclass(frozen=True, slots=True)
class FhirMessage:
    message_id: str  # sha256 of the payload: the event id the front door returns
    items: tuple[Item, ...]

    @property
    def idempotency_key(self) -> str:
        return f"fhir|message|{self.message_id}"

    @property
    def identifiers(self) -> tuple[PatientIdentifier, ...]:
        """Every patient identifier the payload names (the dead-letter audit trail lists them)."""
        found: list[PatientIdentifier] = []
        for item in self.items:
            ref = item.notice if isinstance(item, EncounterItem) else getattr(item, "patient", None)
            found.extend(ref.identifiers if ref is not None else ())
        return tuple(dict.fromkeys(found))

    @property
    def prior_identifiers(self) -> tuple[PatientIdentifier, ...]:
        return ()

    @property
    def named_identifiers(self) -> tuple[PatientIdentifier, ...]:
        return self.identifiers

    @property
    def partition_key(self) -> bytes:
        """One patient's resources share a partition, so they apply in order."""
        if self.identifiers:
            key = self.identifiers[0]
            return patient_partition_key(key.system, key.value)
        local = next((p.local_id for i in self.items if (p := getattr(i, "patient", None)) and p.local_id), None)
        if local is not None:  # named by carecoord id: that patient's results stay in order too
            return patient_partition_key("urn:carecoord:patient", str(local))
        return patient_partition_key("urn:carecoord:message", self.message_id)


def decode_fhir(payload: bytes, options: DecodeOptions, evidence_codes: frozenset[str] = frozenset()) -> FhirMessage:
    """`evidence_codes`: the "system|code"s the rules take as evidence (`RuleEngine.evidence_codes`);
    a Procedure must carry one, an Observation one of them or a screening code."""
    data = parse_fhir_json(payload, "resource", FhirDecodeError)
    resource_type = data.get("resourceType")
    if resource_type == "Bundle":
        bundle = validate_resource(data, Bundle, FhirDecodeError)
        raw_entries = data.get("entry") or []
        entries = _bundle_entries(bundle, raw_entries)
        context = [Entry(e.fullUrl, e.resource) for e in bundle.entry or []]
    elif resource_type in CLINICAL_TYPES:
        resource = validate_resource(data, get_fhir_model_class(resource_type), FhirDecodeError)
        entries = [(resource_type, resource, data)]
        context = []
    else:
        raise FhirDecodeError(
            f"resourceType {str(resource_type)[:40]!r} is not accepted: send {', '.join(CLINICAL_TYPES)} or a Bundle",
            "resourceType",
        )
    decoder = _Decoder(context, options, evidence_codes)
    try:
        items = [decoder.item(path, resource, raw) for path, resource, raw in entries]
    except DavinciDecodeError as exc:  # the shared Encounter / Patient mapping's rules
        raise _rule(exc.reason, exc.field or "resource") from None
    definitions = {
        (i.definition.url, i.definition.version): i.definition for i in items if isinstance(i, QuestionnaireItem)
    }
    items = [decoder.scored(i, definitions) if isinstance(i, ResponseItem) else i for i in items]
    # Questionnaires first: a response in the same Bundle is scored against them.
    items.sort(key=lambda i: not isinstance(i, QuestionnaireItem))
    return FhirMessage(hashlib.sha256(payload).hexdigest(), tuple(items))


def _bundle_entries(bundle: Bundle, raw_entries: list[Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    if bundle.type not in BUNDLE_TYPES:
        raise _rule(
            f"Bundle.type must be one of {', '.join(BUNDLE_TYPES)}, got {str(bundle.type)[:20]!r}", "Bundle.type"
        )
    found = []
    for i, entry in enumerate(bundle.entry or []):
        path = f"Bundle.entry[{i}].resource"
        if entry.resource is None:
            raise _rule("every entry needs a resource", path)
        method = getattr(entry.request, "method", None)
        if method not in (None, "POST", "PUT"):
            raise _rule(
                f"request.method {method} is not supported: entries are created (POST)",
                f"Bundle.entry[{i}].request.method",
            )
        kind = entry.resource.get_resource_type()
        if kind in CLINICAL_TYPES:
            found.append((path, entry.resource, raw_entries[i]["resource"]))
        elif kind not in SUPPORTING_TYPES:
            raise _rule(f"resourceType {kind} is not accepted in a clinical Bundle", path)
    if not found:
        raise _rule(f"the Bundle holds none of {', '.join(CLINICAL_TYPES)}", "Bundle.entry")
    return found


def _digest(identity: str, content_hash: str) -> str:
    return hashlib.sha256(f"{identity}\n{content_hash}".encode()).hexdigest()


def _content_hash(raw: dict[str, Any]) -> str:
    """What the resource says, without what servers rewrite (id, meta, narrative)."""
    content = {k: v for k, v in raw.items() if k not in ("id", "meta", "text")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _Decoder:
    def __init__(self, context: list[Entry], options: DecodeOptions, evidence_codes: frozenset[str]) -> None:
        self.context = context
        self.options = options
        self.evidence_codes = evidence_codes

    def item(self, path: str, resource: Any, raw: dict[str, Any]) -> Item:
        kind = resource.get_resource_type()
        status = getattr(resource, "status", None)
        if status not in STATUSES[kind]:
            # fhir.resources does not check required code bindings; FHIR R4 does.
            raise FhirDecodeError(
                f"status {str(status)[:40]!r} is not one of {', '.join(sorted(STATUSES[kind]))}", f"{path}.status"
            )
        # Contained resources resolve as "#id" within their own resource only.
        resolver = ResourceDecoder(
            [*self.context, *(Entry(f"#{c.id}", c) for c in resource.contained or [] if c.id)], self.options
        )
        content_hash = _content_hash(raw)
        common = {"resource_type": kind, "path": path, "content": raw, "content_hash": content_hash}
        if kind == "Questionnaire":
            try:
                definition = QuestionnaireDefinition.of(resource, path)
            except ScoringError as exc:
                raise _rule(exc.reason, exc.field) from None
            return QuestionnaireItem(identity=f"{definition.url}|{definition.version}", definition=definition, **common)
        identity = _identity(resource, content_hash)
        if kind == "Encounter":
            return EncounterItem(
                identity=identity, notice=self._encounter(resolver, resource, path, identity, content_hash), **common
            )
        patient = self._subject(resolver, resource.subject, path)
        evidence = self._evidence_code(resource) if kind in (*EVIDENCE_TYPES, "Observation") else None
        if kind in EVIDENCE_TYPES or (kind == "Observation" and evidence is not None):
            return self._evidence(resource, path, patient, identity, evidence, common)
        if kind == "Observation":
            return self._observation(resource, path, patient, identity, common)
        return self._response(resolver, resource, path, patient, identity, common)

    # -- subjects ---------------------------------------------------------------------------

    def _subject(self, resolver: ResourceDecoder, ref: Any, path: str) -> PatientRef:
        if ref is None:
            raise _rule("subject is required (the Patient)", f"{path}.subject")
        found = self._patient_resource(resolver, ref, path)
        if found is not None:
            patient, ppath = found
            family, given = patient_name(patient.name or [])
            deceased_at = resolver.instant(patient.deceasedDateTime, f"{ppath}.deceasedDateTime")
            return PatientRef(
                identifiers=resolver.identifiers(patient, ppath),
                family_name=family,
                given_name=given,
                birth_date=patient.birthDate if isinstance(patient.birthDate, date) else None,
                sex=SEX_CODES.get(patient.gender or ""),
                death_indicator=bool(patient.deceasedBoolean) or deceased_at is not None,
                death_time=deceased_at,
            )
        ident = ref.identifier
        if ident is not None and ident.system and ident.value:
            type_code = next((c.code for c in getattr(ident.type, "coding", None) or [] if c.code), None)
            return PatientRef(identifiers=(PatientIdentifier(ident.system, ident.value, type_code),))
        local = _LOCAL_PATIENT.search(ref.reference or "")
        if local is not None:
            return PatientRef(local_id=uuid.UUID(local[1]))
        raise _rule(
            "subject must identify the patient: a Patient in the Bundle or contained, an identifier with "
            "system and value, or Patient/{id} of a patient this server knows",
            f"{path}.subject",
        )

    def _patient_resource(self, resolver: ResourceDecoder, ref: Any, path: str) -> tuple[Any, str] | None:
        """The Patient `ref` points at in the Bundle or among the contained resources, with its path."""
        found = resolver.resolve(ref, "Patient")
        if found is None:
            return None
        index, patient = found
        contained = (resolver.entries[index].fullUrl or "").startswith("#")
        return patient, f"{path}.contained" if contained else f"Bundle.entry[{index}].resource"

    # -- per type ---------------------------------------------------------------------------

    def _encounter(
        self, resolver: ResourceDecoder, encounter: Any, path: str, identity: str, content_hash: str
    ) -> EncounterNotice:
        patient = self._subject(resolver, encounter.subject, path)
        if not patient.identifiers:
            raise _rule("an Encounter's subject must carry a patient identifier (system and value)", f"{path}.subject")
        resource, patient_path = self._patient_resource(resolver, encounter.subject, path) or (None, path)
        subject = SubjectPatient(patient.identifiers, resource, patient_path)
        meta_time = resolver.instant(getattr(encounter.meta, "lastUpdated", None), f"{path}.meta.lastUpdated")
        notice = resolver.encounter_notice(
            encounter,
            path,
            subject,
            source="fhir",
            message_id=f"Encounter/{_digest(identity, content_hash)}",
            message_type=f"Encounter:{encounter.status}",
            kind=ENCOUNTER_KINDS[encounter.status],
            message_time=(meta_time, f"{path}.period"),
        )
        try:
            check_lengths(notice)
        except DecodeError as exc:
            raise _rule(exc.reason, f"{path}.{exc.field}") from None
        return notice

    def _evidence_code(self, resource: Any) -> str | None:
        concept = resource.type if resource.get_resource_type() == "DocumentReference" else resource.code
        codings = getattr(concept, "coding", None) or []
        sent = (f"{c.system}|{c.code}" for c in codings if c.system and c.code)
        return next((code for code in sent if code in self.evidence_codes), None)

    def _evidence(
        self, resource: Any, path: str, patient: PatientRef, identity: str, code: str | None, common: dict[str, Any]
    ) -> Item:
        kind = common["resource_type"]
        if code is None:  # a Procedure / DocumentReference without an evidence code: nothing here would use it
            element = "type" if kind == "DocumentReference" else "code"
            concept = getattr(resource, element)
            sent = ", ".join(f"{c.system or ''}|{c.code}" for c in getattr(concept, "coding", None) or [])
            raise _rule(
                f"unsupported {kind}.{element} ({sent[:200] or 'none'}): carecoord takes {kind} coded "
                f"{', '.join(sorted(self.evidence_codes)) or '(no evidence codes configured)'}",
                f"{path}.{element}",
            )
        when_path = {"Procedure": "performed", "DocumentReference": "date"}.get(kind, "effective")
        when_path = f"{path}.{when_path}"
        status = resource.status
        if kind == "Procedure":
            period = resource.performedPeriod
            when = _first(resource.performedDateTime, getattr(period, "end", None), getattr(period, "start", None))
        elif kind == "DocumentReference":
            period = getattr(resource.context, "period", None)
            when = _first(resource.date, getattr(period, "end", None), getattr(period, "start", None))
            if resource.docStatus not in (None, *DOCUMENT_FINAL):
                status = f"{status}/{resource.docStatus}"[:32]  # a preliminary note: stored, not counted
        else:
            period = resource.effectivePeriod
            when = _first(
                resource.effectiveDateTime,
                resource.effectiveInstant,
                getattr(period, "end", None),
                getattr(period, "start", None),
                resource.issued,
            )
        performed_at = ResourceDecoder([], self.options).instant(when, when_path)
        item = EvidenceItem(
            identity=identity, patient=patient, status=status, code=code, performed_at=performed_at, **common
        )
        if item.status in COUNTING_STATUSES[kind] and performed_at is None:
            raise _rule(f"{when_path.rsplit('.', 1)[1]} is required: when was it done?", when_path)
        return item

    def _observation(self, obs: Any, path: str, patient: PatientRef, identity: str, common: dict[str, Any]) -> Item:
        codes = [c for c in obs.code.coding or [] if c.code]
        code = next((c.code for c in codes if c.system == LOINC and c.code in SCREENING_OBSERVATION_CODES), None)
        if code is None:
            sent = ", ".join(f"{c.system or ''}|{c.code}" for c in codes)[:200] or "none"
            raise _rule(
                f"unsupported Observation.code ({sent}): carecoord takes screening results coded in LOINC "
                f"{', '.join(sorted(SCREENING_OBSERVATION_CODES))}",
                f"{path}.code",
            )
        value = self._value(obs, path)
        limit = ITEM9_MAX if code == PHQ9_ITEM9 else BY_TOTAL_CODE[code].max_score
        if value is not None and not 0 <= value <= limit:
            raise _rule(f"score {value} is outside 0..{limit} for LOINC {code}", f"{path}.value")
        effective = _first(obs.effectiveDateTime, obs.effectiveInstant, getattr(obs.effectivePeriod, "start", None))
        effective_path = f"{path}.effective"
        effective_at = ResourceDecoder([], self.options).instant(effective or obs.issued, effective_path)
        if obs.status in RESULT_STATUSES:
            if value is None:
                raise _rule("a final result needs valueInteger or valueQuantity", f"{path}.value")
            if effective_at is None:
                raise _rule("effective[x] (or issued) is required: when was the patient screened?", effective_path)
        return ObservationItem(
            identity=identity,
            patient=patient,
            status=obs.status,
            code=code,
            value=value,
            item9=self._item9_component(obs, path) if code == PHQ9_TOTAL else None,
            effective_at=effective_at,
            **common,
        )

    def _item9_component(self, obs: Any, path: str) -> int | None:
        """PHQ-9 item 9 as a component (44260-8) of the total: an integer, a {score} quantity or an LA answer."""
        for i, component in enumerate(obs.component or []):
            if not any(c.system == LOINC and c.code == PHQ9_ITEM9 for c in component.code.coding or []):
                continue
            cpath = f"{path}.component[{i}]"
            try:
                if component.valueInteger is not None:
                    value = whole_score(component.valueInteger, f"{cpath}.valueInteger")
                elif component.valueQuantity is not None and component.valueQuantity.value is not None:
                    value = whole_score(component.valueQuantity.value, f"{cpath}.valueQuantity.value")
                else:
                    codings = getattr(component.valueCodeableConcept, "coding", None) or []
                    scores = [LOINC_ANSWER_SCORES[c.code] for c in codings if c.code in LOINC_ANSWER_SCORES]
                    if not scores:
                        raise _rule("item 9 needs valueInteger, valueQuantity or a LOINC answer code", f"{cpath}.value")
                    value = scores[0]
            except ScoringError as exc:
                raise _rule(exc.reason, exc.field) from None
            if not 0 <= value <= ITEM9_MAX:
                raise _rule(f"item 9 score {value} is outside 0..{ITEM9_MAX}", f"{cpath}.value")
            return value
        return None

    def _value(self, obs: Any, path: str) -> int | None:
        try:
            if obs.valueInteger is not None:
                return whole_score(obs.valueInteger, f"{path}.valueInteger")
            quantity = obs.valueQuantity
            if quantity is not None:
                if quantity.value is None:
                    raise _rule("valueQuantity.value is required", f"{path}.valueQuantity.value")
                if quantity.code is not None and (quantity.code != SCORE_UNIT or quantity.system not in (UCUM, None)):
                    raise _rule(
                        f"valueQuantity must be in UCUM {SCORE_UNIT}, got {quantity.code}", f"{path}.valueQuantity.code"
                    )
                if quantity.code is None and quantity.unit not in (None, SCORE_UNIT):
                    raise _rule(
                        f"valueQuantity must be in UCUM {SCORE_UNIT}, got {quantity.unit}", f"{path}.valueQuantity.unit"
                    )
                return whole_score(quantity.value, f"{path}.valueQuantity.value")
        except ScoringError as exc:
            raise _rule(exc.reason, exc.field) from None
        other = next((name for name in _VALUE_TYPES if getattr(obs, name, None) is not None), None)
        if other is not None:
            raise _rule(f"a screening score is valueInteger or valueQuantity, not {other}", f"{path}.{other}")
        return None

    def _response(
        self, resolver: ResourceDecoder, qr: Any, path: str, patient: PatientRef, identity: str, common: dict[str, Any]
    ) -> Item:
        if not qr.questionnaire:
            raise _rule("questionnaire (the canonical url of the form) is required", f"{path}.questionnaire")
        url, _, version = str(qr.questionnaire).partition("|")
        authored_at = resolver.instant(qr.authored, f"{path}.authored")
        if qr.status in RESPONSE_STATUSES and authored_at is None:
            raise _rule("authored is required: when was the patient screened?", f"{path}.authored")
        return ResponseItem(
            identity=identity,
            patient=patient,
            status=qr.status,
            questionnaire_url=url,
            questionnaire_version=version or None,
            authored_at=authored_at,
            response=qr,
            **common,
        )

    def scored(self, item: ResponseItem, definitions: dict[tuple[str, str], QuestionnaireDefinition]) -> ResponseItem:
        """Score now when the Questionnaire came along, so a bad response is refused at the front door."""
        definition = find_definition(definitions.values(), item.questionnaire_url, item.questionnaire_version)
        if definition is None or item.status not in RESPONSE_STATUSES:
            return item
        try:
            score = score_response(definition, item.response, item.path)
        except ScoringError as exc:
            raise _rule(exc.reason, exc.field) from None
        return replace(item, score=score)


_VALUE_TYPES = (
    "valueString",
    "valueBoolean",
    "valueCodeableConcept",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)


def find_definition(definitions: Any, url: str, version: str | None) -> QuestionnaireDefinition | None:
    """The definition a canonical names: exact `url|version`, or any version of `url` when none is given."""
    for definition in definitions:
        if definition.url == url and (version is None or definition.version == version):
            return definition
    return None


def _identity(resource: Any, content_hash: str) -> str:
    identifiers = resource.identifier if isinstance(resource.identifier, list) else [resource.identifier]
    for ident in identifiers:
        if ident is not None and ident.system and ident.value:
            return f"{ident.system}|{ident.value}"
    return f"content:{content_hash}"


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
