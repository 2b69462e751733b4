"""Roster imports in the database, set-based: stage the file, then reconcile with a fixed number of
statements whatever its size (a million-member roster reconciles in well under a minute).

Within one transaction: rows go into a temporary staging table (COPY on PostgreSQL, batched inserts
on SQLite); patients are resolved by identifier exactly as ADT resolves them (and created when
unknown); the change report is computed by joining staging with current membership; membership is
updated; new-member tasks are inserted and terminated members' open tasks cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ColumnElement,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    and_,
    case,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    Patient,
    PatientIdentifier,
    RosterChange,
    RosterImport,
    RosterImportError,
    RosterMember,
    Task,
    TaskHistory,
    utcnow,
)
from app.db.task_metrics import note_task_actions
from app.db.types import UTCDateTime
from app.roster.reconcile import COMPARED_FIELDS, ChangeKind, MemberStatus, absent_member_end, member_status
from app.roster.records import FIELDS, MemberRecord, RowError
from app.rules.engine import MemberTaskPlan
from app.state.tasks import INITIAL_STATUS, cancel_tasks_where

QUEUED, COMPLETED, REJECTED, FAILED = "queued", "completed", "rejected", "failed"
HELD, CONFIRMED = "held", "confirmed"  # held for data staff (mass termination); confirmed: apply it anyway
SETTLED = (COMPLETED, REJECTED, HELD)  # the same file again changes nothing
MERGE_HOPS = 10  # A40 merge chains longer than this are not expected

_staging_meta = MetaData()
# Temporary: private to the transaction's connection, dropped at commit on PostgreSQL.
STAGING = Table(
    "roster_staging",
    _staging_meta,
    Column("line", Integer, nullable=False),  # unique per file; no index: every write to it is set-based
    Column("member_id", String(64), nullable=False),
    Column("identifier_system", String(255), nullable=False),
    Column("identifier_value", String(255), nullable=False),
    Column("family", String(200)),
    Column("given", String(200)),
    Column("birth_date", Date),
    Column("sex", String(16)),
    Column("phone", String(64)),
    Column("address", String(500)),
    Column("pcp_npi", String(16)),
    Column("practice", String(200)),
    Column("program", String(32)),
    Column("bh_program", Boolean, nullable=False),
    Column("enrollment_start", Date),
    Column("enrollment_end", Date),
    Column("medicaid_id", String(64)),
    Column("risk_tier", String(32)),
    Column("status", String(16), nullable=False),
    Column("row_hash", String(32), nullable=False),
    Column("patient_id", Uuid),
    Column("new_patient", Boolean),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
STAGED_COLUMNS = ("line", *FIELDS, "status", "row_hash")
assert set(FIELDS) <= set(STAGING.c.keys())


@dataclass
class ReconcileCounts:
    added: int = 0
    terminated: int = 0
    unchanged: int = 0
    changed: int = 0
    tasks_created: int = 0
    tasks_cancelled: int = 0


def staged_row(record: MemberRecord, as_of: date) -> tuple[Any, ...]:
    return (record.line, *record.values(), member_status(record, as_of).value, record.content_hash())


def new_uuid(dialect: str) -> ColumnElement[Any]:
    """A fresh random id computed by the database, in the form the Uuid column stores it."""
    if dialect == "postgresql":
        return func.gen_random_uuid()
    return func.lower(func.hex(func.randomblob(16)))  # SQLite: Uuid is stored as 32 hex digits


# ---- import jobs -------------------------------------------------------------------------------


async def find_import(session: AsyncSession, sender: str, checksum: str) -> RosterImport | None:
    return await session.scalar(
        select(RosterImport).where(RosterImport.sender == sender, RosterImport.checksum == checksum)
    )


async def claim_import(session: AsyncSession, import_id: uuid.UUID) -> bool:
    """First statement of the processing transaction. It locks the job row (PostgreSQL) or the
    database (SQLite), so a concurrent run of the same file waits here and then sees it done."""
    result = await session.execute(
        update(RosterImport)
        .where(RosterImport.id == import_id, RosterImport.status.in_((QUEUED, FAILED, CONFIRMED)))
        .values(status=QUEUED)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def active_member_count(session: AsyncSession, sender: str) -> int:
    m = RosterMember.__table__
    query = select(func.count()).select_from(m).where(m.c.sender == sender, m.c.status == MemberStatus.ACTIVE)
    return int(await session.scalar(query) or 0)


async def imports_with_status(session: AsyncSession, status: str, limit: int) -> list[RosterImport]:
    query = select(RosterImport).where(RosterImport.status == status).order_by(RosterImport.received_at).limit(limit)
    return list((await session.execute(query)).scalars().all())


async def decide_held(session: AsyncSession, import_id: uuid.UUID, status: str, reason: str | None = None) -> bool:
    """Data staff's decision on a held file: CONFIRMED (the next run applies it) or REJECTED."""
    values: dict[str, Any] = {"status": status}
    if reason is not None:
        values["reason"] = reason
    if status == REJECTED:
        values["finished_at"] = utcnow()
    result = await session.execute(
        update(RosterImport).where(RosterImport.id == import_id, RosterImport.status == HELD).values(**values)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def create_staging(session: AsyncSession, temp_buffers_mb: int, work_mem_mb: int) -> None:
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        # Hash joins of a million rows fit in memory instead of spilling in batches (this transaction only).
        await session.execute(text(f"SET LOCAL work_mem = '{int(work_mem_mb)}MB'"))
        # Temp tables live in per-session buffers (8 MB by default): a large roster would spill to
        # disk on every pass. The setting only takes before a session's first temp table, so on a
        # reused connection it is already in effect (or fails harmlessly).
        try:
            async with session.begin_nested():
                await session.execute(text(f"SET temp_buffers = '{int(temp_buffers_mb)}MB'"))
        except DBAPIError:
            pass
    await conn.execute(text("DROP TABLE IF EXISTS roster_staging"))
    await conn.run_sync(lambda sync_conn: STAGING.create(sync_conn))


async def drop_staging(session: AsyncSession) -> None:
    """Staged rows are patient data: gone at commit (SQLite keeps temp tables per connection)."""
    await session.execute(text("DROP TABLE IF EXISTS roster_staging"))


async def stage_rows(session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            STAGING.name, records=rows, columns=list(STAGED_COLUMNS)
        )
    else:
        await conn.execute(insert(STAGING), [dict(zip(STAGED_COLUMNS, row, strict=True)) for row in rows])


async def record_row_errors(session: AsyncSession, import_id: uuid.UUID, errors: Iterable[RowError]) -> None:
    values = [{"import_id": import_id, "line": e.line, "field": e.field, "reason": e.reason[:500]} for e in errors]
    if values:
        await session.execute(insert(RosterImportError), values)


async def finish_import(session: AsyncSession, import_id: uuid.UUID, status: str, **counts: Any) -> None:
    await session.execute(
        update(RosterImport).where(RosterImport.id == import_id).values(status=status, finished_at=utcnow(), **counts)
    )


# ---- reconciliation ----------------------------------------------------------------------------


async def reconcile(
    session: AsyncSession,
    *,
    import_id: uuid.UUID,
    sender: str,
    as_of: date,
    plans: Sequence[MemberTaskPlan],
) -> ReconcileCounts:
    conn = await session.connection()
    dialect = conn.dialect.name
    await conn.execute(text("CREATE UNIQUE INDEX ix_roster_staging_member ON roster_staging (member_id)"))
    await _analyze(conn, "roster_staging")
    counts = ReconcileCounts()
    # Members absent from the file first: that needs every staged row.
    absent = await _report_absent(session, import_id, sender, as_of)
    await _terminate_absent(session, import_id, sender, as_of)
    # Then most rows are identical to current membership and drop out, so everything after this
    # works on the few that differ.
    counts.unchanged = await _drop_unchanged(session, sender)
    await _analyze(conn, "roster_staging")
    await _resolve_patients(session, dialect)
    counts.added = await _report_adds(session, import_id, sender, as_of)
    counts.changed = await _report_changes(session, import_id, sender, as_of)
    counts.terminated = absent + await _report_terms_in_file(session, import_id, sender)
    await _apply_membership(session, import_id, sender)
    for plan in plans:
        counts.tasks_created += await _create_member_tasks(session, dialect, import_id, sender, plan)
    counts.tasks_cancelled = await _cancel_tasks_of_terminated(session, import_id, sender)
    return counts


async def _drop_unchanged(session: AsyncSession, sender: str) -> int:
    s, m, on = _member_join()
    same = exists().where(on, m.c.sender == sender, m.c.row_hash == s.c.row_hash, m.c.status == s.c.status)
    return (await session.execute(s.delete().where(same))).rowcount  # type: ignore[attr-defined,no-any-return]


async def _analyze(conn: Any, table: str) -> None:
    """Fresh planner statistics: temp tables are never auto-analyzed, and autovacuum has not seen
    rows this transaction wrote, so joins would be planned for empty tables."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"ANALYZE {table}"))


async def _resolve_patients(session: AsyncSession, dialect: str) -> None:
    """Same patient as ADT: identifier (system + value) -> patient, following A40 merges; unknown
    identifiers get a new patient, one per identifier even when several rows carry it."""
    s, pi, p = STAGING, PatientIdentifier.__table__, Patient.__table__
    link = (
        update(s)
        .values(patient_id=pi.c.patient_id)
        .where(pi.c.system == s.c.identifier_system, pi.c.value == s.c.identifier_value, s.c.patient_id.is_(None))
    )
    await session.execute(link)
    representatives = (
        select(func.min(s.c.line)).where(s.c.patient_id.is_(None)).group_by(s.c.identifier_system, s.c.identifier_value)
    )
    await session.execute(
        update(s).values(patient_id=new_uuid(dialect), new_patient=True).where(s.c.line.in_(representatives))
    )
    now = literal(utcnow(), UTCDateTime())
    new_rows = s.c.new_patient.is_(True)
    await session.execute(
        insert(p).from_select(
            ["id", "family_name", "given_name", "birth_date", "sex", "deceased", "created_at", "updated_at"],
            select(s.c.patient_id, s.c.family, s.c.given, s.c.birth_date, s.c.sex, false(), now, now).where(new_rows),
        )
    )
    await session.execute(
        insert(pi).from_select(
            ["patient_id", "system", "value", "type_code"],
            select(s.c.patient_id, s.c.identifier_system, s.c.identifier_value, literal("MR")).where(new_rows),
        )
    )
    await session.execute(link)  # rows sharing a just-created identifier
    for _ in range(MERGE_HOPS):
        moved = await session.execute(
            update(s)
            .values(patient_id=p.c.merged_into_id)
            .where(p.c.id == s.c.patient_id, p.c.merged_into_id.is_not(None))
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            break


def _member_join() -> tuple[Table, Table, ColumnElement[bool]]:
    return STAGING, RosterMember.__table__, RosterMember.__table__.c.member_id == STAGING.c.member_id


def _change_insert(columns: dict[str, Any], query_from: Any, where: ColumnElement[bool]) -> Any:
    query = select(*columns.values()).select_from(query_from).where(where)
    return insert(RosterChange).from_select(list(columns), query)


async def _report_adds(session: AsyncSession, import_id: uuid.UUID, sender: str, as_of: date) -> int:
    s, m, on = _member_join()
    joined = s.outerjoin(m, and_(on, m.c.sender == sender))
    cols = _change_cols(import_id, sender, ChangeKind.ADD, func.coalesce(s.c.enrollment_start, as_of))
    where = and_(s.c.status == MemberStatus.ACTIVE, or_(m.c.id.is_(None), m.c.status == MemberStatus.TERMINATED))
    return (await session.execute(_change_insert(cols, joined, where))).rowcount  # type: ignore[attr-defined]


async def _report_changes(session: AsyncSession, import_id: uuid.UUID, sender: str, as_of: date) -> int:
    s, m, on = _member_join()
    joined = s.join(m, and_(on, m.c.sender == sender))
    changed: ColumnElement[str] = literal("")
    for field in COMPARED_FIELDS:
        changed = changed + case((s.c[field].is_distinct_from(m.c[field]), literal(field + ",")), else_=literal(""))
    cols = _change_cols(import_id, sender, ChangeKind.CHANGE, literal(as_of, Date()))
    cols["fields"] = func.rtrim(changed, ",")
    cols["previous_pcp_npi"] = m.c.pcp_npi
    cols["previous_practice"] = m.c.practice
    where = and_(s.c.status == MemberStatus.ACTIVE, m.c.status == MemberStatus.ACTIVE, s.c.row_hash != m.c.row_hash)
    return (await session.execute(_change_insert(cols, joined, where))).rowcount  # type: ignore[attr-defined]


async def _report_terms_in_file(session: AsyncSession, import_id: uuid.UUID, sender: str) -> int:
    """Members the file itself ends (enrollment_end before the roster's date); effective date of a
    termination: the member's last enrolled day."""
    s, m, on = _member_join()
    cols = _change_cols(import_id, sender, ChangeKind.TERM, s.c.enrollment_end)
    where = and_(s.c.status == MemberStatus.TERMINATED, m.c.status == MemberStatus.ACTIVE, m.c.sender == sender)
    return (await session.execute(_change_insert(cols, s.join(m, on), where))).rowcount  # type: ignore[attr-defined,no-any-return]


def _absent(sender: str) -> ColumnElement[bool]:
    _, m, on = _member_join()
    return and_(m.c.sender == sender, m.c.status == MemberStatus.ACTIVE, ~exists().where(on))


async def _report_absent(session: AsyncSession, import_id: uuid.UUID, sender: str, as_of: date) -> int:
    """Active members missing from a full roster: enrolled through the day before its date."""
    m = RosterMember.__table__
    cols = {
        "import_id": literal(import_id, Uuid()),
        "sender": literal(sender),
        "member_id": m.c.member_id,
        "patient_id": m.c.patient_id,
        "kind": literal(ChangeKind.TERM.value),
        "fields": literal(""),
        "previous_pcp_npi": m.c.pcp_npi,
        "previous_practice": m.c.practice,
        "effective_date": literal(absent_member_end(as_of), Date()),
    }
    return (await session.execute(_change_insert(cols, m, _absent(sender)))).rowcount  # type: ignore[attr-defined,no-any-return]


async def _terminate_absent(session: AsyncSession, import_id: uuid.UUID, sender: str, as_of: date) -> None:
    m = RosterMember.__table__
    end = absent_member_end(as_of)
    await session.execute(
        update(m)
        .values(
            status=MemberStatus.TERMINATED.value,
            enrollment_end=case(
                (or_(m.c.enrollment_end.is_(None), m.c.enrollment_end > end), literal(end, Date())),
                else_=m.c.enrollment_end,
            ),
            last_import_id=literal(import_id, Uuid()),
            updated_at=literal(utcnow(), UTCDateTime()),
        )
        .where(_absent(sender))
    )


def _change_cols(import_id: uuid.UUID, sender: str, kind: ChangeKind, effective: Any) -> dict[str, Any]:
    s = STAGING
    return {
        "import_id": literal(import_id, Uuid()),
        "sender": literal(sender),
        "member_id": s.c.member_id,
        "patient_id": s.c.patient_id,
        "kind": literal(kind.value),
        "fields": literal(""),
        "previous_pcp_npi": null(),
        "previous_practice": null(),
        "effective_date": effective,
    }


async def _apply_membership(session: AsyncSession, import_id: uuid.UUID, sender: str) -> None:
    s, m, on = _member_join()
    now = literal(utcnow(), UTCDateTime())
    copied = {f: s.c[f] for f in FIELDS}
    await session.execute(
        update(m)
        .values(
            **copied,
            patient_id=s.c.patient_id,
            status=s.c.status,
            row_hash=s.c.row_hash,
            last_import_id=literal(import_id, Uuid()),
            updated_at=now,
        )
        .where(
            on,
            m.c.sender == sender,
            or_(s.c.row_hash != m.c.row_hash, s.c.status != m.c.status, s.c.patient_id != m.c.patient_id),
        )
    )
    new_members = select(
        literal(sender),
        *copied.values(),
        s.c.patient_id,
        s.c.status,
        s.c.row_hash,
        literal(import_id, Uuid()),
        now,
        now,
    ).where(~exists().where(on, m.c.sender == sender))
    await session.execute(
        insert(m).from_select(
            ["sender", *copied, "patient_id", "status", "row_hash", "last_import_id", "created_at", "updated_at"],
            new_members,
        )
    )


async def _create_member_tasks(
    session: AsyncSession, dialect: str, import_id: uuid.UUID, sender: str, plan: MemberTaskPlan
) -> int:
    s, c, t = STAGING, RosterChange.__table__, Task.__table__
    key_prefix = f"{plan.rule_id}|roster-add|{sender}|{import_id}|"
    # The routing matrix, population by population in its precedence (a roster BH program is the BH
    # population; under the pediatric age on the roster's date is pediatric; everyone is adult).
    member_of = {
        "pediatric": s.c.birth_date > plan.pediatric_born_after,
        "behavioral-health": s.c.bh_program.is_(True),
        "adult": true(),
    }
    role = case(*((member_of[population], literal(role)) for population, role in plan.routes))
    # Why that role, for the task's explanation: the population the roster row put the member in.
    route_basis = case(
        *(
            (member_of[population], literal(_member_route_basis(population, role), JSON()))
            for population, role in plan.routes
        ),
        else_=null(),
    )
    now = literal(utcnow(), UTCDateTime())
    added = (
        select(
            new_uuid(dialect),
            literal(key_prefix) + c.c.member_id,
            literal(plan.type),
            literal(INITIAL_STATUS),
            literal(plan.priority),
            role,
            s.c.practice,
            c.c.patient_id,
            literal(plan.due_at, UTCDateTime()),
            literal(plan.due_basis, JSON()),
            literal(plan.rule_id),
            literal(plan.rule_version),
            route_basis,
            literal([str(import_id)], JSON()),
            literal(1),
            now,
            now,
        )
        .select_from(c.join(s, s.c.member_id == c.c.member_id))
        .where(c.c.import_id == import_id, c.c.kind == ChangeKind.ADD.value)
    )
    columns = [
        "id",
        "dedupe_key",
        "type",
        "status",
        "priority",
        "role",
        "team",
        "patient_id",
        "due_at",
        "due_basis",
        "rule_id",
        "rule_version",
        "route_basis",
        "triggering_event_ids",
        "version",
        "created_at",
        "updated_at",
    ]
    roles = (await session.execute(insert(t).from_select(columns, added).returning(t.c.role))).scalars().all()
    note_task_actions(session, (("created", plan.type, role) for role in roles))
    created = len(roles)
    if created:
        history = select(
            t.c.id,
            now,
            literal(f"rule:{plan.rule_id}@{plan.rule_version}"),
            literal("created"),
            null(),
            literal(INITIAL_STATUS),
            literal({"triggering_event_ids": [str(import_id)], "due_basis": plan.due_basis}, JSON()),
        ).where(t.c.dedupe_key.like(key_prefix + "%"))
        await session.execute(
            insert(TaskHistory.__table__).from_select(
                ["task_id", "at", "actor", "action", "from_status", "to_status", "detail"], history
            )
        )
    return created


def _member_route_basis(population: str, role: str) -> dict[str, str]:
    return {
        "population": population,
        "role": role,
        "team": "the member's practice on the roster",
        "reason": "roster member: BH program flag and age on the roster's date, in the routing precedence",
    }


async def _cancel_tasks_of_terminated(session: AsyncSession, import_id: uuid.UUID, sender: str) -> int:
    """Open tasks of members this import terminated, unless another roster still attributes them."""
    c, m, t = RosterChange.__table__, RosterMember.__table__, Task.__table__
    termed = select(c.c.patient_id).where(c.c.import_id == import_id, c.c.kind == ChangeKind.TERM.value)
    still_attributed = exists().where(m.c.patient_id == t.c.patient_id, m.c.status == MemberStatus.ACTIVE)
    return await cancel_tasks_where(
        session,
        and_(t.c.patient_id.in_(termed), ~still_attributed),
        reason=f"member disenrolled: terminated on the {sender} roster",
        actor=f"roster:{sender}",
        event_id=str(import_id),
    )


# ---- reading back ------------------------------------------------------------------------------


async def get_import(session: AsyncSession, import_id: uuid.UUID) -> RosterImport | None:
    return await session.get(RosterImport, import_id)


async def import_errors(session: AsyncSession, import_id: uuid.UUID, limit: int) -> list[RosterImportError]:
    query = (
        select(RosterImportError)
        .where(RosterImportError.import_id == import_id)
        .order_by(RosterImportError.line)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars().all())


async def import_changes(session: AsyncSession, import_id: uuid.UUID) -> Any:
    """The change report rows with the member's current values, streamed (it can be large)."""
    c, m = RosterChange, RosterMember
    query = (
        select(c, m)
        .join(m, and_(m.sender == c.sender, m.member_id == c.member_id))
        .where(c.import_id == import_id)
        .order_by(c.kind, c.member_id)
    )
    return await session.stream(query.execution_options(yield_per=5000))


async def change_summaries(session: AsyncSession, import_id: uuid.UUID) -> list[tuple[str, str, date, str]]:
    c = RosterChange
    query = (
        select(c.kind, c.member_id, c.effective_date, c.fields)
        .where(c.import_id == import_id)
        .order_by(c.kind, c.member_id)
    )
    return [tuple(r) for r in (await session.execute(query)).all()]  # type: ignore[misc]


async def last_completed_import(session: AsyncSession, sender: str, since: datetime) -> RosterImport | None:
    query = (
        select(RosterImport)
        .where(RosterImport.sender == sender, RosterImport.status == COMPLETED, RosterImport.received_at >= since)
        .order_by(RosterImport.received_at.desc())
        .limit(1)
    )
    return await session.scalar(query)
