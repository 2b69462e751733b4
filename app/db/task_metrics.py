"""Task counters (created, completed, escalated by type and role) and data-quality findings (by kind
and source) counted when the transaction that wrote them commits, never before: a rolled-back batch
that is then re-applied one record at a time must not count its tasks twice.

ORM writes are seen by a flush hook (every `TaskHistory` row added through the session); set-based
writes (the consumer's batch path, roster imports) report theirs with `note_task_actions`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.util import identity_key

from app.db.models import DataQualityFinding, Task, TaskHistory
from app.metrics import DATA_QUALITY_FINDINGS, TASKS_COMPLETED, TASKS_CREATED, TASKS_ESCALATED

_PENDING = "carecoord_task_metrics"
_PENDING_FINDINGS = "carecoord_finding_metrics"
_COUNTERS = {"created": TASKS_CREATED, "completed": TASKS_COMPLETED, "escalated": TASKS_ESCALATED}
UNKNOWN = "unknown"
COMPLETED = "completed"

TaskAction = tuple[str, str, str]  # (created | completed | escalated, task type, role)


def note_task_actions(session: AsyncSession | Session, actions: Iterable[TaskAction]) -> None:
    """Count these task actions if, and when, the session's transaction commits."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    pending: Counter[TaskAction] = sync.info.setdefault(_PENDING, Counter())
    pending.update(a for a in actions if a[0] in _COUNTERS)


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    actions: list[TaskAction] = []
    for obj in session.new:
        if isinstance(obj, TaskHistory) and (kind := _counted_as(obj)) is not None:
            task = session.identity_map.get(identity_key(Task, obj.task_id))
            actions.append((kind, *_type_and_role(task)))
        elif isinstance(obj, DataQualityFinding):
            findings: Counter[tuple[str, str]] = session.info.setdefault(_PENDING_FINDINGS, Counter())
            findings[(obj.kind, obj.source)] += 1
    if actions:
        note_task_actions(session, actions)


def _counted_as(history: TaskHistory) -> str | None:
    """History actions differ by writer (`complete` from the API, `completed` from rules): the status
    transition is what a completion is."""
    if history.action in ("created", "escalated"):
        return history.action
    if history.to_status == COMPLETED and history.from_status != COMPLETED:
        return COMPLETED
    return None


def _type_and_role(task: object) -> tuple[str, str]:
    if isinstance(task, Task):
        return task.type or UNKNOWN, task.role or UNKNOWN
    return UNKNOWN, UNKNOWN


def _after_commit(session: Session) -> None:
    pending: Counter[TaskAction] | None = session.info.pop(_PENDING, None)
    for (action, task_type, role), count in (pending or {}).items():
        _COUNTERS[action].labels(task_type, role).inc(count)
    findings: Counter[tuple[str, str]] | None = session.info.pop(_PENDING_FINDINGS, None)
    for (kind, source), count in (findings or {}).items():
        DATA_QUALITY_FINDINGS.labels(kind, source).inc(count)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_PENDING_FINDINGS, None)


def install() -> None:
    """Idempotent: listeners on the Session class cover every session the service opens."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
