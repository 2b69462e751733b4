"""Who may see which tasks and patients: the one place that scopes by role, team and 42 CFR Part 2.

Policy (docs/security.md):
- A facilitator sees the tasks of their roles whose team (the attributed practice) is one of their
  teams, plus the unassigned pool of their roles (tasks with no team: patients not yet attributed).
- A supervisor sees every role's tasks in their teams and the unassigned pool.
- A patient is in scope when the caller may see one of the patient's tasks or the patient is attributed
  (active roster membership) to one of the caller's teams.
- Part 2-labelled records need the Part 2 permission (`part2_roles`); consent is checked by
  `part2_visible` once consent records exist.
Every query that returns tasks or patients adds these conditions, so a hidden row is indistinguishable
from a missing one (404, left out of totals).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select, true

from app.api.auth import Principal, may_see_part2
from app.db.models import Encounter, Patient, RosterMember, Task
from app.settings import Settings


def is_supervisor(principal: Principal, settings: Settings) -> bool:
    return principal.has_any_role(settings.supervisor_roles)


def _team_condition(principal: Principal) -> ColumnElement[bool]:
    teams = sorted(principal.teams)
    return or_(Task.team.is_(None), Task.team.in_(teams)) if teams else Task.team.is_(None)


def _part2_task_condition(principal: Principal, settings: Settings) -> ColumnElement[bool]:
    """True for tasks the caller may see under Part 2: a task raised from a Part 2 encounter is hidden
    without the permission."""
    if may_see_part2(principal, settings):
        return true()
    # Same meaning as NOT EXISTS (a Part 2 encounter for the task), spelled as a per-row scalar lookup:
    # PostgreSQL then probes the encounter's primary key for the few rows a worklist page reads. As an
    # anti-join it misestimates (rows=1) when few tasks have encounters, and as EXISTS inside an OR it
    # hashes every Part 2 encounter; either makes a page cost 30-180 ms on 1,000,000 tasks instead of
    # ~2 ms (docs/worklists.md).
    encounter_part2 = select(Encounter.part2).where(Encounter.id == Task.encounter_id).scalar_subquery()
    return not_(func.coalesce(encounter_part2, false()))


def task_conditions(principal: Principal, settings: Settings) -> list[ColumnElement[bool]]:
    """WHERE conditions limiting a `select(Task)` to the tasks the caller may see."""
    roles = true() if is_supervisor(principal, settings) else Task.role.in_(sorted(principal.roles))
    if not principal.roles:
        roles = false()
    return [roles, _team_condition(principal), _part2_task_condition(principal, settings)]


def patient_condition(principal: Principal, settings: Settings) -> ColumnElement[bool]:
    """WHERE condition limiting a `select(Patient)` to patients in the caller's scope."""
    has_task = exists(select(Task.id).where(Task.patient_id == Patient.id, *task_conditions(principal, settings)))
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


def patient_id_condition(principal: Principal, settings: Settings, patient_id: uuid.UUID) -> ColumnElement[bool]:
    return and_(Patient.id == patient_id, patient_condition(principal, settings))


MAX_SCOPE_BRANCHES = 64  # beyond this many (role, team) ranges one filtered scan is cheaper


def scope_branches(
    principal: Principal, settings: Settings, *, roles: Sequence[str], teams: Sequence[str], unassigned_team: bool
) -> list[ColumnElement[bool]]:
    """The caller's task scope, narrowed by a request's role and team filters, as non-overlapping
    (role, team) ranges: what app/state/worklists.task_page reads one index range each. Empty when the
    scope is not a small set of ranges (a supervisor without a role filter): query it as one."""
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
        and_(Task.role == role, Task.team.is_(None) if team is None else Task.team == team)
        for role in sorted(role_set)
        for team in sorted(team_set, key=lambda t: (t is not None, t or ""))
    ]
