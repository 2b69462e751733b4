"""Which population a patient is in, and so which role and team a task goes to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from app.rules.config import RoutingSpec
from app.rules.facts import PatientFacts


@dataclass(frozen=True, slots=True)
class Route:
    role: str
    team: str | None
    population: str

    def basis(self) -> dict[str, str | None]:
        return {"population": self.population, "role": self.role, "team": self.team}


def populations(patient: PatientFacts, on: date, *, encounter_bh: bool, pediatric_under_age: int) -> set[str]:
    found = {"adult"}
    age = patient.age_on(on)
    if age is not None and age < pediatric_under_age:
        found.add("pediatric")
    if encounter_bh or patient.behavioral_health:
        found.add("behavioral-health")
    return found


def route(
    spec: RoutingSpec, task_type: str, patient: PatientFacts, on: date, *, encounter_bh: bool, fixed_role: str | None
) -> Route:
    """The first population in the configured precedence the patient belongs to; the role from the
    rule when it fixes one, else from the matrix; the team is the attributed practice."""
    member_of = populations(patient, on, encounter_bh=encounter_bh, pediatric_under_age=spec.pediatric_under_age)
    population = next(p for p in spec.precedence if p in member_of)
    role = fixed_role or spec.role_for(task_type, population)
    if role is None:  # the rules file validator makes every enabled rule routable
        raise ValueError(f"no role for task type {task_type!r}")
    return Route(role=role, team=patient.practice, population=population)
