"""A deterministic stream of mixed inbound events for the reliability tests.

Each patient's events go to one topic with one key, so every run applies them in the same order and
two runs of the same stream must end in the same encounters and tasks. Patients are interleaved at
random (seeded), the way a hospital feed mixes them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from tests.fhir_builder import encode, observation
from tests.hl7_builder import adt

HL7_TIME = "%Y%m%d%H%M%S-0500"
FHIR_TIME = "%Y-%m-%dT%H:%M:%S-05:00"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class Message:
    feed: str  # "adt" | "fhir"
    key: bytes
    value: bytes


def _visit(rng: random.Random, mrn: str, n: int, start: datetime) -> list[Message]:
    """One patient's scenario: admissions, updates, transfers, discharges, cancellations, resends, garbage."""
    key = f"mix-{mrn}".encode()
    messages: list[str] = []
    seq = 0

    def msg(trigger: str, visit: str, at: datetime, **fields: object) -> str:
        nonlocal seq
        seq += 1
        fields.setdefault("admit_time", start.strftime(HL7_TIME))
        return adt(
            trigger,
            control_id=f"{mrn}-{seq}",
            mrn=mrn,
            visit_number=visit,
            message_time=at.strftime(HL7_TIME),
            event_time=at.strftime(HL7_TIME),
            **fields,  # type: ignore[arg-type]
        )

    patient_class = rng.choice(["I", "I", "E", "O"])
    visit = f"V{mrn}"
    out = start + timedelta(days=rng.randint(1, 5), hours=rng.randint(0, 12))
    discharge = {"discharge_time": out.strftime(HL7_TIME), "patient_class": patient_class}
    scenario = rng.choice(["discharge", "update", "cancel-discharge", "cancel-admit", "resend", "readmit", "transfer"])
    messages.append(msg("A04" if patient_class == "E" else "A01", visit, start, patient_class=patient_class))
    if scenario == "update":
        update = msg("A08", visit, start + timedelta(hours=1), patient_class=patient_class, hospital_service="CAR")
        messages.append(update)
    if scenario == "transfer":
        messages.append(msg("A02", visit, start + timedelta(hours=2), patient_class=patient_class, location="5E^1^A"))
    if scenario == "cancel-admit":
        messages.append(msg("A11", visit, start + timedelta(hours=1), patient_class=patient_class))
    else:
        messages.append(msg("A03", visit, out, **discharge))
    if scenario == "resend":
        messages.append(messages[-1])  # the same message again (same MSH-10): applied once
    if scenario == "cancel-discharge":
        messages.append(msg("A13", visit, out + timedelta(hours=1), patient_class=patient_class))
    if scenario == "readmit":
        again = out + timedelta(days=rng.randint(1, 20))
        messages.append(msg("A01", f"{visit}R", again, patient_class="I", admit_time=again.strftime(HL7_TIME)))
        messages.append(
            msg(
                "A03",
                f"{visit}R",
                again + timedelta(days=2),
                patient_class="I",
                admit_time=again.strftime(HL7_TIME),
                discharge_time=(again + timedelta(days=2)).strftime(HL7_TIME),
            )
        )
    if rng.random() < 0.02:  # an A03 without PV1: dead-lettered with its reason
        messages.append(msg("A03", visit, out, include_pv1=False))
    return [Message("adt", key, m.encode()) for m in messages]


def _screening(rng: random.Random, mrn: str, n: int, start: datetime) -> list[Message]:
    score = rng.randint(0, 27)
    resource = observation(
        mrn=mrn,
        ident=f"OBS-{mrn}",
        value={"valueQuantity": {"value": score, "unit": "{score}", "system": UCUM, "code": "{score}"}},
        effective=start.strftime(FHIR_TIME),
    )
    return [Message("fhir", f"mix-{mrn}".encode(), encode(resource))]


def event_mix(total: int, seed: int = 9) -> list[Message]:
    """At least `total` messages (a little more: the last patient's scenario is finished)."""
    rng = random.Random(seed)
    base = datetime(2026, 10, 1, 8, 0)
    patients: list[list[Message]] = []
    count = n = 0
    while count < total:
        n += 1
        mrn = f"MX{n:06d}"
        start = base + timedelta(hours=rng.randint(0, 24 * 40))
        events = _screening(rng, mrn, n, start) if rng.random() < 0.1 else _visit(rng, mrn, n, start)
        patients.append(events)
        count += len(events)
    stream: list[Message] = []
    active: list[list[Message]] = []
    pending = iter(patients)
    while True:
        while len(active) < 50 and (nxt := next(pending, None)) is not None:
            active.append(list(nxt))
        if not active:
            return stream
        i = rng.randrange(len(active))
        stream.append(active[i].pop(0))
        if not active[i]:
            active.pop(i)
