"""Who may see which tasks and patients: the one place that scopes by role, team and 42 CFR Part 2.

Policy (docs/security.md):
- A facilitator sees the tasks of their roles whose team (the attributed practice) is one of their
  teams, plus the unassigned pool of their roles (tasks with no team: patients not yet attributed).
- A supervisor sees every role's tasks in their teams and the unassigned pool.
- A patient is in scope when the caller may see one of the patient's tasks or the patient is attributed
  (active roster membership) to one of the caller's teams.
- 42 CFR Part 2 records (tasks labelled `part2`, Part 2 encounters, substance-use screenings and the
  Observations / QuestionnaireResponses they came from) need both the Part 2 permission (`part2_roles`)
  and an active, in-period Part 2 consent of the record's patient (`consents`).
Every query that returns tasks or patients adds these conditions, so a hidden row is indistinguishable
from a missing one (404, left out of totals).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.auth import Principal, may_see_part2
from app.db.models import Consent, Encounter, FhirResource, Patient, RosterMember, ScreeningEvent, Task, utcnow
from app.screening.instruments import BY_ID
from app.settings import Settings

PART2_CONSENT_SCOPE = "part2"


def is_supervisor(principal: Principal, settings: Settings) -> bool:
    return principal.has_any_role(settings.supervisor_roles)


def has_active_consent(patient_id: Any, at: Any = None) -> ColumnElement[bool]:
    """An active Part 2 consent of `patient_id` (a column or value) whose period covers `at` (a value or
    bind parameter; default now)."""
    at = utcnow() if at is None else at
    return exists(
        select(Consent.id).where(
            Consent.patient_id == patient_id,
            Consent.scope == PART2_CONSENT_SCOPE,
            Consent.status == "active",
            Consent.period_start <= at,
            or_(Consent.period_end.is_(None), Consent.period_end > at),
        )
    )


def part2_condition(principal: Principal, settings: Settings, label: Any, patient_id: Any) -> ColumnElement[bool]:
    """True for rows the caller may see under Part 2: unlabelled rows, or labelled ones when the caller
    holds the permission and the patient consented. `label` is the row's Part 2 flag (column or condition)."""
    return part2_gate(may_see_part2(principal, settings), label, patient_id, utcnow())


def part2_gate(permitted: bool, label: Any, patient_id: Any, at: Any) -> ColumnElement[bool]:
    """`part2_condition` for a caller with or without the permission, consents in force at `at` (a
    value or a bind parameter)."""
    return or_(not_(label), has_active_consent(patient_id, at)) if permitted else not_(label)


def task_part2_label() -> ColumnElement[bool]:
    """A task is Part 2 when raised from Part 2 data (the label set at creation) or when its encounter
    is Part 2 now (an A08 adding an F10-F19 diagnosis or moving the stay to a Part 2 unit): the
    encounter's label is recomputed on every message and copied to its tasks by database triggers
    (migration 0016), so the gate reads the task row alone."""
    return or_(Task.part2, Task.encounter_part2)


def encounter_part2_condition(principal: Principal, settings: Settings) -> ColumnElement[bool]:
    return part2_condition(principal, settings, Encounter.part2, Encounter.patient_id)


def part2_instrument_codes(settings: Settings) -> frozenset[str]:
    """LOINC codes (panel, total, items) of the substance-use instruments: their Observations are Part 2."""
    codes: set[str] = set()
    for name in settings.part2_instruments:
        instrument = BY_ID.get(name)  # type: ignore[call-overload]
        if instrument is not None:
            codes.update((instrument.panel_code, instrument.total_code, *instrument.item_codes))
    return frozenset(codes)


def screening_part2_condition(principal: Principal, settings: Settings) -> ColumnElement[bool]:
    label = ScreeningEvent.instrument.in_(sorted(settings.part2_instruments))
    return part2_condition(principal, settings, label, ScreeningEvent.patient_id)


def fhir_resource_part2_condition(principal: Principal, settings: Settings) -> ColumnElement[bool]:
    """Stored Observations / QuestionnaireResponses: Part 2 when coded as a substance-use instrument or
    scored as one (a QuestionnaireResponse's instrument is known from its screening event)."""
    scored_sud = exists(
        select(ScreeningEvent.id).where(
            ScreeningEvent.source_id == FhirResource.id,
            ScreeningEvent.instrument.in_(sorted(settings.part2_instruments)),
        )
    )
    coded_sud = and_(FhirResource.code.is_not(None), FhirResource.code.in_(sorted(part2_instrument_codes(settings))))
    label = or_(coded_sud, scored_sud)  # never NULL: NOT NULL would hide an uncoded resource
    return part2_condition(principal, settings, label, FhirResource.patient_id)


