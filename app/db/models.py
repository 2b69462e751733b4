"""ORM models. Alembic migrations in migrations/ own the schema; a test keeps the two in step."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app import clock
from app.db.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The application clock (`app.clock.now`): ORM defaults and the state layer read it through here."""
    return clock.now()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    family_name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(16))
    deceased: Mapped[bool] = mapped_column(Boolean, default=False)
    deceased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when an A40 merged this record into another: everything now hangs off the survivor.
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    identifiers: Mapped[list[PatientIdentifier]] = relationship(
        back_populates="patient", cascade="all, delete-orphan", lazy="raise"
    )


class PatientIdentifier(Base):
    __tablename__ = "patient_identifiers"
    __table_args__ = (UniqueConstraint("system", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    system: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    type_code: Mapped[str | None] = mapped_column(String(16))

    patient: Mapped[Patient] = relationship(back_populates="identifiers")


class Encounter(Base):
    """One hospital visit, keyed by facility + visit number (PV1-19) when the feed sends one.

    Its state columns are derived: a fold over `encounter_events` (app/encounters/state.py).
    """

    __tablename__ = "encounters"
    __table_args__ = (
        UniqueConstraint("facility", "visit_number"),
        # Quality measures (docs/measures.md): the stays of a period, by discharge or admission.
        Index("ix_encounters_discharge_at", "discharge_at", postgresql_include=["id", "part2", "status"]),
        Index("ix_encounters_admit_at", "admit_at", postgresql_include=["id", "part2", "status"]),
        Index("ix_encounters_part2", "id", postgresql_where=text("part2"), sqlite_where=text("part2")),  # the few
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    facility: Mapped[str] = mapped_column(String(255))
    visit_number: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    class_system: Mapped[str | None] = mapped_column(String(255))
    class_code: Mapped[str | None] = mapped_column(String(16))
    patient_class: Mapped[str | None] = mapped_column(String(8))
    hospital_service: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(String(255))
    discharge_disposition: Mapped[str | None] = mapped_column(String(64))
    admit_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    discharge_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    diagnoses: Mapped[list[list[str | None]]] = mapped_column(JSON, default=list)
    behavioral_health: Mapped[bool] = mapped_column(Boolean, default=False)
    part2: Mapped[bool] = mapped_column(Boolean, default=False)  # 42 CFR Part 2: SUD data, consent-gated
    security_labels: Mapped[list[str]] = mapped_column(JSON, default=list)  # "system|code"
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class EncounterEvent(Base):
    """Every notice applied to an encounter, kept so its state can be re-folded in event-time order."""

    __tablename__ = "encounter_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    encounter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("encounters.id", ondelete="CASCADE"), index=True)
    inbound_event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(32))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)


class InboundEvent(Base):
    """Every applied inbound message, once: the idempotency key makes redelivery a no-op."""

    __tablename__ = "inbound_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(512), unique=True)
    # What the sender calls the message (facility + MSH-10, a Bundle id) and a hash of what it says:
    # the same identity with another hash is a reused control id (a data-quality finding), not a resend.
    # Rows applied before 0017 have no hash: a message matching their identity counts as a resend.
    message_identity: Mapped[str | None] = mapped_column(String(512), index=True)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    message_type: Mapped[str | None] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(255))
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("encounters.id"))
    event_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DataQualityFinding(Base):
    """Input that was applied but looks wrong (a reused control id, a sender clock running ahead),
    listed for data staff. `detail` never quotes field values; the message stays in the ledger."""

    __tablename__ = "data_quality_findings"
    __table_args__ = (UniqueConstraint("inbound_event_id", "kind", "field"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(32))
    inbound_event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    related_event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # e.g. the first message under the id
    field: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(String(255))
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RejectedEvent(Base):
    """Input that could not be applied, kept with its reason so it can be fixed and replayed."""

    __tablename__ = "rejected_events"
    __table_args__ = (UniqueConstraint("topic", "partition", "offset"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    source: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(255))
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    field: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # exact bytes received, for replay
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | replayed | discarded
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolution: Mapped[str | None] = mapped_column(Text)


# The open statuses (app/tasks/lifecycle.ACTIVE) as a partial-index predicate; worklist queries spell the
# same list as literals so PostgreSQL can prove the index applies.
OPEN_TASK_STATUSES_SQL = "status IN ('accepted', 'in-progress', 'on-hold', 'ready', 'received', 'requested')"
OPEN_TASK_INDEX_WHERE: dict[str, Any] = {
    "postgresql_where": text(OPEN_TASK_STATUSES_SQL),
    "sqlite_where": text(OPEN_TASK_STATUSES_SQL),
}


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_role_status_due", "role", "status", "due_at"),
        Index("ix_tasks_patient_status", "patient_id", "status"),
        Index("ix_tasks_encounter_status", "encounter_id", "status"),
        # Quality measures: a type's tasks raised since a day, with what the measures read (index-only on PG).
        Index(
            "ix_tasks_type_created",
            "type",
            "created_at",
            postgresql_include=[
                "role",
                "team",
                "status",
                "part2",
                "id",
                "patient_id",
                "encounter_id",
                "completed_by_encounter_id",
            ],
        ),
        # Worklists (docs/worklists.md): open tasks in due order, per role queue, per owner, all roles.
        # One ordered range per (role, team) of a facilitator's scope (app/api/access.scope_ranges); PostgreSQL
        # also keeps what the Part 2 gate reads in the index, so the capped total is an index-only scan.
        Index(
            "ix_tasks_open_role_due",
            "role",
            "team",
            "due_at",
            "id",
            postgresql_include=["encounter_id", "part2", "encounter_part2"],
            **OPEN_TASK_INDEX_WHERE,
        ),
        # The unattributed pool's range per role: `team IS NULL` is not an equality to PostgreSQL, so the
        # index above cannot return a pool branch in due order (it sorted the whole pool per page).
        Index(
            "ix_tasks_open_pool_due",
            "role",
            "due_at",
            "id",
            postgresql_include=["encounter_id", "part2", "encounter_part2"],
            postgresql_where=text(f"team IS NULL AND {OPEN_TASK_STATUSES_SQL}"),
            sqlite_where=text(f"team IS NULL AND {OPEN_TASK_STATUSES_SQL}"),
        ),
        Index("ix_tasks_open_owner_due", "owner", "due_at", "id", **OPEN_TASK_INDEX_WHERE),
        # Quality measures (overdue-tasks): open work per team and role with its Part 2 label, index-only.
        Index(
            "ix_tasks_open_team_role",
            "team",
            "role",
            "due_at",
            postgresql_include=["part2", "encounter_id", "patient_id"],
            **OPEN_TASK_INDEX_WHERE,
        ),
        Index(
            "ix_tasks_open_due",
            "due_at",
            "id",
            postgresql_include=["team", "encounter_id", "role"],
            **OPEN_TASK_INDEX_WHERE,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dedupe_key: Mapped[str] = mapped_column(String(512), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(255))
    # None for operational tasks about no one patient (a missing roster file for data staff).
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"))
    encounter_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("encounters.id"))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_basis: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Population, role and team the routing matrix chose, for GET /tasks/{id}/explain.
    route_basis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # overdue: priority raised once
    # Cancelled by a readmission: the new stay, whose tasks list this one as superseded (explain).
    superseded_by_encounter_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("encounters.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[str] = mapped_column(String(32))
    triggering_event_ids: Mapped[list[str]] = mapped_column(JSON)
    # FHIR Task.businessStatus: a referral loop's milestone (app/tasks/referral.py) while open; for a
    # task a person closed, the completion outcome or cancel reason.
    business_status: Mapped[str | None] = mapped_column(String(255))
    # Completed by a visit as evidence: cancelling that visit (A11) reopens the task.
    completed_by_encounter_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("encounters.id"), index=True)
    # 42 CFR Part 2 label: raised from a Part 2 encounter or a substance-use screening (consent-gated).
    part2: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Its encounter's Part 2 label, copied by database triggers (migration 0016): never written here.
    encounter_part2: Mapped[bool] = mapped_column(Boolean, server_default=false())
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class TaskHistory(Base):
    __tablename__ = "task_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TaskOutbox(Base):
    """One row per task change (task_history row), to publish as a CloudEvent on the task-events topic.

    Written by a database trigger on task_history (migration 0011_outbox), so every path that changes
    a task, ORM or bulk statement, writes its outbox row in its own transaction; the relay
    (app/outbox/relay.py) sets `published_at` after the broker's ack."""

    __tablename__ = "task_outbox"
    __table_args__ = (Index("ix_task_outbox_published_at_history_id", "published_at", "history_id"),)

    history_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("task_history.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Who touched which patient's data, when and through what; rendered as FHIR AuditEvent later."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JSON)
    action: Mapped[str] = mapped_column(String(1))  # FHIR AuditEvent.action: C R U D E
    resource_type: Mapped[str] = mapped_column(String(64))
    request: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(2))  # FHIR AuditEvent.outcome: 0 4 8 12
    patient_ids: Mapped[list[str]] = mapped_column(JSON)
    client_ip: Mapped[str | None] = mapped_column(String(64))  # AuditEvent.agent.network.address
    user_agent: Mapped[str | None] = mapped_column(String(255))  # AuditEvent.source.observer (display)


class Consent(Base):
    """A patient's recorded 42 CFR Part 2 consent: while active and in its period, Part 2 data about the
    patient may be shown to holders of the Part 2 permission. Kept with the FHIR Consent it was recorded as."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_patient_status", "patient_id", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"))
    scope: Mapped[str] = mapped_column(String(32))  # what it permits: "part2"
    status: Mapped[str] = mapped_column(String(16))  # active | inactive
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_by: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resource: Mapped[dict[str, Any]] = mapped_column(JSON)  # the FHIR R4 Consent as recorded


class FhirResource(Base):
    """A FHIR clinical resource as received (Observation, QuestionnaireResponse, Questionnaire), one row
    per identity (identifier system|value, Questionnaire url|version, else the content): a resend of
    the same content is a no-op, new content for the same identity is a new `version`."""

    __tablename__ = "fhir_resources"
    __table_args__ = (
        UniqueConstraint("resource_type", "identity_hash"),
        Index("ix_fhir_resources_patient_type_code", "patient_id", "resource_type", "code"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    resource_type: Mapped[str] = mapped_column(String(32))
    identity_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the identity
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"))
    status: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(64))  # Observation: the screening LOINC code
    # QuestionnaireResponse that arrived before its Questionnaire: the url it waits for, scored on registration
    awaiting_questionnaire: Mapped[str | None] = mapped_column(String(512), index=True)
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class QuestionnaireDefinitionRow(Base):
    """The Questionnaire registry: what scoring needs of each registered form (canonical url|version)."""

    __tablename__ = "questionnaires"
    __table_args__ = (UniqueConstraint("url", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    resource_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fhir_resources.id"))
    url: Mapped[str] = mapped_column(String(512))
    version: Mapped[str] = mapped_column(String(64))  # "" when the Questionnaire has none
    instrument: Mapped[str] = mapped_column(String(16))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ScreeningEvent(Base):
    """One behavioral-health screening result per source resource: what the rules (BH referral on a
    positive screen, suicide-risk response on PHQ-9 item 9) consume. Amended sources update it;
    entered-in-error ones retract it (status `retracted`); nothing is deleted."""

    __tablename__ = "screening_events"
    __table_args__ = (Index("ix_screening_events_patient_effective", "patient_id", "effective_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"))
    instrument: Mapped[str] = mapped_column(String(16))  # PHQ-9, PHQ-2, GAD-7, AUDIT-C, PHQ-9 item 9
    score: Mapped[int] = mapped_column(Integer)
    item9_score: Mapped[int | None] = mapped_column(Integer)  # PHQ-9 item 9 (LOINC 44260-8) when known
    positive: Mapped[bool] = mapped_column(Boolean)
    threshold: Mapped[int] = mapped_column(Integer)  # the cut-off it was judged by
    score_computed: Mapped[bool] = mapped_column(Boolean, default=False)  # summed from item answers
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))  # active | retracted
    source_type: Mapped[str] = mapped_column(String(32))  # Observation | QuestionnaireResponse
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fhir_resources.id"), unique=True)
    source_version: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RosterImport(Base):
    """One enrollee file received from a sender: a job with a status, counts, and its change report.

    (sender, checksum) is unique: the same file again is the same import, so re-importing is a no-op.
    """

    __tablename__ = "roster_imports"
    __table_args__ = (
        UniqueConstraint("sender", "checksum"),
        Index("ix_roster_imports_sender_received", "sender", "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    sender: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    mapping: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    checksum: Mapped[str] = mapped_column(String(64))  # SHA-256 of the exact bytes
    source: Mapped[str] = mapped_column(String(16))  # cli | api | inbox
    status: Mapped[str] = mapped_column(String(16))  # queued | completed | rejected | failed
    as_of: Mapped[date] = mapped_column(Date)  # the roster's effective date: absent members end the day before
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    error_rows: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    terminated: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    tasks_created: Mapped[int] = mapped_column(Integer, default=0)
    tasks_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)  # why rejected or failed; never patient data


class RosterImportError(Base):
    """A bad row: its line number and why, never its content (rows are patient data)."""

    __tablename__ = "roster_import_errors"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    import_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("roster_imports.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))


class RosterMember(Base):
    """Current membership: one row per sender and member id, the latest roster's view of the member.

    Terminated members keep their row (status, enrollment_end) so attribution at a past instant can
    still be answered. The engagement columns are ours, sent back in the status file.
    """

    __tablename__ = "roster_members"
    __table_args__ = (
        UniqueConstraint("sender", "member_id"),
        Index("ix_roster_members_patient", "patient_id"),
        Index("ix_roster_members_practice_status", "practice", "status"),  # measures: a team's members
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"))
    status: Mapped[str] = mapped_column(String(16))  # active | terminated
    row_hash: Mapped[str] = mapped_column(String(32))
    identifier_system: Mapped[str] = mapped_column(String(255))
    identifier_value: Mapped[str] = mapped_column(String(255))
    medicaid_id: Mapped[str | None] = mapped_column(String(64))
    family: Mapped[str | None] = mapped_column(String(200))
    given: Mapped[str | None] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(500))
    pcp_npi: Mapped[str | None] = mapped_column(String(16))
    practice: Mapped[str | None] = mapped_column(String(200))
    program: Mapped[str | None] = mapped_column(String(32))
    bh_program: Mapped[bool] = mapped_column(Boolean)
    risk_tier: Mapped[str | None] = mapped_column(String(32))
    enrollment_start: Mapped[date | None] = mapped_column(Date)
    enrollment_end: Mapped[date | None] = mapped_column(Date)
    last_import_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("roster_imports.id"))
    # Engagement milestones for the status file; care plans and sign-off are filled by issue 6.
    participation_form_date: Mapped[date | None] = mapped_column(Date)
    comprehensive_assessment_date: Mapped[date | None] = mapped_column(Date)
    care_plan_date: Mapped[date | None] = mapped_column(Date)
    pcp_signoff_date: Mapped[date | None] = mapped_column(Date)
    last_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RosterChange(Base):
    """The change report: one row per add, termination or change an import made, with its effective date.

    This is also the durable "member added / terminated" record later rules can consume.
    """

    __tablename__ = "roster_changes"
    __table_args__ = (Index("ix_roster_changes_import_kind", "import_id", "kind"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    import_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("roster_imports.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # add | term | change
    fields: Mapped[str] = mapped_column(String(500), default="")  # changed columns, comma-separated
    previous_pcp_npi: Mapped[str | None] = mapped_column(String(16))
    previous_practice: Mapped[str | None] = mapped_column(String(200))
    effective_date: Mapped[date] = mapped_column(Date)


class CarePlan(Base):
    """A patient's care plan as it stands now; every version is also kept whole in care_plan_versions.

    `active_patient_id` equals `patient_id` while the plan is active and is NULL otherwise: its unique
    constraint is the database's guarantee of one active plan per patient (NULLs never collide), on
    SQLite and PostgreSQL alike."""

    __tablename__ = "care_plans"
    __table_args__ = (Index("ix_care_plans_status_signed", "status", "signed_off_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    active_patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"), unique=True)
    status: Mapped[str] = mapped_column(String(32))
    title: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    # goals, activities, care_team, patient_actions (app/careplans/model.py CarePlanContent)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # starts the sign-off clock
    signed_off_by: Mapped[str | None] = mapped_column(String(255))
    signed_off_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signed_off_version: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(255))
    updated_by: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class CarePlanVersion(Base):
    """One version of a care plan, whole (REST representation), written with every change."""

    __tablename__ = "care_plan_versions"
    __table_args__ = (UniqueConstraint("care_plan_id", "version"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    care_plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))  # create | update | sign-off
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
