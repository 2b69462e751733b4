"""The care plan edit form as a care plan document (the REST body), pure so it is unit-tested.

Form fields are `title`, `status`, ... for the plan and `<section>-<row>-<field>` for the rows of
goals, activities, care team and patient actions. A row whose required text (description, or a team
member's name) is blank is dropped: that is how the form removes a row, and how its spare blank rows
add nothing. Ids, task links and goal links travel in the form so an edit keeps them; pydantic
(CarePlanIn) and the API's checks judge the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PLAN_FIELDS = ("status", "title", "description", "period_start", "period_end")
SECTIONS: dict[str, tuple[str, ...]] = {
    "goals": ("id", "description", "patient_stated", "target_date", "status", "achievement"),
    "activities": ("id", "description", "status", "task_id", "goal_ids"),
    "care_team": ("name", "role", "reference"),
    "patient_actions": ("id", "description", "frequency", "status", "goal_ids"),
}
REQUIRED = {"goals": "description", "activities": "description", "care_team": "name", "patient_actions": "description"}
LIST_FIELDS = frozenset({"goal_ids"})
BOOLEAN_FIELDS = frozenset({"patient_stated"})
MAX_ROW = 250  # more rows than a plan may hold (CarePlanIn allows 100 per section): the rest is ignored


def _row_value(name: str, value: str) -> Any:
    if name in LIST_FIELDS:
        return [part.strip() for part in value.split(",") if part.strip()]
    if name in BOOLEAN_FIELDS:
        return value.lower() in ("true", "yes", "on", "1")
    return value


def plan_document(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The CarePlanIn-shaped document the form describes (blank values left out, so defaults apply)."""
    document: dict[str, Any] = {}
    rows: dict[str, dict[int, dict[str, str]]] = {section: {} for section in SECTIONS}
    for key, raw in items:
        value = raw.strip()
        if key in PLAN_FIELDS:
            if value:
                document[key] = value
            continue
        section, _, rest = key.partition("-")
        index, _, name = rest.partition("-")
        if section not in SECTIONS or name not in SECTIONS[section] or not index.isdigit() or int(index) >= MAX_ROW:
            continue
        rows[section].setdefault(int(index), {})[name] = value
    for section, by_index in rows.items():
        document[section] = [
            {name: _row_value(name, value) for name, value in row.items() if value}
            for _, row in sorted(by_index.items())
            if row.get(REQUIRED[section])
        ]
    return document