def task_conditions(principal: Principal, settings: Settings, *, part2_gate: bool = True) -> list[ColumnElement[bool]]:
    """WHERE conditions limiting a `select(Task)` to the tasks the caller may see. `part2_gate=False`
    only for deciding whose consent a caller may record (the consent is what opens the gate)."""
    roles = None if is_supervisor(principal, settings) else sorted(principal.roles)
    part2 = task_part2_condition(may_see_part2(principal, settings), utcnow()) if part2_gate else true()
    return [*scope_conditions(roles, sorted(principal.teams)), part2]


def scope_conditions(roles: Sequence[Any] | None, teams: Sequence[Any]) -> list[ColumnElement[bool]]:
    """Tasks of `roles` (None: every role, a supervisor's) in `teams` or the unassigned pool; the items
    are values or bind parameters."""
    role = true() if roles is None else Task.role.in_(roles) if roles else false()
    team = or_(Task.team.is_(None), Task.team.in_(teams)) if teams else Task.team.is_(None)
    return [role, team]


def task_part2_condition(permitted: bool, at: Any) -> ColumnElement[bool]:
    return part2_gate(permitted, task_part2_label(), Task.patient_id, at)


def patient_condition(principal: Principal, settings: Settings, *, part2_gate: bool = True) -> ColumnElement[bool]:
    """WHERE condition limiting a `select(Patient)` to patients in the caller's scope."""
    visible = task_conditions(principal, settings, part2_gate=part2_gate)
    has_task = exists(select(Task.id).where(Task.patient_id == Patient.id, *visible))
    teams = sorted(principal.teams)
    if not teams:
        return has_task
    attributed = exists(
        select(RosterMember.id).where(
            RosterMember.patient_id == Patient.id,
            RosterMember.status == "active",
            RosterMember.practice.in_(teams),
        )
    )
    return or_(has_task, attributed)


def patient_id_condition(
    principal: Principal, settings: Settings, patient_id: uuid.UUID, *, part2_gate: bool = True
) -> ColumnElement[bool]:
    return and_(Patient.id == patient_id, patient_condition(principal, settings, part2_gate=part2_gate))


async def patient_in_scope(
    session: AsyncSession, principal: Principal, settings: Settings, patient_id: uuid.UUID, *, part2_gate: bool = True
) -> bool:
    query = select(Patient.id).where(patient_id_condition(principal, settings, patient_id, part2_gate=part2_gate))
    return (await session.execute(query)).first() is not None


def may_work_on(task: Task, principal: Principal, settings: Settings) -> bool:
    """Work on a task in scope (an attempt, a referral milestone) is for its owner, anyone while it is
    unowned, or a supervisor: the rule app/tasks/actions.decide applies to status moves."""
    return task.owner in (None, principal.subject) or is_supervisor(principal, settings)


MAX_SCOPE_BRANCHES = 64  # beyond this many (role, team) ranges one filtered scan is cheaper


def scope_ranges(
    principal: Principal, settings: Settings, *, roles: Sequence[str], teams: Sequence[str], unassigned_team: bool
) -> list[tuple[str, str | None]]:
    """The caller's task scope, narrowed by a request's role and team filters, as non-overlapping
    (role, team) ranges (team None: the unassigned pool): what app/state/worklists reads one index range
    each. Empty when the scope is not a small set of ranges (a supervisor without a role filter): query
    it as one.

    Non-empty ranges stand for the role and team conditions of both the scope and the filters: query
    them with the Part 2 gate and the other filters only. Repeating `role IN (...)` and
    `team IS NULL OR team IN (...)` beside them made PostgreSQL misjudge each range's size and sort it."""
    supervisor = is_supervisor(principal, settings)
    if supervisor and not roles:
        return []
    role_set = set(roles) if roles else set(principal.roles)
    if not supervisor:
        role_set &= principal.roles
    team_set: set[str | None] = set(principal.teams) | {None}
    if teams or unassigned_team:
        team_set &= {*teams, *([None] if unassigned_team else [])}
    if len(role_set) * len(team_set) > MAX_SCOPE_BRANCHES:
        return []
    return [
        (role, team) for role in sorted(role_set) for team in sorted(team_set, key=lambda t: (t is not None, t or ""))
    ]


def range_condition(role: Any, team: Any, pool: bool) -> ColumnElement[bool]:
    """One (role, team) range; `role` and `team` are values or bind parameters."""
    return and_(Task.role == role, Task.team.is_(None) if pool else Task.team == team)
