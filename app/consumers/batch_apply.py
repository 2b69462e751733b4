"""Set-based application of a poll's notices: a fixed number of statements per batch, not per message.

The per-message path (`NoticeHandler._apply_in`) issues about a dozen statements per event; at a few
hundred microseconds each that caps a consumer near a hundred events a second. Here a batch is read
with one query per table (ledger, identifiers, patients, encounters, encounter events, tasks), applied
in memory with the same pure pieces (`fold`, `classify`, `RuleEngine`), and written back with bulk
statements. It covers the common case only; anything else (a merge, a death, a visit without a
number, a merged or deceased patient, a time to clamp, a control id seen before with other content or
under an older ledger row) makes `apply` return None and the caller uses the per-message
path, which stays the reference: a test checks that both leave the database in the same state.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app import clock
from app.db.bulk import insert_rows
from app.db.keyed import restrict_to_keys
from app.db.models import Encounter, EncounterEvent, InboundEvent, Patient, PatientIdentifier, Task, TaskHistory, utcnow
from app.db.task_metrics import TaskAction, note_task_actions
from app.encounters.notice import EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy
from app.encounters.skew import clamp_to_receipt
from app.encounters.state import EncounterFacts, Folded, fold_all, fold_next
from app.rules.due import anchor_of
from app.rules.engine import RuleEngine
from app.rules.facts import (
    VOID_STATUSES,
    EncounterEventKind,
    EncounterSummary,
    EvidenceRecord,
    OpenTask,
    PatientFacts,
)
from app.rules.facts import EncounterEvent as RuleEvent
from app.state.encounters import encounter_columns
from app.state.inbound import Position, event_id_for
from app.state.patient_context import in_bh_population, load_contexts
from app.state.tasks import INITIAL_STATUS, cancel_detail

_PATIENT_FIELDS = ("family_name", "given_name", "birth_date", "sex")
_ENCOUNTER_STATE_FIELDS = (
    "status",
    "class_system",
    "class_code",
    "patient_class",
    "location",
    "hospital_service",
    "discharge_disposition",
    "admit_at",
    "discharge_at",
    "diagnoses",
    "last_event_at",
    "behavioral_health",
    "part2",
    "security_labels",
)


@dataclass(slots=True)
class Applied:
    event_id: str
    message_type: str
    tasks_created: int = 0
    tasks_cancelled: int = 0


@dataclass(slots=True)
class _TaskRow:
    id: uuid.UUID
    rule_id: str
    status: str
    dedupe_key: str
    new: bool
    encounter_id: uuid.UUID | None
    anchor_at: datetime | None
    values: dict[str, Any] = field(default_factory=dict)
    superseded_by: uuid.UUID | None = None
    version: int = 1  # optimistic-lock version, as the ORM would count: one per change
    business_status: str | None = None  # a referral loop's milestone
    completed_by: uuid.UUID | None = None  # the visit that completed it as evidence
    loaded_version: int | None = None  # an existing task's version as read: its UPDATE is guarded by it
    type: str = ""  # task type and role: metrics labels only
    role: str = ""


@dataclass(slots=True)
class _Batch:
    patients: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    new_patients: set[uuid.UUID] = field(default_factory=set)
    changed_patients: set[uuid.UUID] = field(default_factory=set)
    owner: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    new_identifiers: list[dict[str, Any]] = field(default_factory=list)
    encounters: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    new_encounters: set[uuid.UUID] = field(default_factory=set)
    history: dict[uuid.UUID, list[EncounterFacts]] = field(default_factory=lambda: defaultdict(list))
    states: dict[uuid.UUID, Folded] = field(default_factory=dict)
    open_tasks: dict[uuid.UUID, list[_TaskRow]] = field(default_factory=lambda: defaultdict(list))  # by patient
    bh_beyond_visits: set[uuid.UUID] = field(default_factory=set)  # positive screens, roster BH programs
    encounter_summaries: dict[uuid.UUID, dict[uuid.UUID, EncounterSummary]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    attributed_practice: dict[uuid.UUID, str | None] = field(default_factory=dict)
    evidence: dict[uuid.UUID, list[EvidenceRecord]] = field(default_factory=dict)  # coded records on file
    dedupe_keys: set[str] = field(default_factory=set)
    needs_reference: bool = False  # an effect only the per-message path applies (a referral milestone)
    # Encounters that completed or superseded a task: voiding one (A11) may reopen it (per-message path).
    closers: set[uuid.UUID] = field(default_factory=set)
    new_tasks: list[_TaskRow] = field(default_factory=list)
    closed_existing: list[_TaskRow] = field(default_factory=list)
    encounter_events: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    task_history: list[dict[str, Any]] = field(default_factory=list)
    task_actions: list[TaskAction] = field(default_factory=list)  # for the task counters, on commit


class BatchApplier:
    def __init__(self, *, source: str, engine: RuleEngine, sensitivity: SensitivityPolicy, max_skew: timedelta) -> None:
        self._source = source
        self._engine = engine
        self._sensitivity = sensitivity
        self._max_skew = max_skew

    async def apply(
        self, session: AsyncSession, notices: list[tuple[EncounterNotice, Position]]
    ) -> list[Applied | None] | None:
        """Per notice: Applied, or None for a duplicate. Returns None (nothing written) when the batch
        needs the per-message path."""
        if any(
            n.kind is EncounterEventKind.MERGE or not n.describes_visit or not n.visit_number or n.death_indicator
            for n, _ in notices
        ):
            return None
        received = clock.now()
        if any(clamp_to_receipt(n, p.received_at or received, self._max_skew)[1] for n, p in notices):
            return None
        b = _Batch()
        applied = await self._load(session, [n for n, _ in notices], b)
        if applied is None:
            return None
        results: list[Applied | None] = []
        now = utcnow()
        for notice, position in notices:
            if notice.idempotency_key in applied:
                results.append(None)
                continue
            applied.add(notice.idempotency_key)
            results.append(self._apply_one(notice, position, b, now))
        if b.needs_reference:
            return None
        await self._write(session, b, now)
        return results

    async def _load(self, session: AsyncSession, notices: list[EncounterNotice], b: _Batch) -> set[str] | None:
        dialect = session.bind.dialect.name
        keys = {n.idempotency_key for n in notices}
        identities = {n.message_identity for n in notices}
        if len(identities) < len(keys):
            return None  # a control id reused inside the batch: the per-message path records the finding
        ledger = restrict_to_keys(
            select(InboundEvent.idempotency_key),
            [InboundEvent.message_identity],
            {(identity,) for identity in identities},
            dialect,
        )
        applied = set((await session.execute(ledger)).scalars().all())
        if not applied <= keys:
            return None  # seen with other content, or under a pre-hash ledger row: the ledger decides
        pairs = {(i.system, i.value) for n in notices for i in n.identifiers}
        owners = select(PatientIdentifier.system, PatientIdentifier.value, PatientIdentifier.patient_id)
        idents = (
            await session.execute(
                restrict_to_keys(owners, [PatientIdentifier.system, PatientIdentifier.value], pairs, dialect)
            )
        ).all()
        b.owner = {(s, v): pid for s, v, pid in idents if (s, v) in pairs}
        if b.owner:
            rows = (await session.execute(select(Patient).where(Patient.id.in_(set(b.owner.values()))))).scalars()
            for p in rows:
                if p.merged_into_id is not None or p.deceased:
                    return None
                b.patients[p.id] = {"id": p.id, **{f: getattr(p, f) for f in _PATIENT_FIELDS}}
        visits = {(n.facility, n.visit_number) for n in notices}
        encounters = (
            (
                await session.execute(
                    restrict_to_keys(
                        select(Encounter), [Encounter.facility, Encounter.visit_number], visits, dialect
                    ).with_for_update(of=Encounter)
                )
            )
            .scalars()
            .all()
        )
        encounters = [e for e in encounters if (e.facility, e.visit_number) in visits]
        for e in encounters:
            b.encounters[(e.facility, e.visit_number or "")] = {
                "id": e.id,
                "patient_id": e.patient_id,
                **{f: getattr(e, f) for f in _ENCOUNTER_STATE_FIELDS},
            }
        enc_ids = [e.id for e in encounters]
        if enc_ids:
            for enc_id, facts in (
                await session.execute(
                    select(EncounterEvent.encounter_id, EncounterEvent.facts).where(
                        EncounterEvent.encounter_id.in_(enc_ids)
                    )
                )
            ).all():
                b.history[enc_id].append(EncounterFacts.from_json(facts))
            b.dedupe_keys.update(
                (await session.execute(select(Task.dedupe_key).where(Task.encounter_id.in_(enc_ids)))).scalars()
            )
            for completed_by, superseded_by in (
                await session.execute(
                    select(Task.completed_by_encounter_id, Task.superseded_by_encounter_id).where(
                        or_(Task.completed_by_encounter_id.in_(enc_ids), Task.superseded_by_encounter_id.in_(enc_ids))
                    )
                )
            ).all():
                b.closers.update(e for e in (completed_by, superseded_by) if e is not None)
        contexts = await load_contexts(session, b.patients.keys(), self._engine.evidence_codes)
        b.bh_beyond_visits = contexts.bh_beyond_visits
        b.encounter_summaries = contexts.encounters
        b.attributed_practice = contexts.attributed_practice
        b.evidence = contexts.evidence
        for patient_id, tasks in contexts.open_tasks.items():
            b.open_tasks[patient_id] = [
                _TaskRow(
                    t.id,
                    t.rule_id,
                    t.status,
                    t.dedupe_key,
                    False,
                    t.encounter_id,
                    anchor_of(t.due_basis),
                    business_status=t.business_status,
                    loaded_version=t.version,
                    type=t.type,
                    role=t.role,
                )
                for t in tasks
            ]
        return applied

    def _apply_one(self, notice: EncounterNotice, position: Position, b: _Batch, now: datetime) -> Applied:
        event_id = event_id_for(notice.idempotency_key)
        patient = self._patient(notice, b)
        encounter = self._encounter(notice, patient["id"], b)
        facts = EncounterFacts.from_notice(notice)
        history = b.history[encounter["id"]]
        previous = b.states.get(encounter["id"])
        previous_class, previous_status = encounter.get("class_code"), encounter.get("status") or "unknown"
        folded = fold_next(previous, history, facts) if previous is not None else fold_all([*history, facts])
        history.append(facts)
        b.states[encounter["id"]] = folded
        state = folded.state
        # A voided visit may reopen what it closed: the per-message path does that.
        b.needs_reference |= state.status in VOID_STATUSES and encounter["id"] in b.closers
        columns = encounter_columns(state, self._sensitivity)
        encounter.update(columns, _changed=True)
        b.encounter_events.append(
            {
                "encounter_id": encounter["id"],
                "inbound_event_id": event_id,
                "kind": facts.kind.value,
                "event_time": facts.event_time,
                "facts": facts.to_json(),
            }
        )
        rule_event = RuleEvent(
            event_id=str(event_id),
            kind=notice.kind,
            occurred_at=notice.event_time,
            encounter_id=str(encounter["id"]),
            status=state.status,
            class_code=state.class_code,
            admit_at=state.admit_at,
            discharge_at=state.discharge_at,
            hospital_service=state.hospital_service,
            behavioral_health=columns["behavioral_health"],
            previous_class_code=previous_class,
            previous_status=previous_status,
        )
        pid = patient["id"]
        visits = b.encounter_summaries[pid]
        visits[encounter["id"]] = EncounterSummary.of(
            str(encounter["id"]),
            state.class_code,
            state.admit_at,
            state.last_event_at,
            columns["behavioral_health"],
            state.discharge_at,
            state.status,
        )
        open_tasks = b.open_tasks[pid]
        patient_facts = PatientFacts(
            str(pid),
            patient["birth_date"],
            False,
            attributed=pid in b.attributed_practice,
            practice=b.attributed_practice.get(pid),
            behavioral_health=in_bh_population(pid, b.bh_beyond_visits, visits),
            open_tasks=tuple(
                OpenTask(
                    str(t.id),
                    t.rule_id,
                    str(t.encounter_id) if t.encounter_id else None,
                    t.anchor_at,
                    business_status=t.business_status,
                )
                for t in open_tasks
            ),
            encounters=tuple(visits.values()),
            evidence=tuple(b.evidence.get(pid, ())),
        )
        result = Applied(str(event_id), notice.message_type)
        effects = self._engine.on_encounter_event(rule_event, patient_facts)
        b.needs_reference |= bool(effects.advance)  # rare: a BH visit reaching an open referral loop
        by_id = {str(t.id): t for t in open_tasks}
        actor = f"event:{notice.message_type}"
        for done in effects.complete:
            detail = {"reason": done.reason, "evidence_event_id": done.evidence_event_id}
            if done.evidence_encounter_id:
                by_id[done.task_id].completed_by = uuid.UUID(done.evidence_encounter_id)
                b.closers.add(by_id[done.task_id].completed_by)  # type: ignore[arg-type]
            self._close(b, open_tasks, by_id[done.task_id], "completed", detail, actor, now)
        for cancel in effects.cancel:
            task = by_id[cancel.task_id]
            b.dedupe_keys.discard(task.dedupe_key)
            task.dedupe_key = f"{task.dedupe_key}|cancelled|{task.id}"
            if cancel.superseded_by_encounter:
                task.superseded_by = uuid.UUID(cancel.superseded_by_encounter)
                b.closers.add(task.superseded_by)
            b.dedupe_keys.add(task.dedupe_key)
            detail = cancel_detail(cancel.reason, str(event_id), cancel.superseded_by_encounter)
            self._close(b, open_tasks, task, "cancelled", detail, actor, now)
            result.tasks_cancelled += 1
        for effect in effects.create:
            if effect.dedupe_key in b.dedupe_keys:
                continue
            task = _TaskRow(
                uuid.uuid4(),
                effect.rule_id,
                INITIAL_STATUS,
                effect.dedupe_key,
                True,
                encounter["id"],
                anchor_of(effect.due_basis),
                type=effect.type,
                role=effect.role,
            )
            task.values = {
                "type": effect.type,
                "priority": effect.priority,
                "role": effect.role,
                "team": effect.team,
                "patient_id": pid,
                "encounter_id": encounter["id"],
                "due_at": effect.due_at,
                "due_basis": effect.due_basis,
                "route_basis": effect.route_basis,
                "rule_id": effect.rule_id,
                "rule_version": effect.rule_version,
                "triggering_event_ids": list(effect.triggering_event_ids),
                "business_status": effect.business_status,
                "part2": bool(encounter.get("part2")),  # 42 CFR Part 2 label of the encounter it came from
            }
            if effect.completed_by_encounter:
                task.completed_by = uuid.UUID(effect.completed_by_encounter)
                b.closers.add(task.completed_by)
            b.dedupe_keys.add(effect.dedupe_key)
            open_tasks.append(task)
            b.new_tasks.append(task)
            b.task_history.append(
                {
                    "task_id": task.id,
                    "at": now,
                    "actor": f"rule:{effect.rule_id}@{effect.rule_version}",
                    "action": "created",
                    "from_status": None,
                    "to_status": INITIAL_STATUS,
                    "detail": {
                        "triggering_event_ids": list(effect.triggering_event_ids),
                        "due_basis": effect.due_basis,
                    },
                }
            )
            b.task_actions.append(("created", task.type, task.role))
            result.tasks_created += 1
            if effect.completed_by:
                actor = f"rule:{effect.rule_id}@{effect.rule_version}"
                self._close(b, open_tasks, task, "completed", {"reason": effect.completed_by}, actor, now)
        b.ledger.append(
            {
                "id": event_id,
                "idempotency_key": notice.idempotency_key,
                "message_identity": notice.message_identity,
                "content_hash": notice.content_hash,
                "source": self._source,
                "message_type": notice.message_type,
                "topic": position.topic,
                "partition": position.partition,
                "offset": position.offset,
                "status": "applied",
                "patient_id": patient["id"],
                "encounter_id": encounter["id"],
                "event_time": notice.event_time,
                "received_at": now,
                "applied_at": now,
            }
        )
        return result

    @staticmethod
    def _close(
        b: _Batch,
        open_tasks: list[_TaskRow],
        task: _TaskRow,
        status: str,
        detail: dict[str, Any],
        actor: str,
        now: datetime,
    ) -> None:
        b.task_history.append(
            {
                "task_id": task.id,
                "at": now,
                "actor": actor,
                "action": status,
                "from_status": task.status,
                "to_status": status,
                "detail": detail,
            }
        )
        b.task_actions.append((status, task.type, task.role))
        task.status = status
        task.version += 1
        open_tasks.remove(task)
        if not task.new:
            b.closed_existing.append(task)

    def _patient(self, notice: EncounterNotice, b: _Batch) -> dict[str, Any]:
        owners = [b.owner[(i.system, i.value)] for i in notice.identifiers if (i.system, i.value) in b.owner]
        primary = b.owner.get((notice.patient_key.system, notice.patient_key.value))
        if primary is not None:
            pid = primary
        elif owners:
            pid = sorted(owners, key=str)[0]
        else:
            pid = uuid.uuid4()
            b.patients[pid] = {"id": pid, **dict.fromkeys(_PATIENT_FIELDS)}
            b.new_patients.add(pid)
        patient = b.patients[pid]
        for ident in notice.identifiers:
            if (ident.system, ident.value) not in b.owner:
                b.owner[(ident.system, ident.value)] = pid
                b.new_identifiers.append(
                    {"patient_id": pid, "system": ident.system, "value": ident.value, "type_code": ident.type_code}
                )
        for name in _PATIENT_FIELDS:
            value = getattr(notice, name)
            if value and value != patient[name]:
                patient[name] = value
                b.changed_patients.add(pid)
        return patient

    def _encounter(self, notice: EncounterNotice, patient_id: uuid.UUID, b: _Batch) -> dict[str, Any]:
        key = (notice.facility, notice.visit_number or "")
        encounter = b.encounters.get(key)
        if encounter is None:
            enc_id = uuid.uuid4()
            encounter = {
                "id": enc_id,
                "patient_id": patient_id,
                "facility": notice.facility,
                "visit_number": notice.visit_number,
            }
            b.encounters[key] = encounter
            b.new_encounters.add(enc_id)
        return encounter

    async def _write(self, session: AsyncSession, b: _Batch, now: datetime) -> None:
        new_patients = [
            {**b.patients[p], "deceased": False, "created_at": now, "updated_at": now} for p in b.new_patients
        ]
        await insert_rows(session, Patient.__table__, new_patients)
        changed = [{**b.patients[p], "updated_at": now} for p in b.changed_patients if p not in b.new_patients]
        if changed:
            await session.execute(update(Patient), changed)
        await insert_rows(session, PatientIdentifier.__table__, b.new_identifiers)
        new_enc, changed_enc = [], []
        for enc in b.encounters.values():
            if not enc.pop("_changed", False):
                continue
            row = {k: v for k, v in enc.items()}
            if enc["id"] in b.new_encounters:
                new_enc.append({**row, "created_at": now, "updated_at": now})
            else:
                row.pop("patient_id", None)
                changed_enc.append({**row, "updated_at": now})
        await insert_rows(session, Encounter.__table__, new_enc)
        if changed_enc:
            await session.execute(update(Encounter), changed_enc)
        await insert_rows(session, EncounterEvent.__table__, b.encounter_events)
        # A task raised and cancelled within one batch is still written, as the per-message path would.
        await insert_rows(
            session,
            Task.__table__,
            [
                {
                    "id": t.id,
                    "dedupe_key": t.dedupe_key,
                    "status": t.status,
                    "version": t.version,
                    "created_at": now,
                    "updated_at": now,
                    "superseded_by_encounter_id": t.superseded_by,
                    "completed_by_encounter_id": t.completed_by,
                    **t.values,
                }
                for t in b.new_tasks
            ],
        )
        if b.closed_existing:
            table = Task.__table__
            result = await session.execute(
                table.update()
                .where(table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"))
                .values(
                    status=bindparam("b_status"),
                    dedupe_key=bindparam("b_key"),
                    superseded_by_encounter_id=bindparam("b_superseded"),
                    completed_by_encounter_id=bindparam("b_completed_by"),
                    version=table.c.version + 1,
                    updated_at=now,
                ),
                [
                    {
                        "b_id": t.id,
                        "b_status": t.status,
                        "b_key": t.dedupe_key,
                        "b_superseded": t.superseded_by,
                        "b_completed_by": t.completed_by,
                        "b_version": t.loaded_version,
                    }
                    for t in b.closed_existing
                ],
            )
            await _check_versions(session, b.closed_existing, result.rowcount)  # type: ignore[attr-defined]
        await insert_rows(session, TaskHistory.__table__, b.task_history)
        await insert_rows(session, InboundEvent.__table__, b.ledger)
        note_task_actions(session, b.task_actions)


async def _check_versions(session: AsyncSession, closed: list[_TaskRow], rowcount: int) -> None:
    """Optimistic locking as the ORM does it on the per-message path: every closed task's UPDATE must
    have found the version it read, else a writer got in between and the batch is retried (transient).
    asyncpg cannot count an executemany's rows, so there the rows are read back instead."""
    if session.bind.dialect.supports_sane_multi_rowcount:
        stale = rowcount != len(closed)
    else:
        expected = {t.id: (t.loaded_version, t.status) for t in closed}
        rows = await session.execute(select(Task.id, Task.version, Task.status).where(Task.id.in_(expected)))
        stale = any(
            version != (expected[task_id][0] or 0) + 1 or status != expected[task_id][1]
            for task_id, version, status in rows.all()
        )
    if stale:
        raise StaleDataError("a task the batch closed changed under it")
